"""ArviZ ``InferenceData`` from a cyclical run, and diagnostics across cycles.

:func:`to_inference_data` replaces ``az.from_pyro`` for the cyclical kernels: the observed
data and the pointwise log-likelihood cover the *full* data (``az.from_pyro`` would take
one random minibatch for both, and ``az.loo`` would be silently wrong), the sampler
statistics carry each draw's cycle, iteration and step size, and ``group_by="cycle"``
turns every cycle into an ArviZ chain so that R-hat compares cycles.

:func:`cycle_summary` tabulates each cycle's draws and the between-cycle R-hat.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyro
import torch

from ..adapter.kernels import CyclicalKernel
from ..adapter.likelihood import FullData
from ..core.errors import SamplerWarning
from ..core.runaway import diverging_draws, runaway_cycles
from ..core.version import __version__
from ..services.checkpoint import data_digest
from ..services.store import STATS, read_store
from .arviz_lines import arviz, build, group, group_names, set_group
from .cycles import complete_cycles, cycle_layout, regroup, scalar_elements
from .modes import group_cycles

__all__ = ["to_inference_data", "merge_runs", "cycle_summary", "ess_per_cycle"]


def _check_run(mcmc) -> Any:

    kernel = getattr(mcmc, "kernel", None)
    if type(mcmc).__name__ == "StreamingMCMC":
        folder = getattr(getattr(kernel, "checkpoint", None), "directory", None)
        raise TypeError(
            "a StreamingMCMC run keeps no draws in memory, only their statistics: give the "
            "kernel checkpoint='<folder>' and convert the folder, "
            + (
                f"to_inference_data({str(folder)!r}, "
                if folder
                else "to_inference_data('<folder>', "
            )
            + "model=model, model_args=(...))"
        )
    if not isinstance(kernel, CyclicalKernel):
        raise TypeError(
            "to_inference_data expects a pyro.infer.MCMC run with a CyclicalSGLD or "
            f"CyclicalSGHMC kernel, got {type(mcmc).__name__}"
            + (f" with kernel {type(kernel).__name__}" if kernel is not None else "")
            + ". For other kernels use arviz.from_pyro."
        )
    if getattr(mcmc, "_samples", None) is None:
        raise ValueError("the MCMC has no draws yet: call mcmc.run(...) first")
    if kernel._run_complete is False:
        raise ValueError(
            "the last mcmc.run(...) stopped before its end, so this MCMC holds the draws of "
            "an earlier run next to the arguments (data) of the failed one, which do not "
            "belong together. Run it again to the end; the failed run's own draws are in "
            "kernel.get_samples() (and, with checkpoint=, in its folder)."
        )
    return kernel


def _per_chain_stats(mcmc) -> dict[str, np.ndarray]:
    # MCMC keeps each chain's kernel.diagnostics(); mcmc.diagnostics() would also compute
    # R-hat and ESS of every parameter, which is not needed here.
    per_chain = getattr(mcmc, "_diagnostics", None)
    if per_chain is None:  # pragma: no cover - other MCMC runners
        everything = mcmc.diagnostics()
        per_chain = [
            {key: everything[key][f"chain {i}"] for key in STATS} for i in range(mcmc.num_chains)
        ]
    return {key: np.stack([np.asarray(chain[key]) for chain in per_chain]) for key in STATS}


def _attrs(hyperparameters: dict[str, Any], group_by: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "inference_library": "pyro",
        # str(): torch's version is a str subclass that netCDF writers cannot store.
        "inference_library_version": str(pyro.__version__),
        "pyro_csg_version": str(__version__),
        "torch_version": str(torch.__version__),
        "group_by": group_by,
    }
    for key, value in hyperparameters.items():
        # netCDF has no booleans: flags are stored as "True" / "False".
        if isinstance(value, bool):
            value = str(value)
        elif isinstance(value, list):
            value = [str(v) if isinstance(v, bool) else v for v in value]
        attrs[key] = value
    return attrs


class _RunData(NamedTuple):
    """What a conversion needs, from an MCMC run or from a run folder."""

    posterior: dict[str, np.ndarray]  # constrained draws, (chain, draw, ...)
    stats: dict[str, np.ndarray]  # STATS, (chain, draw)
    diverging: np.ndarray  # (chain, draw): the draws of cycles that ran away
    attrs: dict[str, Any]  # the kernel's hyperparameters
    model: Callable | None
    args: tuple
    kwargs: dict
    identity: dict[str, Any]  # what runs must share to be merged: sampler, sites, data


def _identity(hyperparameters: dict, posterior: dict, data: str | None) -> dict[str, Any]:
    return {
        **{key: value for key, value in hyperparameters.items() if key in _FIXED},
        "sites": {name: list(value.shape[2:]) for name, value in sorted(posterior.items())},
        "data": data,
    }


# The kernel's constructor settings (per-chain results such as tuned_step_size excluded).
_FIXED = (
    "sampler",
    "step_size",
    "steps_per_cycle",
    "exploration_fraction",
    "samples_per_cycle",
    "temperature",
    "schedule",
    "control_variates",
    "preconditioner",
    "optimize_start",
    "friction",
    "step_scale",
)


def _from_mcmc(mcmc) -> _RunData:
    kernel = _check_run(mcmc)
    samples = mcmc.get_samples(group_by_chain=True)
    posterior = {name: value.detach().cpu().numpy() for name, value in samples.items()}
    stats = _per_chain_stats(mcmc)
    diverging = np.zeros(stats["cycle"].shape, dtype=bool)
    for chain, diagnostics in enumerate(getattr(mcmc, "_diagnostics", None) or []):
        diverging[chain, list(diagnostics.get("divergences", []))] = True
    hyperparameters = kernel.hyperparameters()
    return _RunData(
        posterior,
        stats,
        diverging,
        hyperparameters,
        kernel.model,
        tuple(mcmc._args),
        dict(mcmc._kwargs),
        _identity(hyperparameters, posterior, data_digest(tuple(mcmc._args), dict(mcmc._kwargs))),
    )


def _from_store(folder: Path, model, model_args, model_kwargs) -> _RunData:
    if model is not None and not callable(model):
        raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
    stored = read_store(folder)
    stats, manifest = stored["stats"], stored["manifest"]
    # The settings, and what the checks found on the chains that finished (their mark).
    hyperparameters = {**manifest["hyperparameters"], **stored.get("checks", {})}
    diverging = np.zeros(stats["cycle"].shape, dtype=bool)
    for chain in range(diverging.shape[0]):
        report = runaway_cycles(
            stats["cycle"][chain],
            stats["potential_energy"][chain],
            manifest.get("num_params", 1),
            hyperparameters["temperature"],
        )
        chain_stats = {key: stats[key][chain] for key in ("rejected", "backoffs")}
        diverging[chain, diverging_draws(chain_stats, report.draws)] = True
    return _RunData(
        stored["posterior"],
        stats,
        diverging,
        hyperparameters,
        model,
        tuple(model_args),
        dict(model_kwargs or {}),
        _identity(hyperparameters, stored["posterior"], manifest.get("settings", {}).get("data")),
    )


def _warn_non_finite(pointwise: dict[str, np.ndarray], stats, diverging: np.ndarray) -> None:
    """A NaN or infinite pointwise log-likelihood makes az.loo return nan: say where."""
    for name, values in pointwise.items():
        bad = ~np.isfinite(values.reshape(*values.shape[:2], -1)).all(axis=-1)
        if bad.any():
            cycles = sorted({int(c) for c in stats["cycle"][bad]})
            warnings.warn(
                f"pyro_csg: the log-likelihood of site '{name}' is NaN or infinite at "
                f"{int(bad.sum())} draw(s) (cycles {cycles}), so az.loo and az.waic would "
                "return nan: those draws are marked diverging. Look at them (a chain that ran "
                "away, or data outside the likelihood's support) before comparing models.",
                SamplerWarning,
                stacklevel=3,
            )
            diverging |= bad


def to_inference_data(
    mcmc,
    *,
    log_likelihood: bool | None = None,
    group_by: str = "chain",
    coords: dict[str, Sequence] | None = None,
    dims: dict[str, list[str]] | None = None,
    chunk_size: int | None = None,
    model: Callable | None = None,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
):
    """Convert a run of a cyclical kernel to ArviZ: a finished :class:`pyro.infer.MCMC`,
    or the folder a run with ``checkpoint=`` writes (finished, stopped early, or still
    running in another process).

    Groups:

    * ``posterior``: the constrained draws, dims ``(chain, draw, ...)``, with the
      coordinates ``cycle`` and ``iteration`` (0-based cycle and 1-based iteration of
      each draw).
    * ``sample_stats``: per draw ``lp`` (``-U~``, the log joint in unconstrained space
      *estimated on one minibatch*: compare it across draws, not with a full-data
      ``lp``), ``step_size``, ``cycle``, ``iteration``, ``noise_ratio`` (the minibatch
      gradient's noise against the injected noise at the draw's step, measured once a
      cycle; see ``CyclicalSGLD.diagnostics``), ``temperature`` and ``diverging``
      (the draws of cycles that sampled far above the chain's typical potential, see
      :func:`pyro_csg.core.runaway.runaway_cycles`, and those whose log-likelihood is not
      finite, with a warning).
    * ``observed_data``: every observed site's *full* data, found by running the model
      over all of its subsampled plates' indices, window by window.
    * ``log_likelihood``: the full-data pointwise ``log p(y_i | draw)`` of each observed
      site (unscaled, masks applied), computed in vectorised chunks of at most
      ``chunk_size`` (draw, observation) pairs, so that memory stays bounded for large
      ``N``. Skipped with ``log_likelihood=False``.
    * ``attrs`` (on every group): the sampler's class and hyperparameters and the
      pyro-csg, Pyro and torch versions, plus ``group_by``.

    With ``group_by="cycle"`` every (chain, cycle) pair becomes one ArviZ chain of
    ``samples_per_cycle`` draws, in the order chain 0's cycles, then chain 1's; the
    ``posterior``'s coordinates ``cycle`` and ``mcmc_chain`` say where each came from.
    ``az.rhat`` then compares cycles: well above 1.1 on a multimodal posterior means
    the cycles found different modes; on a unimodal one it means the cycles are too short
    to forget where they started. Cycles with fewer than ``samples_per_cycle`` draws (a
    ``warmup_steps`` or ``num_samples`` that is not a multiple of it) are left out with a
    warning.

    :param mcmc: a :class:`pyro.infer.MCMC` that has run with ``CyclicalSGLD`` or
        ``CyclicalSGHMC``, or the path of a run folder (``checkpoint=``). A folder gives
        the draws on disk so far, each chain cut to the shortest; its ``observed_data``
        and ``log_likelihood`` need ``model`` (and its arguments).
    :param bool log_likelihood: compute the ``log_likelihood`` group. Default: when the
        model is known (a run from a model, or a folder with ``model=``). True without a
        model raises.
    :param str group_by: ``"chain"`` (default) or ``"cycle"``.
    :param dict coords: ArviZ coordinates, ``{dim name: values}``.
    :param dict dims: ArviZ dims, ``{variable: [dim names]}`` (latent and observed sites).
    :param int chunk_size: the most (draw, observation) pairs per vectorised
        log-likelihood call (default 100,000).
    :param model: with a folder: the Pyro model of the run, for ``observed_data`` and
        ``log_likelihood``.
    :param tuple model_args: with a folder and ``model``: the arguments given to
        ``mcmc.run``.
    :param dict model_kwargs: with a folder and ``model``: the keyword arguments given to
        ``mcmc.run``.
    :returns: ``arviz.InferenceData``

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> from pyro_csg import CyclicalSGLD, to_inference_data
        >>> y = 1.0 + torch.randn(200)
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y), subsample_size=20) as idx:
        ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
        >>> kernel = CyclicalSGLD(model, steps_per_cycle=100)  # short cycles: a quick example
        >>> mcmc = MCMC(kernel, num_samples=3 * 4, warmup_steps=0, disable_progbar=True)
        >>> mcmc.run(y)
        >>> idata = to_inference_data(mcmc)
        >>> idata.observed_data["obs"].shape, idata.log_likelihood["obs"].shape
        ((200,), (1, 12, 200))
        >>> to_inference_data(mcmc, group_by="cycle").posterior["mu"].shape
        (3, 4)
    """
    if group_by not in ("chain", "cycle"):
        raise ValueError(f"group_by must be 'chain' or 'cycle', got {group_by!r}")
    run = _run_data(mcmc, model, model_args, model_kwargs)
    return _convert(run, log_likelihood, group_by, coords, dims, chunk_size)


def _run_data(mcmc, model, model_args, model_kwargs) -> _RunData:
    if isinstance(mcmc, (str, os.PathLike)):
        return _from_store(Path(mcmc), model, model_args, model_kwargs)
    if model is not None:
        raise ValueError("model= is for a run folder; an MCMC run knows its model")
    return _from_mcmc(mcmc)


def _convert(run: _RunData, log_likelihood, group_by, coords, dims, chunk_size):
    asked = log_likelihood is True
    if log_likelihood is None:
        log_likelihood = run.model is not None
    if log_likelihood and run.model is None:
        raise ValueError(
            "log_likelihood=True needs the model, but the run does not know it (a kernel "
            "built from potential_fn, or a run folder given without model= and "
            "model_args=): pass log_likelihood=False"
        )
    posterior, stats = run.posterior, run.stats
    num_chains, num_draws = stats["cycle"].shape
    for key in ("cycle", "iteration"):
        if not (stats[key] == stats[key][:1]).all():  # pragma: no cover - same layout
            raise ValueError(f"the chains disagree on the {key} of their draws")

    sample_stats = {
        "lp": -stats["potential_energy"],
        "step_size": stats["step_size"],
        "cycle": stats["cycle"],
        "iteration": stats["iteration"],
        "noise_ratio": stats["noise_ratio"],
        "backoffs": stats["backoffs"],
        "rejected": stats["rejected"],
        "temperature": np.full((num_chains, num_draws), run.attrs["temperature"]),
        "diverging": run.diverging,
    }
    observed = pointwise = None
    if run.model is not None:
        samples = {name: torch.as_tensor(value) for name, value in posterior.items()}
        full = FullData(run.model, run.args, run.kwargs)
        first = {name: value[0, 0] for name, value in samples.items()}
        observed = full.observed_data(first) or None
        if asked and not full.sites:
            raise ValueError(
                "log_likelihood=True, but the model observes nothing (no pyro.sample(..., "
                "obs=...) and no pyro.factor inside a subsampled data plate): there is no "
                "log-likelihood to compute. Pass log_likelihood=False."
            )
        if log_likelihood and full.sites:
            flat_draws = {
                name: value.reshape(num_chains * num_draws, *value.shape[2:])
                for name, value in samples.items()
            }
            pointwise = {
                name: value.reshape(num_chains, num_draws, *value.shape[1:])
                for name, value in full.log_likelihood(flat_draws, chunk_size).items()
            }
            _warn_non_finite(pointwise, stats, sample_stats["diverging"])

    cycle_of_draw, iteration_of_draw = stats["cycle"][0], stats["iteration"][0]
    if group_by == "cycle":
        per_cycle = int(run.attrs["samples_per_cycle"])
        keep, incomplete = complete_cycles(cycle_of_draw, per_cycle)
        if incomplete:
            warnings.warn(
                f"to_inference_data(group_by='cycle'): cycle(s) {incomplete} have fewer than "
                f"samples_per_cycle={per_cycle} draws and are left out. Use warmup_steps and "
                "num_samples that are multiples of samples_per_cycle.",
                SamplerWarning,
                stacklevel=2,
            )
        if keep.size == 0:
            raise ValueError("group_by='cycle': the run has no complete cycle")
        posterior = {k: regroup(v, keep, per_cycle) for k, v in posterior.items()}
        sample_stats = {k: regroup(v, keep, per_cycle) for k, v in sample_stats.items()}
        if pointwise is not None:
            pointwise = {k: regroup(v, keep, per_cycle) for k, v in pointwise.items()}
        cycles = cycle_of_draw[keep][::per_cycle]
        chain_coords = {
            "cycle": ("chain", np.tile(cycles, num_chains)),
            "mcmc_chain": ("chain", np.repeat(np.arange(num_chains), len(cycles))),
            "iteration": (("chain", "draw"), sample_stats["iteration"]),
        }
    else:
        chain_coords = {
            "cycle": ("draw", cycle_of_draw),
            "iteration": ("draw", iteration_of_draw),
        }

    attrs = _attrs(run.attrs, group_by)
    idata = build(
        {
            "posterior": posterior,
            "sample_stats": sample_stats,
            "log_likelihood": pointwise,
            "observed_data": observed,
        },
        coords=coords,
        dims=dims,
    )
    for name in group_names(idata):  # each group read and written back once
        dataset = group(idata, name)
        if name == "posterior":
            dataset = dataset.assign_coords(chain_coords)
        dataset.attrs.update(attrs)
        set_group(idata, name, dataset)
    return idata


def merge_runs(
    runs: Sequence,
    *,
    log_likelihood: bool | None = None,
    group_by: str = "chain",
    coords: dict[str, Sequence] | None = None,
    dims: dict[str, list[str]] | None = None,
    chunk_size: int | None = None,
    model: Callable | None = None,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
):
    """One ``InferenceData`` from independent runs of the same sampler on the same model
    and data: chains run in other processes, jobs or machines, diagnosed together.

    Each run is a finished :class:`pyro.infer.MCMC` or a run folder (``checkpoint=``);
    their chains become chains ``0, 1, ...`` in the order given. The runs must share the
    sampler and its settings, the latent sites and their shapes, and the data (its
    SHA-1, as a checkpoint records it); the per-chain results (``tuned_step_size``,
    ``noise_ratio``, ``start_steps``) are concatenated in the ``attrs``. Runs of
    different lengths are cut to the shortest, with a warning. The other arguments are
    those of :func:`to_inference_data`; the model (for ``observed_data`` and
    ``log_likelihood``) is the first MCMC run's, or ``model=`` when all runs are folders.

    Launch one chain per rank with ``torchrun`` and a folder per rank, then merge::

        # in the script, on each rank (process_group=False: independent chains):
        #   pyro.set_rng_seed(rank)
        #   kernel = CyclicalSGHMC(model, checkpoint=f"runs/rank{rank}", process_group=False)
        idata = merge_runs(["runs/rank0", "runs/rank1"], model=model, model_args=(x, y))

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> from pyro_csg import CyclicalSGLD, merge_runs
        >>> y = 1.0 + torch.randn(200)
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y), subsample_size=20) as idx:
        ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
        >>> runs = []
        >>> for seed in (0, 1):
        ...     pyro.set_rng_seed(seed)
        ...     kernel = CyclicalSGLD(model, steps_per_cycle=100)  # short cycles: a quick example
        ...     mcmc = MCMC(kernel, num_samples=8, warmup_steps=0, disable_progbar=True)
        ...     mcmc.run(y)
        ...     runs.append(mcmc)
        >>> idata = merge_runs(runs)
        >>> idata.posterior["mu"].shape, idata.log_likelihood["obs"].shape
        ((2, 8), (2, 8, 200))
    """
    if group_by not in ("chain", "cycle"):
        raise ValueError(f"group_by must be 'chain' or 'cycle', got {group_by!r}")
    if isinstance(runs, (str, os.PathLike)) or not isinstance(runs, Sequence) or not runs:
        raise TypeError(
            f"runs must be a non-empty list of MCMC runs and run folders, got {type(runs).__name__}"
        )
    parts = []
    for position, run in enumerate(runs):
        try:
            parts.append(
                _run_data(
                    run,
                    model if isinstance(run, (str, os.PathLike)) else None,
                    model_args,
                    model_kwargs,
                )
            )
        except (TypeError, ValueError) as error:
            error.add_note(f"pyro_csg.merge_runs: in runs[{position}] ({run!r})")
            raise
    return _convert(_merged(parts, runs), log_likelihood, group_by, coords, dims, chunk_size)


def _merged(parts: list[_RunData], runs: Sequence) -> _RunData:
    first = parts[0]
    for position, part in enumerate(parts[1:], start=1):
        for key in dict.fromkeys([*first.identity, *part.identity]):  # in order
            mine, theirs = first.identity.get(key), part.identity.get(key)
            if key == "data" and (mine is None or theirs is None):
                continue
            if mine != theirs:
                raise ValueError(
                    f"merge_runs: runs[{position}] ({runs[position]!r}) has {key} {theirs!r} "
                    f"but runs[0] has {mine!r}: only runs of the same sampler, settings, "
                    "model and data are chains of one posterior"
                )
    lengths = [part.stats["cycle"].shape[1] for part in parts]
    shortest = min(lengths)
    if len(set(lengths)) > 1:
        warnings.warn(
            f"merge_runs: the runs have {lengths} draws per chain; all are cut to the "
            f"shortest, {shortest}.",
            SamplerWarning,
            stacklevel=3,
        )
    for position, part in enumerate(parts[1:], start=1):
        for key in ("cycle", "iteration"):
            if not np.array_equal(part.stats[key][:, :shortest], first.stats[key][:, :shortest]):
                raise ValueError(
                    f"merge_runs: the draws of runs[{position}] ({runs[position]!r}) are at "
                    f"other {key}s than those of runs[0]: give the runs the same "
                    "warmup_steps"
                )

    def join(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([array[:, :shortest] for array in arrays], axis=0)

    attrs = dict(first.attrs)
    for key, value in first.attrs.items():
        if isinstance(value, list):  # per chain
            attrs[key] = [item for part in parts for item in part.attrs.get(key, [])]
    attrs["merged_runs"] = len(parts)
    model_part = next((part for part in parts if part.model is not None), first)
    return _RunData(
        {name: join([part.posterior[name] for part in parts]) for name in first.posterior},
        {key: join([part.stats[key] for part in parts]) for key in first.stats},
        join([part.diverging for part in parts]),
        attrs,
        model_part.model,
        model_part.args,
        model_part.kwargs,
        first.identity,
    )


def ess_per_cycle(draws: np.ndarray) -> float:
    """How many independent draws one cycle's draws are worth, from all the cycles.

    ``draws`` is ``(cycles, M)``: one variable element, one row per cycle. Every cycle
    runs the same schedule, so the draws at positions ``j`` and ``j + l`` of a cycle have
    the same correlation ``rho_l`` in every cycle, and the cycles are replicates from
    which to estimate it (a single cycle's handful of draws cannot: ArviZ's ESS of 4 to
    8 draws is the same number whatever they are). With the pooled mean ``m`` and
    variance ``s2``::

        rho_l = mean over cycles k and positions j of (x[k, j] - m) (x[k, j + l] - m) / s2
        ess   = M / (1 + 2 * sum_{l=1}^{M-1} (1 - l / M) * rho_l),   clipped to [1, M]

    ``M`` independent draws give ``M``; draws that all sit at the same value (the
    step size has shrunk too far to move, or the cycle is stuck in its own mode) give 1.

    Example::

        >>> import numpy as np
        >>> from pyro_csg.analysis.arviz import ess_per_cycle
        >>> rng = np.random.default_rng(0)
        >>> round(ess_per_cycle(rng.normal(size=(400, 4))))
        4
        >>> ess_per_cycle(np.repeat(rng.normal(size=(400, 1)), 4, axis=1))
        1.0
    """
    draws = np.asarray(draws, dtype=float)
    per_cycle = draws.shape[1]
    centred = draws - draws.mean()
    variance = float((centred**2).mean())
    if per_cycle == 1:
        return 1.0
    if variance == 0.0:
        return float("nan")
    total = 0.0
    for lag in range(1, per_cycle):
        rho = float((centred[:, :-lag] * centred[:, lag:]).mean()) / variance
        total += (1.0 - lag / per_cycle) * rho
    return float(np.clip(per_cycle / (1.0 + 2.0 * total), 1.0, per_cycle))


def cycle_summary(idata, var_names: Sequence[str] | None = None):
    """A per-cycle table of the draws, with the R-hat between cycles.

    One row per (variable element, chain, cycle) -- with one chain, per (variable,
    cycle) -- and the columns:

    * ``mean``, ``sd``: of the cycle's ``samples_per_cycle`` draws;
    * ``ess``: the effective number of independent draws in a cycle, estimated across
      all the cycles by :func:`ess_per_cycle` (the same for every cycle of a variable
      element; between 1 and ``samples_per_cycle``);
    * ``r_hat_between``: ArviZ's R-hat with every cycle as a chain, the same for all the
      rows of a variable element (NaN with fewer than 4 draws per cycle);
    * ``noise_ratio``: the largest ``sample_stats["noise_ratio"]`` of the cycle's draws
      (its first kept draw's, the largest step): the minibatch gradient's noise against
      the injected noise; above about 1 the minibatch noise, not the sampler, sets the
      draws' spread (NaN when the InferenceData has no such statistic).

    How to read it. Start with ``alarm``. Without it the cycles sample one mode: pool
    their draws, whatever ``r_hat_between`` says. ``r_hat_between`` compares the spread
    of the cycle means with the spread within cycles, and exceeds 1.1 both when the
    cycles sit in different modes and when a cycle's draws are correlated (notebook 1's
    sound run: median 1.5); ``ess`` close to 1 says the latter -- the late steps of a
    cycle are small and move little -- so the cycle is one draw, not
    ``samples_per_cycle``; keep fewer draws per cycle or lengthen the sampling stage.
    With ``alarm``, the cycles found different modes: :func:`pyro_csg.mode_census` says
    how many and which cycles sit in which. ArviZ's R-hat is noisy with few draws per
    chain: even for independent draws it exceeds 1.1 one time in ten with 30 cycles of 4
    draws.

    :param idata: from :func:`to_inference_data`, either ``group_by``: an
        ``arviz.InferenceData`` (ArviZ 0.x), an ``xarray.DataTree`` (ArviZ 1.x), or the
        posterior alone as an ``xarray.Dataset`` with a ``cycle`` coordinate.
    :param var_names: the posterior variables to include (default: all).
    :returns: ``pandas.DataFrame`` indexed by ``(variable, chain, cycle)``.

    Example::

        >>> import numpy as np, xarray as xr
        >>> from pyro_csg import cycle_summary
        >>> draws = np.random.default_rng(0).normal(size=(1, 12))
        >>> posterior = xr.Dataset({"mu": (("chain", "draw"), draws)},
        ...                        coords={"cycle": ("draw", np.repeat([0, 1, 2], 4))})
        >>> table = cycle_summary(posterior)
        >>> list(table.columns), len(table)
        (['mean', 'sd', 'ess', 'r_hat_between', 'noise_ratio', 'separation', 'alarm'], 3)
    """
    import pandas as pd

    regrouped, chains, cycles = cycle_layout(idata, var_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rhat = arviz().rhat(regrouped)
    noise = _cycle_noise(idata)

    per_element = []
    for name, variable in regrouped.data_vars.items():
        rhat_flat = np.asarray(rhat[name].values).reshape(-1)
        for element, (label, values) in enumerate(scalar_elements(variable)):
            per_element.append((label, values, float(rhat_flat[element])))
    # the diagnostic on the draws regrouped above (pyro_csg.cycle_diagnostic's numbers)
    groups = group_cycles(np.asarray([values for _, values, _ in per_element], dtype=float))
    rows = []
    index = []
    for (label, values, rhat_value), separation, alarm in zip(
        per_element, groups.separation, groups.alarm, strict=True
    ):
        ess = ess_per_cycle(values)
        for position, draws in enumerate(values):
            rows.append(
                (
                    float(draws.mean()),
                    float(draws.std(ddof=1)) if len(draws) > 1 else float("nan"),
                    ess,
                    rhat_value,
                    noise.get((int(chains[position]), int(cycles[position])), float("nan")),
                    float(separation),
                    bool(alarm),
                )
            )
            index.append((label, int(chains[position]), int(cycles[position])))
    return pd.DataFrame(
        rows,
        index=pd.MultiIndex.from_tuples(index, names=["variable", "chain", "cycle"]),
        columns=["mean", "sd", "ess", "r_hat_between", "noise_ratio", "separation", "alarm"],
    )


def _cycle_noise(idata) -> dict[tuple[int, int], float]:
    """``{(chain, cycle): largest noise_ratio of its draws}`` from ``sample_stats``."""
    stats = group(idata, "sample_stats")
    if stats is None or "noise_ratio" not in stats:
        return {}
    ratios = stats["noise_ratio"].transpose("chain", "draw").values
    posterior = group(idata, "posterior")
    result: dict[tuple[int, int], float] = {}
    if posterior["cycle"].dims == ("chain",):  # group_by="cycle": one cycle per chain
        for chain, cycle, values in zip(
            posterior["mcmc_chain"].values, posterior["cycle"].values, ratios, strict=True
        ):
            result[(int(chain), int(cycle))] = float(np.nanmax(values, initial=-np.inf))
    else:
        cycles = posterior["cycle"].values
        for chain, values in enumerate(ratios):
            for cycle in np.unique(cycles):
                result[(chain, int(cycle))] = float(
                    np.nanmax(values[cycles == cycle], initial=-np.inf)
                )
    return {key: (value if value > -np.inf else float("nan")) for key, value in result.items()}
