"""The kernels' constructor arguments, checked once and held as a frozen record.

Every refusal names the argument and what would be valid, before any work is done.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.checks import check_positive
from ..core.sampler import check_exploration_noise
from ..core.schedules import CosineCyclical, CycleLayout, Schedule
from ..services.checkpoint import Checkpoint, as_checkpoint

__all__ = ["KernelOptions", "kernel_options", "as_initial_params", "NUTS_KEYWORDS"]

_NO_TRAJECTORY = "there is no trajectory: each step is one (minibatch) gradient step"
NUTS_KEYWORDS = {
    "jit_compile": "compile_potential",
    "ignore_jit_warnings": None,  # accepted: the traced graph warns only when it falls back
    "jit_options": None,
    "max_plate_nesting": None,  # accepted: the plates are found by tracing the model
    "max_tree_depth": _NO_TRAJECTORY,
    "num_steps": _NO_TRAJECTORY,
    "trajectory_length": _NO_TRAJECTORY,
    "use_multinomial_sampling": _NO_TRAJECTORY,
    "target_accept_prob": "there is no accept/reject step to target; the step size is "
    "chosen at the start when step_size is left out",
    "adapt_step_size": "the automatic step size is the counterpart: leave step_size out",
    "adapt_mass_matrix": "preconditioner=True (the default with the automatic step size) "
    "measures a diagonal preconditioner at the start",
    "dense_mass": "NumPyro's dense_mass is full_mass here (True, False or None: automatic)",
}
"""What becomes of each HMC/NUTS keyword: the setting that carries its meaning over, ``None``
(accepted, nothing to do), or why there is no counterpart."""


@dataclass(frozen=True)
class KernelOptions:
    """The checked settings of a cyclical kernel (see
    :class:`~pyro_csg.adapter.kernels.CyclicalSGLD` for what each means).

    ``schedule`` is ``None`` with the automatic step size; ``control_variates`` and
    ``optimize_start`` are ``None`` for "decided per model"; ``compile_potential`` is
    ``None`` (eager), ``"graph"`` or ``"inductor"``.
    """

    model: Callable | None
    potential_fn: Callable | None
    layout: CycleLayout
    schedule: Schedule | None
    auto_step_size: bool
    step_scale: float
    control_variates: bool | None
    preconditioner: bool
    optimize_start: bool | None
    temperature: float
    init_strategy: Callable
    transforms: dict | None
    compile_potential: str | None
    checkpoint: Checkpoint | None
    process_group: Any
    exploration_noise: str = "auto"
    max_batch_size: int | None = None
    full_mass: bool | None = None


def _check_flags(
    control_variates, preconditioner, optimize_start, compile_potential, potential_fn
) -> None:
    if compile_potential not in (True, False, "graph", "inductor") or not isinstance(
        compile_potential, (bool, np.bool_, str)
    ):
        raise TypeError(
            "compile_potential must be True (the traced graph, default), 'inductor' (the "
            "traced graph built by torch.compile) or False (eager), got "
            f"{compile_potential!r}"
        )
    for name, value in (
        ("control_variates", control_variates),
        ("preconditioner", preconditioner),
        ("optimize_start", optimize_start),
    ):
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be True, False or None (automatic), got {value!r}")
    if control_variates and potential_fn is not None:
        raise ValueError(
            "control_variates=True needs a model with a subsampled plate, not a "
            "potential_fn: the full-data gradient is the model's plate walked window by "
            "window"
        )


def _check_callables(model, potential_fn, init_strategy, transforms, process_group) -> None:
    if (model is None) == (potential_fn is None):
        raise ValueError("give exactly one of model or potential_fn")
    if model is not None and not callable(model):
        raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
    if potential_fn is not None and not callable(potential_fn):
        raise TypeError(
            f"potential_fn must be a callable taking a dict of unconstrained tensors, "
            f"got {type(potential_fn).__name__}"
        )
    if not (
        process_group is None
        or isinstance(process_group, (bool, np.bool_))
        or hasattr(process_group, "size")  # a torch.distributed ProcessGroup
    ):
        raise TypeError(
            "process_group must be None (data-parallel when torch.distributed is "
            "initialised with several ranks), False (never) or a torch.distributed "
            f"ProcessGroup, got {process_group!r}"
        )
    if not callable(init_strategy):
        raise TypeError("init_strategy must be a Pyro init_to_* strategy (a callable)")
    if transforms is not None and not isinstance(transforms, dict):
        raise TypeError("transforms must be a dict {site name: Transform} or None")


def _resolve_schedule(step_size, schedule, steps_per_cycle: int) -> Schedule | None:
    """The step-size schedule (``None``: automatic, chosen at the start)."""
    if schedule is None:
        return None if step_size is None else CosineCyclical(step_size, steps_per_cycle)
    if step_size is not None:
        raise ValueError(
            "give either step_size (for the default cosine schedule) or schedule, not both"
        )
    if not callable(schedule):
        kind = type(schedule).__name__
        raise TypeError(f"schedule must be a callable k -> step size, got {kind}")
    if isinstance(schedule, CosineCyclical) and schedule.steps_per_cycle != steps_per_cycle:
        raise ValueError(
            f"schedule has steps_per_cycle={schedule.steps_per_cycle} but the kernel "
            f"has steps_per_cycle={steps_per_cycle}: the cycles would not line up"
        )
    return schedule


def _nuts_keywords(name: str, keywords: dict[str, Any], compile_potential):
    """A NUTS user's keywords: ``jit_compile`` carried over to ``compile_potential``, the
    ones with nothing to do accepted, the others refused saying why."""
    for key, value in keywords.items():
        if key not in NUTS_KEYWORDS:
            known = [*inspect.signature(kernel_options).parameters, *NUTS_KEYWORDS]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise TypeError(f"{name} got an unexpected keyword argument {key!r}{hint}")
        meaning = NUTS_KEYWORDS[key]
        if meaning == "compile_potential":
            compile_potential = bool(value)
        elif meaning is not None:
            raise TypeError(f"{name} has no counterpart of NUTS's {key}: {meaning}.")
    return compile_potential


def kernel_options(
    model: Callable | None,
    potential_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None,
    *,
    step_size: float | None,
    step_scale: float,
    steps_per_cycle: int,
    exploration_fraction: float,
    exploration_noise: str,
    samples_per_cycle: int,
    temperature: float,
    init_strategy: Callable,
    transforms: dict | None,
    schedule: Schedule | None,
    compile_potential: bool | str,
    checkpoint: str | os.PathLike | Checkpoint | None,
    control_variates: bool | None,
    preconditioner: bool | None,
    optimize_start: bool | None,
    process_group: Any,
    max_batch_size: int | None = None,
    full_mass: bool | None = None,
    nuts_keywords: dict[str, Any] | None = None,
    name: str = "the kernel",
) -> KernelOptions:
    """Check the constructor's arguments (a clear error naming the first bad one) and
    resolve what they imply.

    Example::

        >>> from pyro_csg import CyclicalSGLD
        >>> options = CyclicalSGLD(lambda: None).options  # built by kernel_options
        >>> options.auto_step_size, options.preconditioner, options.compile_potential
        (True, True, 'graph')
    """
    compile_potential = _nuts_keywords(name, nuts_keywords or {}, compile_potential)
    _check_callables(model, potential_fn, init_strategy, transforms, process_group)
    layout = CycleLayout(steps_per_cycle, exploration_fraction, samples_per_cycle)
    check_exploration_noise(exploration_noise)
    _check_flags(control_variates, preconditioner, optimize_start, compile_potential, potential_fn)
    auto_step_size = step_size is None and schedule is None
    step_scale = check_positive("step_scale", step_scale)
    if step_scale != 1.0 and not auto_step_size:
        raise ValueError(
            f"step_scale={step_scale!r} scales the automatic step size; with an explicit "
            "step_size or schedule, pass a smaller step_size instead"
        )
    if max_batch_size is not None and (
        isinstance(max_batch_size, bool)
        or not isinstance(max_batch_size, (int, np.integer))
        or max_batch_size < 1
    ):
        raise ValueError(
            "max_batch_size must be a whole number >= 1 (the most indices of the "
            "subsampled plate a step may read where the minibatch noise cuts the automatic "
            "step; the plate's subsample_size or less keeps it) or None (the default "
            f"bound), got {max_batch_size!r}"
        )
    if preconditioner is None:
        preconditioner = auto_step_size
    if full_mass is not None and not isinstance(full_mass, (bool, np.bool_)):
        raise TypeError(
            "full_mass must be True (a dense preconditioner: the inverse of the Hessian "
            "measured at the start), False (diagonal) or None (the default: dense where "
            "the diagonal leaves some direction too slow to sample), got "
            f"{full_mass!r} (a list of site groups, as NUTS takes, has no counterpart: "
            "the dense preconditioner covers every site)"
        )
    if full_mass and not preconditioner:
        raise ValueError(
            "full_mass=True is a dense preconditioner, so it needs preconditioner=True "
            "(the default with the automatic step size; an explicit step_size turns it off "
            "unless preconditioner=True is given)"
        )
    if preconditioner and schedule is not None:
        raise ValueError(
            "preconditioner=True works with the cosine schedule (step_size or the "
            "automatic step size), not with a custom schedule"
        )
    return KernelOptions(
        model=model,
        potential_fn=potential_fn,
        layout=layout,
        schedule=_resolve_schedule(step_size, schedule, steps_per_cycle),
        auto_step_size=auto_step_size,
        step_scale=step_scale,
        control_variates=None if control_variates is None else bool(control_variates),
        preconditioner=bool(preconditioner),
        optimize_start=None if optimize_start is None else bool(optimize_start),
        temperature=check_positive("temperature", temperature),
        init_strategy=init_strategy,
        transforms=transforms,
        compile_potential=compile_potential
        if isinstance(compile_potential, str)
        else ("graph" if compile_potential else None),
        checkpoint=as_checkpoint(checkpoint),
        process_group=process_group,
        exploration_noise=exploration_noise,
        max_batch_size=None if max_batch_size is None else int(max_batch_size),
        full_mass=None if full_mass is None else bool(full_mass),
    )


def as_initial_params(params: Any) -> dict[str, torch.Tensor] | None:
    """``MCMC(initial_params=...)`` as a dict of floating-point tensors (Python numbers
    and integer tensors mean floats, as torch would convert them), or a clear error."""
    if params is None:
        return None
    if not isinstance(params, dict):
        raise TypeError(
            "initial_params must be a dict {site name: unconstrained value}, got "
            f"{type(params).__name__}"
        )
    return {
        name: value
        if isinstance(value, torch.Tensor) and value.is_floating_point()
        else torch.as_tensor(value).to(torch.get_default_dtype())
        for name, value in params.items()
    }
