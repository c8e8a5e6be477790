"""Full-data observations and pointwise log-likelihood of a subsampled Pyro model.

A model written for minibatches, ``pyro.plate("data", N, subsample_size=B)``, shows only
``B`` observations per run, and Pyro insists that a conditioned subsample has exactly
``B`` indices. So the full data is visited in windows of ``B`` consecutive indices::

    [0, B), [B, 2B), ..., [N - B, N)

(the last window overlaps its neighbour when ``B`` does not divide ``N``; the overlap is
kept once). For a draw ``z`` and an observed site ``y`` in the plate, the pointwise
log-likelihood is the *unscaled* ``log p(y_i | z)`` of every ``i`` -- the plate's ``N / B``
scale belongs to the potential, not to the likelihood -- with the site's ``poutine.mask``
applied (masked observations count 0).

When the model can be traced into an ATen graph (as the kernels' potential is), that
graph is vectorised with :func:`torch.func.vmap` over a chunk of draws and over a chunk of
windows at once; each vectorised call covers at most ``chunk_size`` (draw, observation)
pairs, so memory is bounded by ``chunk_size`` times what the model keeps per observation,
whatever the number of draws and ``N``. A model that cannot be traced or vectorised is
evaluated one draw and one window at a time (slower, same numbers).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyro.distributions as dist
import torch
from pyro import poutine

from ..core.checks import check_int
from ..core.errors import ModelError, SamplerWarning
from ..core.subsample import SubsamplePlate, windows
from . import graph as graphs
from .potential import is_latent, subsampled_plates, trace_model

__all__ = ["FullData", "ObservedSite", "DEFAULT_CHUNK_SIZE", "windows"]

DEFAULT_CHUNK_SIZE = 100_000
"""Default number of (draw, observation) pairs evaluated in one vectorised call."""


@dataclass(frozen=True)
class ObservedSite:
    """An observed sample site and the subsampled plate (if any) it lies in.

    ``dim`` is the plate's dimension in the site's ``log_prob`` (negative, counted from
    the right of the batch shape); ``event_dim`` is the site's event dimension.

    Example::

        >>> from pyro_csg.adapter.likelihood import ObservedSite
        >>> ObservedSite("obs", plate=None, dim=None, event_dim=0).in_plate
        False
    """

    name: str
    plate: SubsamplePlate | None
    dim: int | None
    event_dim: int
    is_factor: bool = False  # a pyro.factor in a data plate: likelihood, but no data

    @property
    def in_plate(self) -> bool:
        return self.plate is not None


def _along(dim: int, ndim: int, index) -> tuple:
    """An index tuple selecting ``index`` along the (negative) ``dim`` of an ``ndim`` array."""
    full = [slice(None)] * ndim
    full[ndim + dim] = index
    return tuple(full)


class FullData:
    """The observed data and pointwise log-likelihood of a model over all of its data.

    :param model: the Pyro model, as given to the kernel.
    :param tuple model_args: its positional arguments (as given to ``mcmc.run``).
    :param dict model_kwargs: its keyword arguments.
    :param bool vectorize: trace and vmap the log-likelihood (default True); False
        evaluates it one draw and one window at a time.

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro_csg.adapter.likelihood import FullData
        >>> y = torch.arange(10.0)
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y), subsample_size=4) as idx:
        ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
        >>> data = FullData(model, (y,), {})
        >>> data.observed_data({"mu": torch.zeros(1)})["obs"].tolist() == y.tolist()
        True
        >>> data.log_likelihood({"mu": torch.zeros(3)})["obs"].shape
        (3, 10)
    """

    def __init__(
        self, model: Callable, model_args: tuple, model_kwargs: dict, vectorize: bool = True
    ) -> None:
        self.model = model
        self.vectorize = bool(vectorize)
        self.model_args = tuple(model_args)
        self.model_kwargs = dict(model_kwargs)
        trace = trace_model(model, self.model_args, self.model_kwargs)
        self.plates = tuple(subsampled_plates(trace).values())
        self.latent_names = sorted(name for name, node in trace.nodes.items() if is_latent(node))
        # The draws (read back on the CPU) go where the model's latent values live.
        self.device = next(
            (
                trace.nodes[name]["value"].device
                for name in self.latent_names
                if isinstance(trace.nodes[name]["value"], torch.Tensor)
            ),
            None,
        )
        by_name = {plate.name: plate for plate in self.plates}
        self.sites: list[ObservedSite] = []
        for name, node in trace.nodes.items():
            if node["type"] != "sample" or not node["is_observed"]:
                continue
            if node["infer"].get("_deterministic"):
                continue  # pyro.deterministic: a recorded value, never data
            frames = [frame for frame in node["cond_indep_stack"] if frame.name in by_name]
            is_factor = _is_factor(node)
            if is_factor and not frames:
                continue  # pyro.factor outside the data plates: part of the prior
            if len(frames) > 1:
                raise ModelError(
                    f"observed site '{name}' lies in more than one subsampled plate "
                    f"({[frame.name for frame in frames]}); its full-data log-likelihood "
                    "is not supported. Give all but one of those plates subsample_size=None."
                )
            if frames and frames[0].dim is None:
                raise ModelError(
                    f"the subsampled plate '{frames[0].name}' has no batch dimension at site "
                    f"'{name}' (a sequential plate): use a vectorised plate (the default)."
                )
            plate = by_name[frames[0].name] if frames else None
            self.sites.append(
                ObservedSite(
                    name,
                    plate,
                    frames[0].dim if frames else None,
                    int(node["fn"].event_dim),
                    is_factor,
                )
            )
        self._outside_observations = sum(
            _num_observations(trace.nodes[site.name]) for site in self.sites if not site.in_plate
        )
        self._latent_shapes: dict[str, torch.Size] | None = None
        # Why the eager path is used (None while vectorised or not yet tried).
        self.vectorized_reason: str | None = None if vectorize else "vectorize=False"
        self._graph = None  # the traced log-likelihood, once it passed the check
        self._traced_for: tuple | None = None  # the flat layout it was traced with

    # -- one eager run -----------------------------------------------------------------------
    def _first_windows(self) -> dict[str, torch.Tensor]:
        return {plate.name: plate.window(0) for plate in self.plates}

    def _run(self, values: dict[str, torch.Tensor], indices: dict[str, torch.Tensor]):
        conditioned = poutine.condition(self.model, data={**values, **indices})
        with torch.no_grad():
            return poutine.trace(conditioned).get_trace(*self.model_args, **self.model_kwargs)

    @staticmethod
    def _pointwise(node) -> torch.Tensor:
        log_prob = node["fn"].log_prob(node["value"])
        mask = node["mask"]
        if mask is not None and mask is not True:
            mask = torch.as_tensor(mask, device=log_prob.device)
            log_prob = torch.where(
                mask, log_prob, torch.zeros((), dtype=log_prob.dtype, device=log_prob.device)
            )
        return log_prob

    def _sites_of(self, plate: SubsamplePlate | None) -> list[ObservedSite]:
        return [site for site in self.sites if site.plate == plate]

    # -- observed data -------------------------------------------------------------------------
    def observed_data(self, values: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Every observed site's full data (in index order), from runs at one draw ``values``."""
        result: dict[str, np.ndarray] = {}
        first = self._first_windows()
        trace = self._run(values, first)
        for site in self._sites_of(None):
            result[site.name] = trace.nodes[site.name]["value"].detach().cpu().numpy()
        for plate in self.plates:
            sites = [site for site in self._sites_of(plate) if not site.is_factor]
            if not sites:
                continue
            parts: dict[str, list[np.ndarray]] = {site.name: [] for site in sites}
            for start, keep in windows(plate):
                trace = self._run(values, {**first, plate.name: plate.window(start)})
                for site in sites:
                    value = trace.nodes[site.name]["value"].detach()
                    dim = site.dim - site.event_dim
                    parts[site.name].append(
                        value[_along(dim, value.dim(), slice(keep, None))].cpu().numpy()
                    )
            for site in sites:
                result[site.name] = np.concatenate(parts[site.name], axis=site.dim - site.event_dim)
        return result

    # -- pointwise log-likelihood --------------------------------------------------------------
    def log_likelihood(
        self, draws: dict[str, torch.Tensor], chunk_size: int | None = None
    ) -> dict[str, np.ndarray]:
        """Pointwise full-data log-likelihood, one array ``(num_draws, *data shape)`` per site.

        :param dict draws: constrained latent values, each shaped ``(num_draws, *site shape)``.
        :param int chunk_size: the most (draw, observation) pairs per vectorised call
            (default :data:`DEFAULT_CHUNK_SIZE`).
        """
        chunk_size = DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
        check_int("chunk_size", chunk_size, 1)
        names = sorted(draws)
        missing = [name for name in self.latent_names if name not in draws]
        if missing:
            raise ValueError(
                f"there are no draws of the latent site(s) {missing}, and the log-likelihood "
                "needs every latent site (MCMC's save_params= keeps only some): run without "
                "save_params, or pass log_likelihood=False to to_inference_data"
            )
        num_draws = int(draws[names[0]].shape[0]) if names else 0
        if num_draws == 0:
            raise ValueError("log_likelihood needs at least one draw")
        self._latent_shapes = {name: draws[name].shape[1:] for name in names}
        signature = tuple((name, tuple(shape)) for name, shape in self._latent_shapes.items())
        if self.vectorize and signature != self._traced_for:  # one graph per flat layout
            self._graph, self.vectorized_reason, self._traced_for = None, None, signature
        flat = torch.cat([draws[name].detach().reshape(num_draws, -1) for name in names], dim=1)
        if self.device is not None:
            flat = flat.to(self.device)
        out: dict[str, np.ndarray] = {}
        evaluate = self._vectorized_or_eager(flat)
        first = self._first_windows()
        # Sites outside every subsampled plate: one run per draw, all plates at window 0.
        if self._sites_of(None):
            # Each draw evaluates every observation outside the subsampled plates at once.
            per_draw = max(1, self._outside_observations)
            for lo, hi in _chunks(num_draws, max(1, chunk_size // per_draw)):
                values = evaluate(flat[lo:hi], first, None, [])
                for site in self._sites_of(None):
                    self._store(out, site, values[site.name], lo, hi, num_draws, [])
        for plate in self.plates:
            sites = self._sites_of(plate)
            if not sites:
                continue
            spans = windows(plate)
            per_call = max(1, min(len(spans), chunk_size // plate.subsample_size))
            draws_per_call = max(1, chunk_size // (per_call * plate.subsample_size))
            for lo, hi in _chunks(num_draws, draws_per_call):
                for wlo, whi in _chunks(len(spans), per_call):
                    group = spans[wlo:whi]
                    values = evaluate(flat[lo:hi], first, plate, group)
                    for site in sites:
                        self._store(out, site, values[site.name], lo, hi, num_draws, group)
        return out

    def _store(self, out, site, values, lo, hi, num_draws, group) -> None:
        """Write a ``(draws, windows, *log_prob shape)`` block into the full array."""
        values = values.detach().cpu().numpy()
        if not site.in_plate:
            if site.name not in out:
                out[site.name] = np.empty((num_draws, *values.shape[2:]), values.dtype)
            out[site.name][lo:hi] = values[:, 0]
            return
        if site.name not in out:
            shape = list(values.shape[2:])
            shape[len(shape) + site.dim] = site.plate.size
            out[site.name] = np.empty((num_draws, *shape), values.dtype)
        target = out[site.name]
        ndim = values.ndim - 2
        batch = site.plate.subsample_size
        for j, (start, keep) in enumerate(group):
            block = values[:, j]
            target[(slice(lo, hi), *_along(site.dim, ndim, slice(start + keep, start + batch)))] = (
                block[(slice(None), *_along(site.dim, ndim, slice(keep, None)))]
            )

    # -- evaluation strategies ---------------------------------------------------------------
    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        shapes = self._latent_shapes
        sizes = [math.prod(shape) for shape in shapes.values()]
        parts = flat.split_with_sizes(sizes)
        return {
            name: part.view(shape)
            for (name, shape), part in zip(shapes.items(), parts, strict=True)
        }

    def _site_log_probs(self, flat: torch.Tensor, *indices: torch.Tensor) -> tuple:
        trace = self._run(
            self._unflatten(flat),
            {plate.name: index for plate, index in zip(self.plates, indices, strict=True)},
        )
        return tuple(self._pointwise(trace.nodes[site.name]) for site in self.sites)

    def _eager(self, flat, first, plate, group) -> dict[str, torch.Tensor]:
        """One run per (draw, window): ``{site: (draws, windows, *log_prob shape)}``."""
        group = group or [(0, 0)]
        rows = []
        for theta in flat:
            row = []
            for start, _ in group:
                indices = dict(first)
                if plate is not None:
                    indices[plate.name] = plate.window(start)
                row.append(self._site_log_probs(theta, *indices.values()))
            rows.append(row)
        return {
            site.name: torch.stack([torch.stack([r[i] for r in row]) for row in rows])
            for i, site in enumerate(self.sites)
        }

    def _vectorized_or_eager(self, flat: torch.Tensor):
        """Trace and vmap the log-likelihood when that gives the eager numbers, else eager."""
        if self._graph is None and self.vectorized_reason is None:
            self.vectorized_reason = self._build_vectorized(flat)
            if self.vectorized_reason is not None:
                warnings.warn(
                    "pyro_csg: evaluating the full-data log-likelihood one draw and one "
                    f"minibatch at a time (slower): {self.vectorized_reason}",
                    SamplerWarning,
                    stacklevel=4,
                )
        return self._eager if self._graph is None else self._vectorized

    def _build_vectorized(self, flat: torch.Tensor) -> str | None:
        first = self._first_windows()
        try:
            graph = graphs.trace(self._site_log_probs, flat[0], *first.values())
        except Exception as error:  # noqa: BLE001 -- any tracing failure means: stay eager
            first_line = (str(error).splitlines() or [""])[0]
            return f"tracing the model failed ({type(error).__name__}: {first_line})"
        self._graph = graph  # so that _vectorized can run for the check below
        try:
            probe = flat[: min(2, len(flat))]
            for plate in (None, *self.plates):
                group = windows(plate)[-2:] if plate is not None else []
                got = self._vectorized(probe, first, plate, group)
                want = self._eager(probe, first, plate, group)
                for name in want:
                    if not torch.allclose(got[name], want[name], rtol=1e-5, atol=1e-5):
                        raise ValueError("the traced log-likelihood differs from the eager one")
        except Exception as error:  # noqa: BLE001
            self._graph = None
            first_line = (str(error).splitlines() or [""])[0]
            return f"vectorising the model failed ({type(error).__name__}: {first_line})"
        return None

    def _vectorized(self, flat, first, plate, group) -> dict[str, torch.Tensor]:
        """One vectorised call over draws and windows: same layout as :meth:`_eager`."""
        names = [plate_.name for plate_ in self.plates]
        if not names:
            # No subsampled plate: nothing to map over but the draws (one "window").
            with torch.no_grad():
                values = torch.func.vmap(self._graph)(flat)
            return {
                site.name: value.unsqueeze(1)
                for site, value in zip(self.sites, values, strict=True)
            }
        if plate is None:
            # One "window": every plate at its first window, batched as a window axis of 1.
            index_args = [index.unsqueeze(0) for index in first.values()]
            window_dims = [0] * len(names)
        else:
            starts = torch.tensor([start for start, _ in group], device=plate.device)
            window = starts[:, None] + torch.arange(plate.subsample_size, device=plate.device)
            index_args = [window if name == plate.name else first[name] for name in names]
            window_dims = [0 if name == plate.name else None for name in names]
        over_windows = torch.func.vmap(self._graph, in_dims=(None, *window_dims))
        over_draws = torch.func.vmap(over_windows, in_dims=(0, *[None] * len(names)))
        with torch.no_grad():
            values = over_draws(flat, *index_args)
        return {site.name: value for site, value in zip(self.sites, values, strict=True)}


def _is_factor(node) -> bool:
    """A ``pyro.factor`` site (an observed ``Unit`` marked auxiliary)."""
    return bool(node["infer"].get("is_auxiliary")) and isinstance(node["fn"], dist.Unit)


def _num_observations(node) -> int:
    """The number of pointwise log-likelihood terms of an observed site."""
    event_size = math.prod(node["fn"].event_shape)
    return max(1, node["value"].numel() // max(1, event_size))


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, total, size):
        yield lo, min(lo + size, total)
