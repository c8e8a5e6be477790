"""The minibatch potential energy of a Pyro model: the one hot spot of the sampler.

With ``theta`` the latent sites mapped to unconstrained space and ``z = T^{-1}(theta)``
their constrained values, the full-data potential is (as in Pyro's HMC)::

    U(theta) = -log p(z) - sum_{i=1}^{N} log p(y_i | z) - log |det J_{T^{-1}}(theta)|

Conditioning each subsampled plate on a batch ``b`` of ``B`` indices gives Pyro's scaled
trace, whose log joint is the unbiased minibatch estimate::

    U~(theta; b) = -log p(z) - (N / B) * sum_{i in b} log p(y_i | z) - log |det J|

The parameters travel as one flat vector ``theta`` (the sites' unconstrained values
concatenated in sorted site order), so that every update is a few whole-vector ops.

:class:`ModelPotential` builds ``U~`` from a model once and then, by default, traces
``(theta, batch indices) -> (U~, grad U~)`` -- the model's forward pass and its backward
pass -- into one ATen graph with :func:`torch.fx.experimental.proxy_tensor.make_fx`.
Pyro's effect handlers then run once, at set-up, instead of at every step. Tracing refuses
data-dependent Python control flow (it raises), and the traced graph is checked against
the eager potential at two points before it is used; a model that fails either check runs
the eager potential instead, with a warning that says why.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import SubsampleMessenger, _Subsample
from torch.distributions import biject_to
from torch.distributions.transforms import Transform

from ..core.errors import ModelError, SamplerWarning
from ..core.parameters import BasePotential, LatentSite
from ..core.subsample import SubsamplePlate
from . import graph as graphs
from .full_data import full_value_and_grad

__all__ = ["ModelPotential", "trace_model", "subsampled_plates", "is_latent", "widened"]


def trace_model(model, args, kwargs, init_strategy=None):
    if init_strategy is not None:
        model = InitMessenger(init_strategy)(model)
    tracer = poutine.trace(model)
    try:
        with poutine.block():
            return tracer.get_trace(*args, **kwargs)
    except (ZeroDivisionError, ValueError) as error:
        # Pyro divides by subsample_size, or finds len(indices) != subsample_size: name the
        # plate and the valid range instead.
        for name, node in tracer.msngr.trace.nodes.items():
            fn = node["fn"] if node["type"] == "sample" else None
            if isinstance(fn, _Subsample) and fn.subsample_size is not None:
                if not 0 < fn.subsample_size <= fn.size:
                    raise ModelError(
                        f"plate '{name}' has subsample_size={fn.subsample_size}: give a "
                        f"minibatch size from 1 to its size {fn.size} (or None for all "
                        "the data)"
                    ) from error
        raise
    except Exception as error:
        # A PyroModule's PyroSample weight first read inside the data plate gets the
        # plate's batch dimension, and the model then fails with a shape error.
        local = _local_latents(tracer.msngr.trace, subsampled_plates(tracer.msngr.trace))
        if local:
            error.add_note(_local_latent_message(*local[0]))
        raise


def subsampled_plates(trace) -> dict[str, SubsamplePlate]:
    plates: dict[str, SubsamplePlate] = {}
    for name, node in trace.nodes.items():
        if node["type"] == "sample" and isinstance(node["fn"], _Subsample):
            fn = node["fn"]
            if fn.subsample_size is not None and fn.subsample_size < fn.size:
                device = _data_device(trace, name, node["value"].device)
                plates[name] = SubsamplePlate(name, int(fn.size), int(fn.subsample_size), device)
    return plates


FULL_PLATE_WARNING = 5_000
"""A data plate of this many rows or more, read whole at every step, gets a warning."""


def _warn_full_data_plates(trace, subsampled: dict) -> None:
    """Warn about large data plates without ``subsample_size``: a NUTS habit that makes
    every step read all the rows, and passes silently otherwise."""
    seen = set()
    for node in trace.nodes.values():
        if node["type"] != "sample" or not node["is_observed"]:
            continue
        for frame in node["cond_indep_stack"]:
            size = frame.full_size or frame.size
            if frame.name in subsampled or frame.name in seen or size < FULL_PLATE_WARNING:
                continue
            seen.add(frame.name)
            batch = max(100, size // 100)
            warnings.warn(
                f"plate '{frame.name}' has {size:,} rows and no subsample_size, so every "
                "step reads all of them (an exact gradient; the kernels' minibatches are "
                f"not used). pyro.plate('{frame.name}', {size}, subsample_size={batch}) "
                f"would read {batch} rows a step ({batch / size:.1%} of the data); keep "
                "the full plate only if a step over all the data is what you want.",
                SamplerWarning,
                stacklevel=5,
            )


def _data_device(trace, plate: str, default: torch.device) -> torch.device:
    """Where the plate's indices should live: with the data observed in it.

    Pyro makes a plate's indices on the CPU unless the plate has ``device=``; a model
    whose data sits on a GPU then indexes it with CPU indices, a host-to-device copy at
    every step. The kernels hand the plate indices on the observed data's device instead.
    """
    for node in trace.nodes.values():
        if node["type"] == "sample" and node["is_observed"]:
            if any(frame.name == plate for frame in node["cond_indep_stack"]):
                value = node["value"]
                if isinstance(value, torch.Tensor):
                    return value.device
    return default


def is_latent(node) -> bool:
    return (
        node["type"] == "sample"
        and not node["is_observed"]
        and not isinstance(node["fn"], _Subsample)
    )


def _local_latents(trace, plates) -> list[tuple[str, SubsamplePlate]]:
    """Latent sites sampled inside a subsampled plate, each with (one of) its plates."""
    local = []
    for name, node in trace.nodes.items():
        if is_latent(node):
            inside = [frame.name for frame in node["cond_indep_stack"] if frame.name in plates]
            if inside:
                local.append((name, plates[inside[0]]))
    return local


def _local_latent_message(name: str, plate: SubsamplePlate) -> str:
    message = (
        f"sample site '{name}' is a latent variable inside the subsampled plate "
        f"'{plate.name}' (size={plate.size}, subsample_size={plate.subsample_size}). "
        "A minibatch potential sees only a few of such local latents at each step, so "
        "they cannot be sampled: move the site out of the plate, marginalise it out, or "
        "give that plate subsample_size=None."
    )
    if "." in name:
        message += (
            f" If '{name}' is a PyroSample attribute of a PyroModule, it was first read "
            "inside the plate: read it once before entering the plate (e.g. "
            f"`self.{name}` at the top of forward), so that it is sampled as a global."
        )
    return message


def _unconstraining_transform(name: str, support) -> Transform:
    """``biject_to(support).inv``; a mixture's support is its components' support."""
    try:
        return biject_to(support).inv
    except NotImplementedError:
        # torch >= 2.6 wraps MixtureSameFamily's support in a constraint that biject_to
        # does not register; the values live in the components' support all the same.
        base = getattr(support, "base_constraint", None)
        if base is not None:
            return _unconstraining_transform(name, base)
        raise ModelError(
            f"sample site '{name}' has support {support}, which torch cannot map to "
            "unconstrained space: pass transforms={'" + name + "': <Transform>} to the kernel"
        ) from None


def _data_tensors(model, args: tuple, kwargs: dict) -> list[tuple[str, torch.Tensor]]:
    """The model's tensor arguments (its data, one level into lists and tuples), named."""
    try:
        bound = inspect.signature(model).bind_partial(*args, **kwargs).arguments
    except (TypeError, ValueError):  # no signature, or one the arguments do not fit
        bound = {**{f"argument {i}": value for i, value in enumerate(args)}, **kwargs}
    return [
        (name, value)
        for name, values in bound.items()
        for value in (values if isinstance(values, (list, tuple)) else [values])
        if isinstance(value, torch.Tensor)
    ]


def _check_finite_data(model, args: tuple, kwargs: dict) -> None:
    """Refuse NaN or infinite values in the model's floating-point arguments (its data):
    they make the potential NaN, and the failure would surface later, blaming the step.
    Refuse tensors without values (the ``meta`` device) too."""
    for name, value in _data_tensors(model, args, kwargs):
        if value.device.type == "meta":
            raise ModelError(
                f"the model's argument '{name}' is on the 'meta' device, which holds "
                "shapes but no values: the kernels need the data itself. Move it to "
                "'cpu' or 'cuda' (tensor.to('cpu') after loading it)."
            )
        # A finite sum means every value is finite (a NaN or an infinity would carry into
        # it); only a sum that is not (a bad value, or an overflow) looks element by
        # element: at N = 1e7 rows of 10 features 0.02 s instead of 0.65 s.
        if value.is_floating_point() and not torch.isfinite(value.sum()):
            bad = ~torch.isfinite(value)
            if bad.any():
                first = [int(i) for i in bad.nonzero()[0]]
                raise ModelError(
                    f"the model's argument '{name}' has {int(bad.sum())} NaN or infinite "
                    f"value(s) (the first at index {first}): the potential would be NaN. "
                    "Drop or fill those rows; for missing observations, fill them and "
                    "mask them out of the likelihood (poutine.mask or obs_mask=)."
                )


def _fixed_subsamples(trace) -> list[tuple[str, int, int]]:
    """Plates given ``subsample=`` (fixed indices): ``(name, size, len(subsample))``."""
    fixed = []
    for name, node in trace.nodes.items():
        if node["type"] == "sample" and isinstance(node["fn"], _Subsample):
            fn, value = node["fn"], node["value"]
            if fn.subsample_size is None and value is not None and len(value) < fn.size:
                fixed.append((name, int(fn.size), len(value)))
    return fixed


def _find_plates_and_latents(trace, transforms):
    for name, size, length in _fixed_subsamples(trace):
        raise ModelError(
            f"plate '{name}' is given subsample= ({length} fixed indices of {size}): Pyro "
            f"scales its sites by {size} / {length} but the kernels cannot feed it "
            "minibatches, so the sampler would fit those rows alone, weighted as if they "
            f"were all the data. Declare pyro.plate('{name}', {size}, "
            f"subsample_size={length}) (the kernels then feed it a new batch every step), "
            "or drop subsample= to use all the data."
        )
    plates = subsampled_plates(trace)
    local = _local_latents(trace, plates)
    if local:
        raise ModelError(_local_latent_message(*local[0]))

    sites = []
    for name, node in trace.nodes.items():
        if not is_latent(node):
            continue
        fn = node["fn"]
        if fn.support.is_discrete or getattr(fn, "has_enumerate_support", False):
            raise ModelError(
                f"sample site '{name}' is a discrete latent variable (support {fn.support}). "
                "Stochastic-gradient MCMC moves continuous latents only: marginalise it out "
                "(e.g. with a mixture distribution), or observe it."
            )
        value = node["value"]
        if not value.is_floating_point():
            raise ModelError(f"sample site '{name}' has a non-floating-point value ({value.dtype})")
        if name in transforms:
            transform = transforms[name]
        else:
            transform = _unconstraining_transform(name, fn.support)
        try:
            unconstrained_shape = transform(value.detach()).shape
        except Exception as error:  # noqa: BLE001 -- say which site's transform failed
            raise ModelError(
                f"sample site '{name}': its transform to unconstrained space "
                f"({type(transform).__name__}) fails on a draw of its prior: {error}"
            ) from error
        sites.append(LatentSite(name, value.shape, transform, value.dtype, unconstrained_shape))
    if not sites:
        raise ModelError(
            "the model has no latent sample site: every sample site is observed, so there is "
            "nothing to sample. Check that the latent sites are not given obs=..."
        )
    sites.sort(key=lambda site: site.name)
    return tuple(plates.values()), sites


_NOTHING = nullcontext()


def _no_grad_for(records: bool, *inputs: torch.Tensor):
    """``torch.no_grad()`` where autograd would record a traced graph's call (``records``:
    a constant of the graph needs a gradient; or an input does), else a context that does
    nothing: entering ``no_grad`` costs about 8 µs, as much as several of a small model's
    ops, and the hot loop's points and the data never need a gradient."""
    if torch.is_grad_enabled() and (records or any(x.requires_grad for x in inputs)):
        return torch.no_grad()
    return _NOTHING


def _records(forward, *example) -> bool:
    """Whether a call of ``forward`` on inputs that need no gradient still records one
    (a constant of the graph, such as data the user made with ``requires_grad``, does)."""
    try:
        with torch.enable_grad():
            outputs = forward(*(x.detach() for x in example))
    except Exception:  # noqa: BLE001 -- cannot tell: keep no_grad, as before
        return True
    return any(isinstance(x, torch.Tensor) and x.requires_grad for x in outputs)


class ModelPotential(BasePotential):
    """The minibatch potential ``U~(theta; indices)`` of a Pyro model.

    :param model: the Pyro model.
    :param tuple model_args: its positional arguments (as given to ``mcmc.run``).
    :param dict model_kwargs: its keyword arguments.
    :param init_strategy: a Pyro ``init_to_*`` strategy, for the set-up trace.
    :param dict transforms: optional per-site transforms (constrained to unconstrained);
        sites not named get ``biject_to(site.support).inv``.

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide.initialization import init_to_median
        >>> from pyro_csg.adapter.potential import ModelPotential
        >>> y = torch.randn(100)
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y), subsample_size=10) as idx:
        ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
        >>> potential = ModelPotential(model, (y,), {}, init_to_median)
        >>> [plate.name for plate in potential.plates]
        ['data']
        >>> energy, grad = potential.value_and_grad(torch.zeros(1), [torch.arange(10)])
        >>> grad.shape
        torch.Size([1])
    """

    def __init__(self, model, model_args, model_kwargs, init_strategy, transforms=None) -> None:
        self.model = model
        self.model_args = tuple(model_args)
        self.model_kwargs = dict(model_kwargs)
        self.init_strategy = init_strategy
        _check_finite_data(model, self.model_args, self.model_kwargs)
        # A plain prior trace finds the structure: an init strategy may choke on the very
        # sites (discrete, local) that deserve a clear error of ours.
        trace = trace_model(model, self.model_args, self.model_kwargs)
        self.plates, sites = _find_plates_and_latents(trace, transforms or {})
        _warn_full_data_plates(trace, {plate.name for plate in self.plates})
        params = [name for name, node in trace.nodes.items() if node["type"] == "param"]
        if params:
            warnings.warn(
                f"the model's pyro.param site(s) {params} will stay fixed at their current "
                "values: the kernels sample pyro.sample sites only. To sample one, give it a "
                "prior with pyro.sample; to fit it, use SVI.",
                SamplerWarning,
                stacklevel=4,
            )
        super().__init__(sites)
        self.transforms = {site.name: site.transform for site in self.sites}
        self._graph = None
        self._forward = None  # the graph's forward, or torch.compile's build of it
        self._paired = None  # the graph vmapped over two points; False: it did not build
        self._lean_graph = None  # the gradient alone (graphs.lean), where that is safe
        self._records = True  # whether the graph's calls need no_grad (_records)
        self._lean = None  # its forward
        self._lean_paired = None  # as _paired, for the gradient alone
        self.backend: str | None = None  # "graph" or "inductor", once compiled
        self.windows_vectorise: bool | None = None  # set by the first full-data pass
        # Data-parallel (split_batches): this rank's plates, of B / R indices each.
        self.share = None
        self.local_plates = self.plates
        self.narrow: ModelPotential | None = None  # the model's own batches (widened)

    def split_batches(self, share) -> None:
        """Evaluate this rank's share of every global batch (a data-parallel chain).

        ``share`` is a :class:`~pyro_csg.services.distributed.RankShare` of ``R`` ranks. Each
        plate's ``subsample_size`` ``B`` stays the global batch (:attr:`plates`, which the
        batches are drawn from); this rank's potential sees ``B / R`` of its indices, with
        the likelihood scaled by ``N / (B / R)``, and :meth:`value_and_grad` returns the
        ranks' mean: the global batch's ``U~``.
        """
        for plate in self.plates:
            if plate.subsample_size % share.world_size:
                raise ModelError(
                    f"plate '{plate.name}' has subsample_size={plate.subsample_size}, which "
                    f"the {share.world_size} data-parallel ranks cannot share equally: "
                    f"use a multiple of {share.world_size} (subsample_size is the global "
                    "batch; each rank takes subsample_size / world_size of it)"
                )
        self.share = share
        self.local_plates = tuple(
            replace(plate, subsample_size=plate.subsample_size // share.world_size)
            for plate in self.plates
        )

    def widened(self, batch: int, theta: torch.Tensor | None = None) -> ModelPotential | None:
        """:func:`widened`: this potential on batches of ``batch`` indices."""
        return widened(self, batch, theta)

    # -- eager -----------------------------------------------------------------------------
    def __call__(
        self, flat: torch.Tensor, indices: Sequence[torch.Tensor] = (), keep_from: int = 0
    ) -> torch.Tensor:
        """``U~(theta; indices)``, differentiable, by tracing the model (slow path).

        ``keep_from > 0`` masks the first ``keep_from`` positions of the window of the
        model's one subsampled plate out of every site inside it (the overlap of a
        full-data walk's last window; ``keep_from = B`` leaves the prior and Jacobian).
        """
        unconstrained = self.unflatten(flat)
        data = {}
        log_jacobian = 0.0
        for site in self.sites:
            value = unconstrained[site.name]
            if site.is_identity:
                data[site.name] = value
            else:
                constrained = site.transform.inv(value)
                data[site.name] = constrained
                log_jacobian = (
                    log_jacobian + site.transform.log_abs_det_jacobian(constrained, value).sum()
                )
        for plate, index in zip(self.plates, indices, strict=True):
            data[plate.name] = index
        conditioned = poutine.condition(self.model, data=data)
        if keep_from:
            (plate,) = self.local_plates
            conditioned = _DropFirst(plate.name, keep_from, plate.subsample_size)(conditioned)
        with _any_batch_size([p.name for p in self.plates] if self.share or self.narrow else []):
            trace = poutine.trace(conditioned).get_trace(*self.model_args, **self.model_kwargs)
        return -(trace.log_prob_sum() - log_jacobian)

    def constrain(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The constrained site values ``z = T^{-1}(theta)``."""
        return {
            site.name: site.transform.inv(value)
            for site, value in zip(self.sites, self.unflatten(flat).values(), strict=True)
        }

    # -- initialisation --------------------------------------------------------------------
    def initial_theta(self, max_tries: int = 100) -> torch.Tensor:
        """A flat unconstrained start from ``init_strategy`` with finite ``U~`` and gradient.

        Tries up to ``max_tries`` draws of the strategy (each with its own minibatch).
        """
        for _ in range(max_tries):
            trace = trace_model(self.model, self.model_args, self.model_kwargs, self.init_strategy)
            flat = torch.cat(
                [
                    site.transform(trace.nodes[site.name]["value"].detach()).reshape(-1)
                    for site in self.sites
                ]
            )
            indices = [trace.nodes[plate.name]["value"] for plate in self.plates]
            energy, grad = self.eager_value_and_grad(flat, indices)
            if torch.isfinite(energy) and torch.isfinite(grad).all():
                return flat.detach()
        raise ModelError(
            f"could not find initial parameters with a finite potential energy and gradient "
            f"in {max_tries} tries of init_strategy={getattr(self.init_strategy, '__name__', '')}"
            ". Check the model's priors and likelihood, or pass initial_params to MCMC."
        )

    # -- compiled --------------------------------------------------------------------------
    def compile(self, theta: torch.Tensor, backend: str = "graph") -> str | None:
        """Trace ``(theta, indices) -> (U~, grad)`` into one ATen graph.

        ``backend="inductor"`` then builds the graph with :func:`torch.compile` (fused
        kernels, no per-op dispatch; it takes tens of seconds once, and needs a C++
        compiler on the CPU or Triton on a GPU). If that build fails or disagrees with
        Pyro's evaluation, the plain graph is kept and the reason returned.

        Returns ``None`` on success, else the reason the eager path (or, with
        ``"inductor"``, the plain graph) is used.
        """
        try:
            indices = [_probe_indices(plate, 0) for plate in self.local_plates]

            def energy_and_grad(flat, *indices):
                return self.eager_value_and_grad(flat, indices)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graph = graphs.simplify(graphs.trace(energy_and_grad, theta.detach(), *indices))
        except Exception as error:  # noqa: BLE001 -- any tracing failure means: stay eager
            first_line = (str(error).splitlines() or [""])[0]
            return f"tracing the model failed ({type(error).__name__}: {first_line})"
        reason = self._check_graph(graph, theta)
        if reason is not None:
            return reason
        self._graph, self._forward = graph, graphs.fast_forward(graph, theta.detach(), *indices)
        self._records = _records(self._forward, theta, *indices)
        reason = self._check_graph(self._forward, theta)
        if reason is not None:  # pragma: no cover - the same ops: it agrees
            self._forward = graph.forward
        self.compiled, self.backend = True, "graph"
        if backend != "inductor":  # a fused build pays little for the potential's ops
            self._build_lean(graph, theta)
        if backend == "inductor":
            try:
                built = torch.compile(graph.forward, fullgraph=True, dynamic=False)
                reason = self._check_graph(built, theta, fused=True)
            except Exception as error:  # noqa: BLE001 -- any build failure: the plain graph
                first_line = (str(error).splitlines() or [""])[0]
                reason = f"torch.compile failed ({type(error).__name__}: {first_line})"
            if reason is not None:
                return f"inductor: {reason}; the traced graph is used"
            self._forward, self.backend = built, "inductor"
        return None

    def _build_lean(self, graph, theta: torch.Tensor) -> None:
        """The gradient-only graph (:func:`~pyro_csg.adapter.graph.lean`), kept where it
        gives the full graph's gradient bit for bit at the two probes."""
        data = [value for _, value in _data_tensors(self.model, self.model_args, self.model_kwargs)]
        lean_graph = graphs.lean(graph, finite=data)  # the data were checked at __init__
        if lean_graph is None:
            return
        probes = _probes(theta, self.local_plates)
        forward = graphs.fast_forward(lean_graph, probes[0][0].detach(), *probes[0][1])
        for point, indices in probes:
            if not torch.equal(forward(point, *indices)[0], self._forward(point, *indices)[1]):
                return
        self._lean_graph, self._lean = lean_graph, forward

    def _check_graph(self, graph, theta: torch.Tensor, fused: bool = False) -> str | None:
        """``None`` if ``graph`` agrees with Pyro's evaluation at two probes, else why not.

        The traced graph runs Pyro's own ops, so it must agree element by element. A
        ``fused`` build (torch.compile) sums in another order: on a 294,000-parameter
        ResNet its gradient differed by 2e-5 of its norm, so there the whole vectors are
        compared, to 1e-3 of their norm (a model that depends on hidden state is off by
        order 1).
        """
        for point, indices in _probes(theta, self.local_plates):
            with pyro.validation_enabled(False):
                expected = self.eager_value_and_grad(point, indices)
            with torch.no_grad():
                got = graph(point, *indices)
            for name, want, have in zip(("potential", "gradient"), expected, got, strict=True):
                if fused:
                    error = float((have - want).double().norm())
                    size = float(want.double().norm())
                    if not error <= 1e-3 * size + 1e-5:  # also False for NaN
                        return (
                            f"the compiled {name} differs from Pyro's by {error:.3g} "
                            f"(norm {size:.3g})"
                        )
                    continue
                scale = want.abs().max() if want.numel() else 0.0
                if not torch.allclose(
                    have, want, rtol=1e-4, atol=1e-5 * float(scale) + 1e-6, equal_nan=True
                ):
                    return (
                        f"the traced {name} differs from the eager one (the model is stochastic "
                        "or depends on state that tracing fixes)"
                    )
        return None

    def value_and_grad(
        self, flat: torch.Tensor, indices: Sequence[torch.Tensor] = ()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U~, grad U~)`` on a batch of every plate; data-parallel, the ranks' mean
        over their shares of it (one ``all_reduce``)."""
        if self.share is None:
            return self.local_value_and_grad(flat, indices)
        return self.share.mean(*self.local_value_and_grad(flat, self.share.take(indices)))

    def local_value_and_grad(
        self, flat: torch.Tensor, indices: Sequence[torch.Tensor] = ()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U~, grad U~)`` on this rank's indices (batches of :attr:`local_plates`)."""
        if self._forward is None:
            return self.eager_value_and_grad(flat, indices)
        with _no_grad_for(self._records, flat):
            # forward() itself: nn.Module.__call__'s hook machinery costs a few µs a step.
            return self._forward(flat, *indices)

    def paired_value_and_grad(
        self, flat: torch.Tensor, other: torch.Tensor, indices: Sequence[torch.Tensor] = ()
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """``(U~, grad U~)`` at ``flat`` and at ``other`` on the same batches: what a
        control-variate step needs. Where the graph is traced (and not data-parallel),
        one call of a graph traced through :func:`torch.func.vmap` over the two points
        (140 us against 189 us for two calls, logistic regression, B = 100: a small
        model's step is op dispatch, not arithmetic), and data-parallel one
        ``all_reduce`` for both; else two calls."""
        local = indices if self.share is None else self.share.take(indices)
        if self._paired is None and self._forward is not None:
            inductor = self.backend == "inductor"
            self._paired = graphs.paired(self._graph, flat, other, local, inductor) or False
        if not self._paired:
            return self.value_and_grad(flat, indices), self.value_and_grad(other, indices)
        with _no_grad_for(self._records, flat, other):
            energy, grad, energy_other, grad_other = self._paired(flat, other, *local)
        if self.share is not None:
            energies, grads = self.share.mean(
                torch.stack((energy, energy_other)), torch.stack((grad, grad_other))
            )
            return (energies[0], grads[0]), (energies[1], grads[1])
        return (energy, grad), (energy_other, grad_other)

    @property
    def lean(self) -> bool:
        """Whether :meth:`lean_value_and_grad` can run (:func:`~pyro_csg.adapter.graph.lean`
        trimmed the traced graph; not data-parallel)."""
        return self._lean is not None and self.share is None

    def lean_value_and_grad(
        self, flat: torch.Tensor, indices: Sequence[torch.Tensor] = ()
    ) -> tuple[None, torch.Tensor]:
        """``(None, grad U~)``: the gradient of :meth:`value_and_grad`, bit for bit,
        without ``U~`` (about half the ops of a small model). Only where :attr:`lean`."""
        with _no_grad_for(self._records, flat):
            return None, self._lean(flat, *indices)[0]

    def paired_lean_value_and_grad(
        self, flat: torch.Tensor, other: torch.Tensor, indices: Sequence[torch.Tensor] = ()
    ) -> tuple[tuple[None, torch.Tensor], tuple[None, torch.Tensor]]:
        """:meth:`paired_value_and_grad` without ``U~``: ``((None, grad U~), (None, the
        same at other))``. Only where :attr:`lean`."""
        if self._lean_paired is None:
            self._lean_paired = graphs.paired(self._lean_graph, flat, other, indices) or False
        if not self._lean_paired:
            return self.lean_value_and_grad(flat, indices), self.lean_value_and_grad(other, indices)
        with _no_grad_for(self._records, flat, other):
            grad, grad_other = self._lean_paired(flat, other, *indices)
        return (None, grad), (None, grad_other)

    @property
    def traced(self) -> bool:
        """Whether the potential runs as a traced graph (which :meth:`vectorised` needs)."""
        return self._graph is not None

    @property
    def deterministic(self) -> bool:
        """Without a subsampled plate the model's potential is the exact full-data one."""
        return not self.plates

    def full_value_and_grad(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The full-data ``(U, grad U)`` of a model with one subsampled plate
        (:func:`pyro_csg.adapter.full_data.full_value_and_grad`)."""
        return full_value_and_grad(self, flat)

    def vectorised(
        self, flat: torch.Tensor, windows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``U~`` and its gradient at one ``theta`` for each row of ``windows`` (a
        ``(K, B)`` tensor of indices of the one subsampled plate), in one vmapped call of
        the traced graph; shapes ``(K,)`` and ``(K, D)``."""
        with torch.no_grad():
            return torch.func.vmap(self._graph.forward, in_dims=(None, 0))(flat, windows)

    def __getstate__(self):
        # A traced graph holds references to the data and does not pickle: it is rebuilt.
        return {**self.__dict__, **_UNTRACED}


_UNTRACED = {
    "_graph": None, "_forward": None, "_paired": None,
    "_lean_graph": None, "_lean": None, "_lean_paired": None,
    "backend": None, "compiled": False, "windows_vectorise": None, "_records": True,
}  # fmt: skip
"""What a :class:`ModelPotential` holds before :meth:`~ModelPotential.compile`: what
pickling drops and a widened potential builds again."""


def widened(
    potential: ModelPotential, batch: int, theta: torch.Tensor | None = None
) -> ModelPotential | None:
    """``potential`` on batches of ``batch`` indices of its one subsampled plate, the
    likelihood scaled by ``N / batch`` (the plate's ``subsample_size`` as the model
    declares it is the batch of ``potential.narrow``, or of ``potential`` itself). It
    shares the model and the data; where ``theta`` is given and ``potential`` was
    compiled, it is traced again there with the same backend. ``None`` where it cannot
    be: several subsampled plates, a data-parallel chain, or a graph that no longer
    builds (the chain then keeps its batches).

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide.initialization import init_to_median
        >>> from pyro_csg.adapter.potential import ModelPotential
        >>> y = torch.arange(10.0)
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y), subsample_size=2) as idx:
        ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
        >>> wide = ModelPotential(model, (y,), {}, init_to_median).widened(10)
        >>> wide.plates[0].subsample_size
        10
        >>> wide.value_and_grad(torch.zeros(1), [torch.arange(10)])[1]  # all the data
        tensor([-45.])
    """
    narrow = potential.narrow or potential
    if len(narrow.plates) != 1 or narrow.share is not None:
        return None
    if batch == narrow.plates[0].subsample_size:
        return narrow
    wide = copy.copy(narrow)
    wide.narrow = narrow
    wide.plates = wide.local_plates = (replace(narrow.plates[0], subsample_size=int(batch)),)
    wide.__dict__.update(_UNTRACED)  # traced again below, at its own batch
    if theta is not None and narrow.compiled:
        if wide.compile(theta, narrow.backend) is not None and not wide.compiled:
            return None
    return wide


@contextmanager
def _any_batch_size(names: Sequence[str]):
    """Let the plates ``names`` take a conditioned subsample of any length.

    Pyro requires ``len(subsample) == subsample_size``; a data-parallel rank feeds the
    plate its ``B / R`` share of the global batch. With ``subsample_size`` left to Pyro to
    infer from the subsample, the plate scales its sites by ``N / (B / R)``. Patched only
    while this potential traces the model.
    """
    if not names:
        yield
        return
    original = SubsampleMessenger._subsample

    def subsample(name, size=None, subsample_size=None, subsample=None, *args, **kwargs):
        if name in names:
            subsample_size = None
        return original(name, size, subsample_size, subsample, *args, **kwargs)

    SubsampleMessenger._subsample = staticmethod(subsample)
    try:
        yield
    finally:
        SubsampleMessenger._subsample = staticmethod(original)


class _DropFirst(Messenger):
    """Masks the first ``keep_from`` positions of plate ``name`` out of the sites in it."""

    def __init__(self, name: str, keep_from: int, subsample_size: int) -> None:
        super().__init__()
        self.name = name
        self.keep = torch.arange(subsample_size) >= keep_from

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or isinstance(msg["fn"], _Subsample):
            return
        for frame in msg["cond_indep_stack"]:
            if frame.name == self.name:
                value = msg["value"]
                device = value.device if isinstance(value, torch.Tensor) else self.keep.device
                keep = self.keep.to(device).reshape((-1,) + (1,) * (-frame.dim - 1))
                msg["mask"] = keep if msg["mask"] is None else msg["mask"] & keep
                return


def _probes(theta: torch.Tensor, plates) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """Two deterministic probes of a compiled potential (no RNG use, so compiling does not
    change the draws): the start itself, and a nearby point with other minibatch indices."""
    bump = 0.01 * ((torch.arange(theta.numel(), device=theta.device) % 7) - 3)
    points = (theta, theta + bump.to(theta.dtype))
    return [
        (point, [_probe_indices(plate, which) for plate in plates])
        for which, point in enumerate(points)
    ]


def _probe_indices(plate: SubsamplePlate, which: int) -> torch.Tensor:
    start = 0 if which == 0 else max(plate.size - plate.subsample_size, 0)
    return plate.window(start)
