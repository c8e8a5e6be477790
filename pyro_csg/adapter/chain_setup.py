"""What a kernel's ``setup`` builds for one chain from its options and the run's arguments.

The potential (a Pyro model's, or a ``potential_fn``'s) and the chain's start
(:func:`build_potential`), this rank's share of a data-parallel run, the sampler's
settings for this model (:func:`sampler_config`, where the per-model defaults are
decided), and the settings a resumed chain must agree on (:func:`resume_settings`).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.distributions.constraints import Constraint
from torch.distributions.transforms import Transform

from ..core.diffusions import Diffusion
from ..core.errors import SamplerWarning
from ..core.estimators import Automatic, ControlVariates, Minibatch
from ..core.parameters import FunctionPotential
from ..core.sampler import SamplerConfig
from ..services.distributed import RankShare, resolve_process_group
from .full_data import single_plate
from .options import KernelOptions
from .potential import ModelPotential

__all__ = [
    "build_potential",
    "compile_model_potential",
    "sampler_config",
    "fixed_hyperparameters",
    "resume_settings",
    "warn_changed_supports",
]


def _data_parallel(options: KernelOptions, potential, name: str) -> RankShare | None:
    share = resolve_process_group(options.process_group)
    if share is None or potential.plates:
        return share
    message = (
        f"{name}: torch.distributed runs {share.world_size} ranks but the "
        "model has no subsampled plate to share out"
    )
    if options.process_group is not None:
        raise ValueError(
            message + ": pass process_group=False, or a model whose data plate has subsample_size"
        )
    warnings.warn(message + ": each rank runs its own chain.", SamplerWarning, stacklevel=5)
    return None


def build_potential(
    options: KernelOptions,
    params: dict[str, torch.Tensor] | None,
    args: tuple,
    kwargs: dict,
    name: str,
) -> tuple[Any, torch.Tensor, RankShare | None]:
    """The potential, the chain's start (``params`` if given, else the model's init
    strategy) and this rank's share of a data-parallel run (``None``: one process)."""
    if options.model is not None:
        potential = ModelPotential(
            options.model, args, kwargs, options.init_strategy, options.transforms
        )
        share = _data_parallel(options, potential, name)
        if share is not None:
            potential.split_batches(share)
        if options.control_variates:  # asked for explicitly: say why it cannot be
            single_plate(potential)
        theta = potential.initial_theta() if params is None else potential.flatten(params)
    else:
        if params is None:
            raise ValueError(
                "with potential_fn, pass initial_params to MCMC (a dict of unconstrained "
                "tensors, one entry per latent site), as with Pyro's HMC"
            )
        potential = FunctionPotential(options.potential_fn, params)
        theta = potential.flatten(params)
        share = _data_parallel(options, potential, name)
    if not torch.isfinite(theta).all():
        bad = [k for k, v in potential.unflatten(theta).items() if not torch.isfinite(v).all()]
        raise ValueError(f"initial_params has non-finite values at site(s) {bad}")
    return potential, theta, share


def compile_model_potential(
    potential: ModelPotential, theta: torch.Tensor, backend: str, name: str
) -> str:
    """Trace (and with ``"inductor"`` compile) the model's potential at ``theta``; warn,
    naming the fallback and why, when it cannot be. Returns the backend in use."""
    reason = potential.compile(theta, backend)
    if reason is not None:
        fallback = "the traced graph" if potential.compiled else "the eager (slower) potential"
        warnings.warn(
            f"{name}: using {fallback}: {reason}. "
            "Pass compile_potential=False to skip the attempt.",
            SamplerWarning,
            stacklevel=5,
        )
    return potential.backend or "eager"


def sampler_config(
    options: KernelOptions, diffusion: Diffusion, potential, name: str
) -> SamplerConfig:
    """The sampler's settings for this model. By default, for models with exactly one
    subsampled plate, control variates where they pay: with the automatic step, where
    the plain minibatch noise measured at the start cuts the step more than twofold
    (:class:`~pyro_csg.core.estimators.Automatic`; without them the minibatch noise
    decides the posterior's spread once ``N / B`` reaches the hundreds); with an explicit
    step the same two measurements choose them (the step stays the user's). And the
    optimisation stage
    for every model: the automatic step and preconditioner are measured at the start, and
    at an init strategy's draw they suit no part of the posterior. A model without a
    subsampled plate may have no minimum (a hierarchical scale at 0): there the chain
    falls back to its initial parameters with a warning (``start_fallback``)."""
    plates = tuple(potential.plates)
    centre, optimize = options.control_variates, options.optimize_start
    if centre is None and len(plates) == 1:
        estimator = Automatic()
    elif len(plates) == 1 if centre is None else centre:
        estimator = ControlVariates()
    else:
        estimator = Minibatch()
    return SamplerConfig(
        layout=options.layout,
        diffusion=diffusion,
        temperature=options.temperature,
        schedule=options.schedule,
        preconditioner=options.preconditioner,
        estimator=estimator,
        step_scale=options.step_scale,
        optimize_start=True if optimize is None else optimize,
        start_fallback=optimize is None and not plates,
        name=name,
        suggest_control_variates=centre is False,
        exploration_noise=options.exploration_noise,
        max_batch=options.max_batch_size,
        full_mass=options.full_mass,
    )


def fixed_hyperparameters(options: KernelOptions, diffusion: Diffusion, name: str) -> dict:
    """The settings given to the kernel's constructor (reported, and what a resumed run
    must share), with the diffusion's own (``friction``, ``diffusion``)."""
    schedule = options.schedule
    layout = options.layout
    return {
        "sampler": name,
        "step_size": "auto" if schedule is None else schedule(1),
        "steps_per_cycle": layout.steps_per_cycle,
        "exploration_fraction": layout.exploration_fraction,
        "exploration_noise": options.exploration_noise,
        "samples_per_cycle": layout.samples_per_cycle,
        "temperature": options.temperature,
        "schedule": "CosineCyclical(step_size=auto)" if schedule is None else repr(schedule),
        "control_variates": "auto"
        if options.control_variates is None
        else options.control_variates,
        "preconditioner": options.preconditioner,
        "optimize_start": "auto" if options.optimize_start is None else options.optimize_start,
        **diffusion.settings,
        # Only when set: runs and checkpoints made before it existed keep their settings.
        **({} if options.step_scale == 1.0 else {"step_scale": options.step_scale}),
        **(
            {}
            if options.max_batch_size is None
            else {"max_batch_size": options.max_batch_size}
        ),
        # Only when set, as step_scale.
        **({} if options.full_mass is None else {"full_mass": options.full_mass}),
    }


def resume_settings(
    fixed: dict[str, Any],
    potential,
    warmup_steps: int,
    num_chains: int | None,
    theta: torch.Tensor,
) -> dict[str, Any]:
    """What a saved state must agree on to be resumed (JSON-able): the kernel's
    ``fixed`` hyperparameters, the warm-up, the chains, the sites, plates and data (its
    ``"data"`` digest left ``None``: :attr:`~pyro_csg.services.resume.ChainRecord.settings`
    takes it when it is first needed)."""
    return {
        **fixed,
        "warmup_steps": warmup_steps,
        "num_chains": num_chains,
        "latent sites": [
            f"{site.name} {list(site.shape)} {type(site.transform).__name__}"
            for site in potential.sites
        ],
        "subsampled plates": [
            f"{plate.name}: {plate.subsample_size} of {plate.size}" for plate in potential.plates
        ],
        "data": None,
        "dtype": str(theta.dtype),
        "device type": theta.device.type,
    }


def warn_changed_supports(previous: dict | None, current: dict, name: str) -> None:
    """A second run whose data changed a site's support (``Uniform(0, y.max())``): Pyro's
    ``MCMC`` keeps the first run's ``transforms`` for ``get_samples``, as it does with
    NUTS, so the draws would be constrained to the old support. Say so."""
    if not previous:
        return
    changed = [
        site
        for site, transform in current.items()
        if site in previous and not _same_transform(previous[site], transform)
    ]
    if changed:
        warnings.warn(
            f"{name}: the support of site(s) {changed} changed since this kernel's last run "
            "(the data set it). Pyro's MCMC keeps the transforms of its first run "
            "(MCMC.transforms) to constrain the draws: set mcmc.transforms = None before "
            "this run, or make a new MCMC, or get_samples() maps the draws to the old "
            "support.",
            SamplerWarning,
            stacklevel=4,
        )


def _same_transform(a: Any, b: Any, depth: int = 0) -> bool:
    """Whether two transforms (or their parts) map alike: torch's transforms mostly
    compare by identity, so compare their types and attributes (tensors by value). A
    transform's link to its inverse is followed only for the inverse itself."""
    if a is b:
        return True
    if type(a) is not type(b) or depth > 8:
        return False
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, (list, tuple)):
        pairs = zip(a, b, strict=False)
        return len(a) == len(b) and all(_same_transform(x, y, depth + 1) for x, y in pairs)
    if isinstance(a, (Transform, Constraint)):
        inverse = type(a).__name__ == "_InverseTransform"
        names = [
            name
            for name in set(vars(a)) | set(vars(b))
            if not name.startswith("_cache") and (name != "_inv" or inverse)
        ]
        return all(
            _same_transform(vars(a).get(name), vars(b).get(name), depth + 1) for name in names
        )
    return bool(a == b)
