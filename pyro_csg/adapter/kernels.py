"""Cyclical SG-MCMC kernels for :class:`pyro.infer.MCMC`."""

from __future__ import annotations

import hashlib
import math
import os
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro.infer.autoguide.initialization import init_to_uniform
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from ..core.checks import check_positive, is_number
from ..core.diffusions import Diffusion, sghmc, sgld
from ..core.errors import NonFiniteError
from ..core.estimators import Centre, centre_at, control_variates
from ..core.parameters import FunctionPotential
from ..core.runaway import runaway_cycles
from ..core.schedules import CosineCyclical, CycleLayout, Schedule
from ..core.state import ChainState
from ..core.subsample import EpochBatches
from ..core.tuning import gradient_noise, noise_per_step, optimize_start, tune
from ..services.checkpoint import (
    ChainFiles,
    Checkpoint,
    CheckpointError,
    as_checkpoint,
    compare_settings,
    data_digest,
)
from ..services.distributed import RankShare, resolve_process_group
from ..services.store import STATS
from .full_data import full_value_and_grad, single_plate
from .potential import ModelPotential

__all__ = ["CyclicalSGLD", "CyclicalSGHMC", "NonFiniteError"]

# Minibatches at which each cycle's gradient noise is measured (at its first kept draw).
NOISE_BATCHES = 8
NOISE_SPACING = 50 * NOISE_BATCHES
"""Iterations between two noise measurements at the least (at most 2% extra gradients)."""

# The noise_ratio at the sampling stage's first step above which the kernels warn.
NOISE_WARNING = 1.0

# How many iterations may pass before the potential energies are checked for NaN/inf.
# Checking reads a value back from the device, so it is batched rather than per step.
_CHECK_EVERY = 100


class _Divergences(list):
    """The retained draws flagged as diverging: those of cycles that ran away (see
    :mod:`pyro_csg.core.runaway`), as draw indices, the form Pyro's ``MCMC.summary`` counts.

    It refuses to become a NumPy array, which is what ``az.from_pyro`` does with it: that
    converter would take the observed data and the log-likelihood from one random
    minibatch, so it fails instead, with a pointer to :func:`pyro_csg.to_inference_data`.
    """

    def __array__(self, *args, **kwargs):
        raise TypeError(
            "arviz.from_pyro cannot convert a run of CyclicalSGLD or CyclicalSGHMC: it would "
            "take the observed data and the log-likelihood from one random minibatch, not "
            "the full data. Use pyro_csg.to_inference_data(mcmc) instead."
        )


@contextmanager
def _aside_from_global_rng(state: ChainState):
    """Run a measurement with torch's global generator forked and reseeded from the
    chain's state, and restored after: a ``potential_fn`` that draws its own noise
    from the global generator (notebook 2's) then gets fresh noise for the measurement
    and leaves the chain's draws as they would be without it."""
    device = state.theta.device
    devices = [device.index or 0] if device.type == "cuda" else []
    digest = hashlib.blake2b(state.rng_state.cpu().numpy().tobytes(), digest_size=8, salt=b"aside")
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int.from_bytes(digest.digest(), "little") >> 2)
        yield


def _spare_batches(state: ChainState, plates) -> Callable[[], list[torch.Tensor]]:
    """Random minibatches (one per plate a call) that leave the chain alone.

    They come from a generator seeded by a hash of the chain's state, not from the
    chain's batches or generator, so the measurements that use them (the automatic
    step's batch curvatures, the noise diagnostic) do not change the chain's draws.
    """
    device = state.theta.device
    digest = hashlib.blake2b(state.rng_state.cpu().numpy().tobytes(), digest_size=8)
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest.digest(), "little") >> 2)

    def batches() -> list[torch.Tensor]:
        result = []
        for plate in plates:
            size, batch = plate.size, plate.subsample_size
            if size <= 2**16:
                index = torch.randperm(size, generator=generator, device=device)[:batch]
            else:  # a permutation of millions per batch costs more than it is worth
                index = torch.randint(size, (batch,), generator=generator, device=device)
            result.append(index.to(plate.device))
        return result

    return batches


def _runner_frame():
    """The frame of ``pyro.infer.mcmc.api._gen_samples`` that called ``setup``, if any."""
    frame = sys._getframe(2)
    for _ in range(6):
        frame = frame.f_back
        if frame is None:
            return None
        if frame.f_code.co_name == "_gen_samples" and frame.f_globals.get("__name__") == (
            "pyro.infer.mcmc.api"
        ):
            return frame
    return None


def _runner_num_samples() -> int | None:
    """The ``num_samples`` Pyro's runner will ask for (None outside Pyro's runner)."""
    frame = _runner_frame()
    return None if frame is None else frame.f_locals.get("num_samples")


def _runner_chain() -> tuple[int, int | None]:
    """``(chain index, number of chains)`` of the ``pyro.infer.MCMC`` chain being set up.

    Pyro does not tell a kernel which chain it runs, but a checkpointed chain needs its
    own folder. ``setup`` is called from ``pyro.infer.mcmc.api._gen_samples``, itself
    called by ``_UnarySampler.run`` (chains one after another in this process; its local
    ``i`` is the chain) or by ``_Worker.run`` (one process per chain; ``self.chain_id``,
    and the number of chains is not known there). Outside Pyro's runner: chain 0 of an
    unknown number.
    """
    frame = _runner_frame()
    if frame is not None:
        caller = frame.f_back
        runner = caller.f_locals.get("self") if caller is not None else None
        if type(runner).__name__ == "_UnarySampler":
            return int(caller.f_locals.get("i", 0)), int(runner.num_chains)
        if type(runner).__name__ == "_Worker":
            return int(runner.chain_id), None
    return 0, None


class _Chain:
    """One chain's run-time objects around its :class:`~pyro_csg.core.state.ChainState`.

    The state is replaced, never modified, once per draw: the hot loop works on local
    variables and the new state is committed only after the draw is stored, so an
    interruption at any moment leaves the last committed state consistent with the store.
    """

    def __init__(
        self,
        index: int,
        potential,
        generator: torch.Generator,
        batches: list[EpochBatches],
        state: ChainState,
        warmup_steps: int,
        update: Callable,
    ) -> None:
        self.index = index
        self.potential = potential
        self.sites = potential.sites
        self.layout = potential.layout
        # The gradient estimator: (theta, batch indices) -> (U~, grad U~). A seam: the
        # control-variate estimator wraps the potential's (see use_centre).
        self.raw_gradient = potential.value_and_grad
        self.gradient = potential.value_and_grad
        self.schedule: Schedule | None = None  # the kernel's, or the tuned one
        self.generator = generator
        self.batches = batches
        self.state = state
        self.warmup_steps = warmup_steps
        self.draws_at_start = state.draws  # > 0 when continuing a loaded state
        self.replay_until = 0  # calls answered from the store after a resume
        self.replayed = 0
        self.files: ChainFiles | None = None
        self.verify_potential = False
        self.kept_thetas: list[torch.Tensor] | None = []  # in memory, when no store
        self.stats: dict[str, list] = {key: [] for key in STATS}
        self.last_draw: dict[str, torch.Tensor] | None = None
        self.checkpointed_at = -1  # state.draws at the last checkpoint
        self.ready = False  # compiled, verified and with a first gradient
        self.runaway_reported = False
        self.update = update  # the diffusion's update, its hyperparameters bound
        self.rescale: Callable | None = None  # the diffusion's, for a new step size
        self.settings: dict[str, Any] = {}
        self.backend = "eager"  # how the potential is evaluated: "graph", "inductor", "eager"
        # (cycle, its noise per unit step, the iteration it was measured at)
        self.cycle_noise: tuple[int, float, int] | None = None
        self.noise_reported = False

    @property
    def calls(self) -> int:
        """``sample`` calls answered in this run."""
        if self.replayed < self.replay_until:
            return self.replayed
        return self.state.draws - self.draws_at_start

    @property
    def kept(self) -> int:
        """Retained (post-warm-up) draws of this run so far."""
        return max(0, self.calls - self.warmup_steps)

    def use_centre(self, centre: Centre | None) -> None:
        """Estimate gradients with control variates around ``centre`` (None: without)."""
        if centre is None:
            self.gradient = self.raw_gradient
        else:
            self.gradient = control_variates(self.raw_gradient, centre)

    def next_indices(self) -> list[torch.Tensor]:
        """The next minibatch of every subsampled plate."""
        return [cursor.next() for cursor in self.batches]

    def restore(self, saved: dict[str, Any], algorithm_type: type) -> None:
        """Replace the state by a saved one, moved to this chain's device and dtype."""
        state = ChainState.from_state_dict(saved, algorithm_type)
        theta = self.state.theta
        if state.theta.shape != theta.shape:
            raise CheckpointError(
                f"the saved state has {state.theta.numel()} parameters, this model has "
                f"{theta.numel()}"
            )
        if len(state.batches) != len(self.batches):
            raise CheckpointError(
                f"the saved state has {len(state.batches)} subsampled plate(s), this model "
                f"has {len(self.batches)}"
            )

        def move(value):
            return None if value is None else value.to(device=theta.device, dtype=theta.dtype)

        self.generator.set_state(state.rng_state)
        for cursor, saved_cursor in zip(self.batches, state.batches, strict=True):
            cursor.load_state_dict(saved_cursor)
        tuning = state.tuning
        if tuning is not None:
            tuning = replace(
                tuning, preconditioner=move(tuning.preconditioner), noise=move(tuning.noise)
            )
        self.state = replace(
            state,
            theta=move(state.theta),
            grad=move(state.grad),
            energy=move(state.energy),
            algorithm=type(state.algorithm)(*(move(v) for v in state.algorithm)),
            tuning=tuning,
            centre=None if state.centre is None else state.centre.to(theta),
        )
        self.draws_at_start = self.state.draws

    def rebased(self, theta: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor) -> ChainState:
        """The state moved to ``theta``, with ``U~`` and its gradient on a batch just drawn."""
        return replace(
            self.state,
            theta=theta,
            energy=energy,
            grad=grad,
            batches=tuple(cursor.state_dict() for cursor in self.batches),
            rng_state=self.generator.get_state(),
        )

    def constrained_draws(self) -> dict[str, torch.Tensor]:
        """The retained draws so far, constrained, stacked along a leading draw dim."""
        kept = self.kept
        if self.files is not None:
            rows = [self.files.writer.read(n)[0] for n in range(kept)]
            return {
                site.name: torch.as_tensor(np.stack([row[site.name] for row in rows]))
                if rows
                else torch.zeros((0, *site.shape), dtype=site.dtype)
                for site in self.sites
            }
        thetas = self.kept_thetas[:kept]
        flat = torch.stack(thetas) if thetas else self.state.theta.new_zeros((0, self.layout.size))
        parts = flat.split(self.layout.sizes, dim=-1)
        return {
            site.name: site.transform.inv(
                part.reshape(kept, *site.unconstrained_shape).to(site.dtype)
            )
            for site, part in zip(self.sites, parts, strict=True)
        }

    def release(self) -> None:
        """Drop what holds the data and the traced graph (after the run)."""
        self.potential = None
        self.gradient = None
        self.raw_gradient = None


class CyclicalKernel(MCMCKernel):
    """Shared machinery of the cyclical kernels; a subclass only names its diffusion."""

    # False from a run's set-up until its clean-up: MCMC keeps the draws of its last
    # *finished* run, but the arguments of its last run (None: never set up here).
    _run_complete: bool | None = None

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
        *,
        step_size: float | None = None,
        steps_per_cycle: int = 1000,
        exploration_fraction: float = 0.5,
        samples_per_cycle: int = 4,
        temperature: float = 1.0,
        init_strategy: Callable = init_to_uniform,
        transforms: dict | None = None,
        schedule: Schedule | None = None,
        compile_potential: bool | str = True,
        checkpoint: str | os.PathLike | Checkpoint | None = None,
        control_variates: bool | None = None,
        preconditioner: bool | None = None,
        optimize_start: bool | None = None,
        process_group: Any = None,
    ) -> None:
        if (model is None) == (potential_fn is None):
            raise ValueError("give exactly one of model or potential_fn")
        if model is not None and not callable(model):
            raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
        if potential_fn is not None and not callable(potential_fn):
            raise TypeError(
                f"potential_fn must be a callable taking a dict of unconstrained tensors, "
                f"got {type(potential_fn).__name__}"
            )
        self.layout = CycleLayout(steps_per_cycle, exploration_fraction, samples_per_cycle)
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
        if control_variates and potential_fn is not None:
            raise ValueError(
                "control_variates=True needs a model with a subsampled plate, not a "
                "potential_fn: the full-data gradient is the model's plate walked window by "
                "window"
            )
        # No step size and no schedule: the step size is chosen at the start of the run.
        self.auto_step_size = step_size is None and schedule is None
        if preconditioner is None:
            preconditioner = self.auto_step_size
        if preconditioner and schedule is not None:
            raise ValueError(
                "preconditioner=True works with the cosine schedule (step_size or the "
                "automatic step size), not with a custom schedule"
            )
        if schedule is None:
            if step_size is not None:
                schedule = CosineCyclical(step_size, steps_per_cycle)
        else:
            if step_size is not None:
                raise ValueError(
                    "give either step_size (for the default cosine schedule) or schedule, not both"
                )
            if not callable(schedule):
                raise TypeError(
                    f"schedule must be a callable k -> step size, got {type(schedule).__name__}"
                )
            if isinstance(schedule, CosineCyclical) and schedule.steps_per_cycle != steps_per_cycle:
                raise ValueError(
                    f"schedule has steps_per_cycle={schedule.steps_per_cycle} but the kernel "
                    f"has steps_per_cycle={steps_per_cycle}: the cycles would not line up"
                )
        if not callable(init_strategy):
            raise TypeError("init_strategy must be a Pyro init_to_* strategy (a callable)")
        if transforms is not None and not isinstance(transforms, dict):
            raise TypeError("transforms must be a dict {site name: Transform} or None")
        self.model = model
        self.potential_fn = potential_fn
        self.schedule = schedule  # None: chosen per chain at its start (auto_step_size)
        # None: on for models with exactly one subsampled plate (see _uses_centre).
        self.control_variates = None if control_variates is None else bool(control_variates)
        self.preconditioner = bool(preconditioner)
        # None: on for models with a subsampled plate (see _optimizes).
        self.optimize_start = None if optimize_start is None else bool(optimize_start)
        self.temperature = check_positive("temperature", temperature)
        self.init_strategy = init_strategy
        # None (eager), "graph" or "inductor".
        self.compile_potential = (
            compile_potential
            if isinstance(compile_potential, str)
            else ("graph" if compile_potential else None)
        )
        self.checkpoint = as_checkpoint(checkpoint)
        self.process_group = process_group
        self._share: RankShare | None = None  # this rank's share, data-parallel
        self._user_transforms = transforms
        # As in Pyro's HMC: None until set-up, then {site: constrained -> unconstrained}.
        self.transforms = None if potential_fn is None or transforms is None else transforms
        self._initial_params: dict[str, torch.Tensor] | None = None
        self._chains: dict[int, _Chain] = {}
        self._current: _Chain | None = None
        self._loaded: dict[str, Any] | None = None

    def _diffusion(self) -> Diffusion:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- hyperparameters, for reports ------------------------------------------------------
    @property
    def steps_per_cycle(self) -> int:
        return self.layout.steps_per_cycle

    @property
    def exploration_fraction(self) -> float:
        return self.layout.exploration_fraction

    @property
    def samples_per_cycle(self) -> int:
        return self.layout.samples_per_cycle

    @property
    def step_size(self) -> float | None:
        """``eta_1``, the schedule's first step size (for the cosine schedule, the largest
        step of every cycle); with the automatic step size, the current chain's choice
        (``None`` before its start)."""
        if self.schedule is not None:
            return self.schedule(1)
        chain = self._current or (self._chains[max(self._chains)] if self._chains else None)
        if chain is None or chain.state.tuning is None:
            return None
        return chain.state.tuning.step_size

    def hyperparameters(self) -> dict[str, Any]:
        """The sampler's settings, for reports and ArviZ ``attrs``.

        Example::

            >>> from pyro_csg import CyclicalSGLD
            >>> CyclicalSGLD(lambda: None, step_size=0.01).hyperparameters()["schedule"]
            'CosineCyclical(step_size=0.01, steps_per_cycle=1000)'
        """
        settings = self._fixed_hyperparameters()
        tuned = [chain.state for _, chain in sorted(self._chains.items())]
        if self.auto_step_size:  # with an explicit step, the tuning's step is not used
            settings["tuned_step_size"] = [
                math.nan if state.tuning is None else state.tuning.step_size for state in tuned
            ]
            settings["noise_ratio"] = [
                math.nan if state.tuning is None else state.tuning.noise_ratio for state in tuned
            ]
        if self.optimize_start is not False:
            settings["start_steps"] = [state.start_steps for state in tuned]
        if tuned:
            # One string (netCDF attrs keep no lists of strings): each chain's, if they differ.
            backends = [chain.backend for _, chain in sorted(self._chains.items())]
            settings["potential_backend"] = ", ".join(dict.fromkeys(backends))
        if self._share is not None:
            settings["data_parallel_ranks"] = self._share.world_size
        return settings

    def _fixed_hyperparameters(self) -> dict[str, Any]:
        """The settings given to the constructor (what a resumed run must share)."""
        fixed = self.schedule is not None
        return {
            "sampler": type(self).__name__,
            "step_size": self.schedule(1) if fixed else "auto",
            "steps_per_cycle": self.steps_per_cycle,
            "exploration_fraction": self.exploration_fraction,
            "samples_per_cycle": self.samples_per_cycle,
            "temperature": self.temperature,
            "schedule": repr(self.schedule) if fixed else "CosineCyclical(step_size=auto)",
            "control_variates": "auto" if self.control_variates is None else self.control_variates,
            "preconditioner": self.preconditioner,
            "optimize_start": "auto" if self.optimize_start is None else self.optimize_start,
        }

    def _settings(self, potential, warmup_steps, num_chains, args, kwargs, theta) -> dict:
        """What a saved state must agree on to be resumed here (JSON-able)."""
        return {
            **self._fixed_hyperparameters(),
            "warmup_steps": warmup_steps,
            "num_chains": num_chains,
            "latent sites": [
                f"{site.name} {list(site.shape)} {type(site.transform).__name__}"
                for site in potential.sites
            ],
            "subsampled plates": [
                f"{plate.name}: {plate.subsample_size} of {plate.size}"
                for plate in potential.plates
            ],
            "data": data_digest(args, kwargs),
            "dtype": str(theta.dtype),
            "device type": theta.device.type,
        }

    # -- the MCMCKernel interface ----------------------------------------------------------
    @property
    def initial_params(self) -> dict[str, torch.Tensor] | None:
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: dict[str, torch.Tensor] | None) -> None:
        if params is not None:
            if not isinstance(params, dict):
                raise TypeError(
                    "initial_params must be a dict {site name: unconstrained value}, got "
                    f"{type(params).__name__}"
                )
            # Python numbers and integer tensors mean floats: convert, as torch would.
            params = {
                name: value
                if isinstance(value, torch.Tensor) and value.is_floating_point()
                else torch.as_tensor(value).to(torch.get_default_dtype())
                for name, value in params.items()
            }
        self._initial_params = params

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        """Trace the model once, find its subsampled plates, pick the start, give the chain
        its own generator, and resume from a checkpoint or a loaded state if there is one."""
        num_samples = _runner_num_samples()
        if num_samples is not None:  # a run of Pyro's runner (not MCMC's transforms probe)
            self._run_complete = False
        if (
            isinstance(warmup_steps, (bool, np.bool_))
            or not isinstance(warmup_steps, (int, np.integer))
            or warmup_steps < 0
        ):
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        warmup_steps = int(warmup_steps)
        if num_samples == 0:
            raise ValueError(
                "MCMC(num_samples=0) keeps no draw (Pyro would fail after the run with "
                "'stack expects a non-empty TensorList'): give num_samples >= 1, e.g. "
                f"num_cycles * samples_per_cycle = 10 * {self.samples_per_cycle}"
            )
        if warmup_steps % self.samples_per_cycle:
            warnings.warn(
                f"warmup_steps={warmup_steps} is not a multiple of samples_per_cycle="
                f"{self.samples_per_cycle}: warm-up counts retained draws, so the first kept "
                "cycle is a partial one. Pass warmup_steps=0 or whole cycles "
                "(num_cycles * samples_per_cycle).",
                stacklevel=2,
            )
        index, num_chains = _runner_chain()
        if self.model is not None:
            potential = ModelPotential(
                self.model, args, kwargs, self.init_strategy, self._user_transforms
            )
            self.transforms = potential.transforms
            self._share = self._data_parallel(potential)
            if self._share is not None:
                potential.split_batches(self._share)
            if self.control_variates:  # asked for explicitly: say why it cannot be
                single_plate(potential)
            if self._initial_params is None:
                theta = potential.initial_theta()
            else:
                theta = potential.flatten(self._initial_params)
        else:
            if self._initial_params is None:
                raise ValueError(
                    "with potential_fn, pass initial_params to MCMC (a dict of unconstrained "
                    "tensors, one entry per latent site), as with Pyro's HMC"
                )
            potential = FunctionPotential(self.potential_fn, self._initial_params)
            theta = potential.flatten(self._initial_params)
            self._share = self._data_parallel(potential)
        if not torch.isfinite(theta).all():
            bad = [
                name
                for name, value in potential.unflatten(theta).items()
                if not torch.isfinite(value).all()
            ]
            raise ValueError(f"initial_params has non-finite values at site(s) {bad}")

        # The chain's own generator, seeded from Pyro's (global) RNG: pyro.set_rng_seed
        # fixes it, and no other code that draws random numbers can shift its stream.
        generator = torch.Generator(device=theta.device)
        seed = torch.randint(0, 2**62, (), device=theta.device)
        share = self._share
        if share is not None:  # one chain on every rank: rank 0's seed and start
            seed = share.broadcast(seed)
            theta = share.broadcast(theta.clone())
        generator.manual_seed(int(seed.item()))
        diffusion = self._diffusion()
        batches = [EpochBatches(plate, generator) for plate in potential.plates]
        state = ChainState(
            theta=theta,
            algorithm=diffusion.init(theta),
            energy=None,
            grad=None,
            iteration=0,
            draws=0,
            step_size=math.nan,
            batches=tuple(cursor.state_dict() for cursor in batches),
            rng_state=generator.get_state(),
        )
        chain = _Chain(index, potential, generator, batches, state, warmup_steps, diffusion.update)
        chain.rescale = diffusion.rescale
        chain.schedule = self.schedule
        if index == 0 or index in self._chains:
            self._chains = {}  # a new run
        self._chains[index] = chain
        self._current = chain

        settings = self._settings(potential, warmup_steps, num_chains, args, kwargs, theta)
        chain.settings = settings
        if share is not None:
            share.check_same(settings, "model, data and settings")
        if self.checkpoint is not None:
            if self._loaded is not None:
                raise ValueError(
                    "this kernel has both a loaded state (load_state_dict) and checkpoint=; "
                    "give one: a checkpoint resumes by itself"
                )
            if share is None:
                self._open_checkpoint(chain, settings, diffusion)
            else:
                self._open_shared_checkpoint(chain, settings, diffusion, share)
        elif self._loaded is not None:
            self._continue_loaded(chain, settings, diffusion)
        if chain.verify_potential:
            # Check now that the saved chain fits this model, before any draw is replayed.
            self._start(chain)
            chain.ready = True
        self._initial_params = potential.unflatten(chain.state.theta)
        chain.last_draw = self._initial_params

    def _open_checkpoint(self, chain: _Chain, settings: dict, diffusion: Diffusion) -> None:
        raw_sites = frozenset(site.name for site in chain.sites if not site.is_identity)
        manifest = {
            "sites": [site.name for site in chain.sites],
            "num_params": chain.layout.size,
            "hyperparameters": self._fixed_hyperparameters(),
        }
        files = ChainFiles(self.checkpoint, chain.index, settings, manifest, raw_sites)
        chain.files = files
        chain.kept_thetas = None  # the store keeps the draws
        saved = files.load() if self.checkpoint.resume else None
        if saved is None:
            files.writer.truncate(0)
            return
        chain.restore(saved["state"], diffusion.state_type)
        chain.draws_at_start = 0
        kept = int(saved["kept"])
        on_disk = files.writer.count()
        if on_disk < kept:
            raise CheckpointError(
                f"the checkpoint in {files.folder} counts {kept} draws but only {on_disk} "
                "are on disk: the folder was changed by hand. Start over with "
                f"checkpoint=pyro_csg.Checkpoint({str(files.root)!r}, resume=False)."
            )
        files.writer.truncate(kept)  # draws made after the checkpoint are made again
        chain.replay_until = chain.state.draws
        chain.checkpointed_at = chain.state.draws
        chain.verify_potential = chain.state.started

    def _open_shared_checkpoint(
        self, chain: _Chain, settings: dict, diffusion: Diffusion, share: RankShare
    ) -> None:
        """Data-parallel: rank 0 owns the store and hands the others what it resumed."""
        if share.writes:
            try:
                self._open_checkpoint(chain, settings, diffusion)
            except Exception as error:
                share.broadcast_object({"error": f"{type(error).__name__}: {error}"})
                raise
            resumed = chain.replay_until > 0 or chain.state.draws > 0
            share.broadcast_object(
                {"state": chain.state.state_dict() if resumed else None, "error": None}
            )
            return
        received = share.broadcast_object(None)
        if received["error"] is not None:
            raise CheckpointError(f"rank 0 could not open the checkpoint: {received['error']}")
        if received["state"] is not None:
            chain.restore(received["state"], diffusion.state_type)
            chain.draws_at_start = 0
            chain.replay_until = chain.state.draws
            chain.checkpointed_at = chain.state.draws
            chain.verify_potential = chain.state.started

    def _data_parallel(self, potential) -> RankShare | None:
        share = resolve_process_group(self.process_group)
        if share is None or potential.plates:
            return share
        message = (
            f"{type(self).__name__}: torch.distributed runs {share.world_size} ranks but the "
            "model has no subsampled plate to share out"
        )
        if self.process_group is not None:
            raise ValueError(
                message + ": pass process_group=False, or a model whose data "
                "plate has subsample_size"
            )
        warnings.warn(message + ": each rank runs its own chain.", stacklevel=3)
        return None

    def _continue_loaded(self, chain: _Chain, settings: dict, diffusion: Diffusion) -> None:
        loaded = self._loaded
        chains = loaded["chains"]
        if chain.index not in chains:
            raise ValueError(
                f"the loaded state_dict has chain(s) {sorted(chains)}, not chain {chain.index}"
            )
        current = {k: v for k, v in settings.items() if k not in ("warmup_steps", "num_chains")}
        compare_settings(loaded["settings"], current, Path("the loaded state_dict"))
        chain.restore(chains[chain.index], diffusion.state_type)
        chain.verify_potential = chain.state.started

    def cleanup(self) -> None:
        """After a chain's last draw: write its final checkpoint; free the potential."""
        chain = self._current
        self._run_complete = True
        if chain is not None and chain.potential is not None:
            if chain.files is not None and chain.checkpointed_at != chain.state.draws:
                self._save_checkpoint(chain)
            chain.release()
        self._current = None
        self._initial_params = None

    # -- state, in PyTorch's convention ----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The chains' states (of the run in progress or the last one), as plain tensors.

        ``{"format": 1, "settings": {...}, "chains": {chain index: ChainState dict}}``;
        ``torch.save`` writes it. A kernel given it by :meth:`load_state_dict` continues
        those chains at its next ``MCMC.run``: the run's draws are the chains' next ones.

        Example::

            >>> import torch, pyro, pyro.distributions as dist
            >>> from pyro.infer import MCMC
            >>> from pyro_csg import CyclicalSGHMC
            >>> def model():
            ...     pyro.sample("z", dist.Normal(0.0, 1.0))
            >>> kernel = CyclicalSGHMC(model, step_size=0.1, steps_per_cycle=20)
            >>> MCMC(kernel, num_samples=8, warmup_steps=0, disable_progbar=True).run()
            >>> saved = kernel.state_dict()
            >>> saved["chains"][0]["iteration"], saved["chains"][0]["draws"]
            (40, 8)
            >>> later = CyclicalSGHMC(model, step_size=0.1, steps_per_cycle=20)
            >>> later.load_state_dict(saved)
            >>> mcmc = MCMC(later, num_samples=4, warmup_steps=0, disable_progbar=True)
            >>> mcmc.run()
            >>> later.state_dict()["chains"][0]["iteration"]
            60
        """
        if not self._chains:
            if self._loaded is not None:
                return self._loaded
            raise RuntimeError(
                f"{type(self).__name__} has no chain state yet: run MCMC with it first"
            )
        return {
            "format": 1,
            "settings": next(iter(self._chains.values())).settings,
            "chains": {index: chain.state.state_dict() for index, chain in self._chains.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` at the next ``MCMC.run``.

        The settings (sampler, hyperparameters, sites, plates, data) must match; the
        chains go on from where they were: iteration, momentum, minibatch order and
        random stream included.
        """
        if not isinstance(state_dict, dict) or "chains" not in state_dict:
            raise TypeError(
                "load_state_dict expects a dict from CyclicalSGLD/CyclicalSGHMC.state_dict()"
            )
        self._loaded = state_dict

    # -- sampling --------------------------------------------------------------------------
    def _start(self, chain: _Chain) -> None:
        """First call of ``sample`` after the replay: compile the potential, then ``U~``
        and its gradient (unless the state already has them)."""
        potential = chain.potential
        if self.compile_potential and isinstance(potential, ModelPotential):
            reason = potential.compile(chain.state.theta, self.compile_potential)
            chain.backend = potential.backend or "eager"
            if reason is not None:
                fallback = (
                    "the traced graph" if potential.compiled else "the eager (slower) potential"
                )
                warnings.warn(
                    f"{type(self).__name__}: using {fallback}: {reason}. "
                    "Pass compile_potential=False to skip the attempt.",
                    stacklevel=3,
                )
        state = chain.state
        if state.started:  # resumed: the tuning and the centre come with the state
            chain.use_centre(state.centre)
            if state.tuning is not None and self.auto_step_size:
                chain.schedule = self._auto_schedule(state.tuning.step_size)
        if chain.verify_potential:
            self._verify_potential(chain)
        if state.started:
            return
        theta = state.theta
        start_steps = 0
        if self._optimizes(chain):
            try:
                theta, report = optimize_start(chain.raw_gradient, theta, chain.next_indices)
            except FloatingPointError as error:
                raise NonFiniteError(
                    f"{type(self).__name__}: {error}. Check the model's likelihood, or pass "
                    "optimize_start=False with initial_params."
                ) from None
            start_steps = report.steps
            if not report.converged:
                warnings.warn(
                    f"{type(self).__name__}: the optimisation stage before the first cycle "
                    f"stopped after {report.steps} iterations with the potential still "
                    "falling: the first cycles may still be travelling (check "
                    "pyro_csg.cycle_summary, or discard them with warmup_steps).",
                    stacklevel=3,
                )
        centre = None
        if self._uses_centre(chain):
            centre = centre_at(chain.potential, theta)
            chain.use_centre(centre)
        tuning = None
        if self.auto_step_size or self.preconditioner:
            # The noise is bounded where the sampling stage starts, its largest step.
            first = self.layout.num_exploration_steps + 1
            factor = CosineCyclical(1.0, self.steps_per_cycle)(first)
            try:
                tuning = tune(
                    chain.gradient,
                    theta,
                    chain.next_indices,
                    chain.generator,
                    first_draw_factor=factor,
                    friction=getattr(self, "friction", 1.0),
                    temperature=self.temperature,
                    precondition=self.preconditioner,
                    batches_per_epoch=min(
                        (plate.batches_per_epoch for plate in chain.potential.plates),
                        default=None,
                    ),
                    spare_batches=_spare_batches(chain.state, chain.potential.plates),
                )
            except FloatingPointError as error:
                raise NonFiniteError(f"{type(self).__name__}: {error}") from None
            if self.auto_step_size:
                chain.schedule = self._auto_schedule(tuning.step_size)
                if tuning.step_size * tuning.lambda_max < 0.1:  # ten times below curvature's
                    warnings.warn(self._noise_message(tuning), stacklevel=3)
        energy, grad = chain.gradient(theta, chain.next_indices())
        if not (torch.isfinite(energy) and torch.isfinite(grad).all()):
            raise NonFiniteError(
                f"{type(self).__name__}: the potential energy or its gradient is non-finite at "
                "the initial parameters. Check initial_params and the model's supports."
            )
        chain.state = replace(
            chain.rebased(theta, energy, grad),
            tuning=tuning,
            centre=centre,
            start_steps=start_steps,
        )

    def _auto_schedule(self, step_size: float) -> CosineCyclical:
        """The cosine schedule at the tuned ``eta_1``."""
        return CosineCyclical(step_size, self.steps_per_cycle)

    def _uses_centre(self, chain: _Chain) -> bool:
        """Whether the chain's gradients use control variates: by default for models with
        exactly one subsampled plate (the benchmark's finding: without them the minibatch
        noise decides the posterior's spread once ``N / B`` reaches the hundreds)."""
        if self.control_variates is not None:
            return self.control_variates
        return len(getattr(chain.potential, "plates", ())) == 1

    def _optimizes(self, chain: _Chain) -> bool:
        """Whether the chain starts with the optimisation stage: by default only for
        models with a subsampled plate. There the posterior is narrow and far from any
        init strategy's draw; a small model's first cycle finds its bulk by itself, and
        its MAP may lie where no posterior mass is (a hierarchical scale at 0)."""
        if self.optimize_start is not None:
            return self.optimize_start
        return bool(getattr(chain.potential, "plates", ()))

    def _noise_message(self, tuning) -> str:
        advice = (
            "use a larger subsample_size"
            if self.control_variates is not False
            else "drop control_variates=False (their variance shrinks near the mode), or use "
            "a larger subsample_size"
        )
        return (
            f"{type(self).__name__}: the minibatch gradient's noise limited the automatic "
            f"step size to {tuning.step_size:.3g} (curvature alone allowed "
            f"{1.0 / tuning.lambda_max:.3g}): larger steps would inflate the posterior's "
            "variance. The chain will mix slowly; " + advice + "."
        )

    def _verify_potential(self, chain: _Chain) -> None:
        """A resumed chain: the potential at the saved parameters, on the saved batch,
        must be what was saved (else the model or its data changed)."""
        chain.verify_potential = False
        potential = chain.potential
        if not getattr(potential, "compiled", False):
            return  # an eager potential may be stochastic: nothing to compare
        state = chain.state
        if state.centre is not None:
            # Control variates: U~ at the state differs from the raw U~ by U(theta_hat)
            # minus its estimate, and a changed prior may cancel out of it; the full-data
            # potential at the centre does not hide such a change.
            energy, _ = full_value_and_grad(potential, state.centre.theta)
            saved = state.centre.energy
        else:
            energy, _ = chain.gradient(state.theta, [cursor.last() for cursor in chain.batches])
            saved = state.energy
        if not torch.allclose(energy, saved, rtol=1e-4, atol=1e-6 * float(saved.abs()) + 1e-6):
            raise CheckpointError(
                f"the potential at the saved parameters is {float(energy):.6g} with this model "
                f"and data, but was {float(saved):.6g} when the state was saved: the model "
                "changed, so the saved chain cannot go on with it. Start over (for a "
                "checkpoint: resume=False, or another folder)."
            )

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run up to the next retained iteration and return that draw (unconstrained)."""
        chain = self._current
        if chain is None or chain.potential is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before sample()")
        try:
            if chain.replayed < chain.replay_until:
                return self._replay(chain)
            return self._sample(chain, params)
        except BaseException as error:
            self._stopped_early(chain, error)
            raise

    def _replay(self, chain: _Chain) -> dict[str, torch.Tensor]:
        """A resumed run: hand ``MCMC`` the draw the first run made, read from the store."""
        call = chain.replayed
        if call < chain.warmup_steps:
            draw = chain.last_draw  # thrown away by MCMC
        else:
            row = None
            if chain.files is not None:
                _, unconstrained, stats = chain.files.writer.read(call - chain.warmup_steps)
                row = (unconstrained, stats)
            if self._share is not None:  # rank 0 reads the store for every rank
                row = self._share.broadcast_object(row)
            unconstrained, stats = row
            theta = chain.state.theta
            draw = {
                site.name: torch.from_numpy(unconstrained[site.name]).to(theta.device)
                for site in chain.sites
            }
            if chain.kept_thetas is not None:
                chain.kept_thetas.append(chain.potential.flatten(draw))
            for key in STATS:
                chain.stats[key].append(stats[key])
        chain.replayed += 1
        chain.last_draw = draw
        return draw

    def _sample(self, chain: _Chain, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not chain.ready:
            self._start(chain)
            chain.ready = True
        state = chain.state
        if params is not chain.last_draw:
            # Someone handed us other parameters than our last draw: continue from them.
            theta = chain.potential.flatten(params).to(state.theta)
            energy, grad = chain.gradient(theta, [cursor.next() for cursor in chain.batches])
            state = chain.state = chain.rebased(theta, energy, grad)
        target = self.layout.retained_iteration(state.draws)
        new = self._advance(chain, target)
        if not torch.isfinite(new.theta).all():
            self._raise_non_finite(new.iteration, "the parameters", chain.schedule)
        draw = chain.potential.unflatten(new.theta)
        if chain.calls >= chain.warmup_steps:
            cycle = self.layout.cycle(new.iteration)
            stats = {
                "cycle": cycle,
                "iteration": new.iteration,
                "step_size": new.step_size,
                "potential_energy": new.energy.item(),
                "noise_ratio": new.step_size * self._cycle_noise(chain, new, cycle),
            }
            if chain.files is not None:
                constrained = {
                    site.name: site.transform.inv(value)
                    for site, value in zip(chain.sites, draw.values(), strict=True)
                }
                chain.files.writer.write(
                    chain.kept, constrained, draw, {"chain": chain.index, **stats}
                )
            else:
                del chain.kept_thetas[chain.kept :]
                chain.kept_thetas.append(new.theta)
            for key in STATS:
                del chain.stats[key][chain.kept :]
                chain.stats[key].append(stats[key])
        chain.state = new  # the commit: from here on the draw counts
        chain.last_draw = draw
        if chain.files is not None and new.draws % self.samples_per_cycle == 0:
            self._save_checkpoint(chain)
        return draw

    def _cycle_noise(self, chain: _Chain, state: ChainState, cycle: int) -> float:
        """The minibatch gradient's noise per unit step, ``mean(V) / (2 alpha T)``, of the
        gradient the chain uses (with control variates if on, preconditioned if so), at the
        cycle's first kept draw, from :data:`NOISE_BATCHES` extra minibatches.

        Short cycles reuse the last measurement until :data:`NOISE_SPACING` iterations
        have passed, so that it never costs more than 2% of the run's gradient
        evaluations (plain SGLD as cycles of 10 steps had paid 80%).

        The batches come from a generator seeded by a hash of the chain's state, and
        torch's global generator is set aside meanwhile, so the measurement neither moves
        the chain's own batches nor draws from its generator or the global one (which a
        ``potential_fn`` may use): the chain is the same with or without it. A model
        without a subsampled plate has an exact gradient (0); a ``potential_fn`` may be
        stochastic and is measured.
        """
        if chain.cycle_noise is not None:
            last_cycle, last_value, measured_at = chain.cycle_noise
            if last_cycle == cycle or state.iteration - measured_at < NOISE_SPACING:
                return last_value
        potential = chain.potential
        plates = tuple(getattr(potential, "plates", ()))
        if isinstance(potential, ModelPotential) and not plates:
            value = 0.0
        else:
            theta = state.theta
            tuning = state.tuning
            mass = tuning.preconditioner if tuning is not None else None
            root = torch.ones_like(theta) if mass is None else mass.sqrt()
            with _aside_from_global_rng(state):
                variance = gradient_noise(
                    chain.gradient,
                    theta,
                    _spare_batches(state, plates),
                    root,
                    batches=NOISE_BATCHES,
                )
            per_step = noise_per_step(
                variance,
                friction=getattr(self, "friction", 1.0),
                temperature=self.temperature,
                batches_per_epoch=min((p.batches_per_epoch for p in plates), default=None),
            )
            value = float(per_step.mean())
        chain.cycle_noise = (cycle, value, state.iteration)
        return value

    def _noise_warning(self, chain: _Chain, stats: dict[str, list]) -> str | None:
        """A warning when the minibatch noise dominates the injected noise at the sampling
        stage's first step (its largest), in the median cycle."""
        ratios = {}
        for cycle, step, ratio in zip(
            stats["cycle"], stats["step_size"], stats["noise_ratio"], strict=True
        ):
            if cycle not in ratios and ratio == ratio and step > 0:
                first = cycle * self.steps_per_cycle + self.layout.num_exploration_steps + 1
                ratios[cycle] = ratio / step * chain.schedule(first)
        if len(ratios) < 2:
            return None
        median = float(np.median(list(ratios.values())))
        if not median > NOISE_WARNING:
            return None
        step = chain.schedule(1)
        plates = tuple(getattr(chain.potential, "plates", ()) or ())
        batch = (
            f" or a subsample_size about {median / 0.5:.3g} times larger (the noise's "
            "variance falls as 1 / subsample_size)"
            if plates
            else ""
        )
        return (
            f"{type(self).__name__}: chain {chain.index}: the minibatch gradient's noise was "
            f"{median:.3g} times the injected Langevin noise at the sampling stage's first "
            "step (median over cycles; sample_stats['noise_ratio'] per draw), so it, not "
            "the sampler, sets the spread of the draws: the posterior's variance is "
            f"inflated. Use a step_size about {median / 0.5:.3g} times smaller (about "
            f"{step * 0.5 / median:.3g} for its largest step){batch}"
            + (
                ", or control_variates=True."
                if self.control_variates is False and len(plates) == 1
                else "."
            )
        )

    def _save_checkpoint(self, chain: _Chain) -> None:
        state = chain.state
        chain.files.save(state.state_dict(), kept=chain.kept)
        chain.checkpointed_at = state.draws

    def _advance(self, chain: _Chain, target: int) -> ChainState:
        """Run iterations ``k + 1, ..., target`` from the committed state (the hot loop);
        return the new state, uncommitted."""
        state = chain.state
        schedule, layout = chain.schedule, self.layout
        steps_per_cycle = layout.steps_per_cycle
        exploration_steps = layout.num_exploration_steps
        # The centre moves after the last exploration step (the end of a cycle if none).
        recentre_at = (exploration_steps - 1) % steps_per_cycle if state.centre is not None else -1
        # The new centre is the mean of the last tenth of the exploration stage's iterates:
        # SGD's last iterate wanders by its gradient noise, the mean of its iterates less
        # (Polyak averaging), and the control variates' noise grows with the distance from
        # the centre to the mode.
        averaged = max(1, exploration_steps // 10) if exploration_steps else 1
        average_from = (recentre_at - averaged + 1) % steps_per_cycle
        total, summed = None, 0
        centre = state.centre
        update, rescale = chain.update, chain.rescale
        gradient, batches, generator = chain.gradient, chain.batches, chain.generator
        theta, algorithm, grad, energy = state.theta, state.algorithm, state.grad, state.energy
        shape, dtype, device = theta.shape, theta.dtype, theta.device
        mass = None if state.tuning is None else state.tuning.preconditioner
        root = None if mass is None else mass.sqrt()
        # The noise correction: the injected noise less the minibatch's (measured) noise.
        noise = None if state.tuning is None else state.tuning.noise
        eta = state.step_size
        energies: list[torch.Tensor] = []
        for k in range(state.iteration + 1, target + 1):
            previous, eta = eta, schedule(k)
            try:
                valid = 0.0 < eta < math.inf
            except TypeError:  # None, a string, a tensor of several values...
                valid = False
            if not valid:
                raise ValueError(
                    f"the schedule {schedule!r} gave step size {eta!r} at iteration {k}; "
                    "step sizes must be finite and > 0"
                )
            if rescale is not None and previous == previous and eta != previous:
                algorithm = rescale(algorithm, eta / previous)
            position = (k - 1) % steps_per_cycle
            sampling = position >= exploration_steps
            xi = (
                torch.randn(shape, generator=generator, dtype=dtype, device=device)
                if sampling
                else None
            )
            if noise is not None and xi is not None:
                xi = xi * (1.0 - eta * noise).clamp_min(0.0).sqrt()
            if mass is not None:  # preconditioned: G * grad, and sqrt(G) * xi
                grad = grad * mass
                xi = None if xi is None else xi * root
            theta, algorithm = update(theta, algorithm, grad, eta, xi)
            if recentre_at >= 0 and average_from <= position <= recentre_at:
                if position == average_from or total is None:
                    total, summed = theta.clone(), 1
                else:
                    total, summed = total.add_(theta), summed + 1
            if position == recentre_at:
                centre = centre_at(chain.potential, total / summed)
                total = None
                chain.use_centre(centre)
                gradient = chain.gradient
            energy, grad = gradient(theta, [cursor.next() for cursor in batches])
            energies.append(energy)
            if len(energies) == _CHECK_EVERY or k == target:
                values = torch.stack(energies)
                if not torch.isfinite(values).all():
                    offset = int((~torch.isfinite(values)).nonzero()[0, 0])
                    self._raise_non_finite(
                        k - len(energies) + 1 + offset, "the potential", schedule
                    )
                energies.clear()
        return replace(
            chain.rebased(theta, energy, grad),
            algorithm=algorithm,
            iteration=max(target, state.iteration),
            draws=state.draws + 1,
            step_size=eta,
            centre=centre,
        )

    def _raise_non_finite(self, iteration: int, what: str, schedule: Schedule) -> None:
        eta = schedule(iteration)
        stage = self.layout.stage(iteration)
        raise NonFiniteError(
            f"{type(self).__name__}: {what} became NaN or infinite after the update of "
            f"iteration {iteration} (cycle {self.layout.cycle(iteration)}, {stage} stage, "
            f"step size {eta:.3g}). The step size is most likely too large for this model "
            "(a larger step is taken at the start of every cycle): try a step_size 10 times "
            "smaller; also check that the model's likelihood is finite for all parameter "
            "values it can reach."
        )

    def _stopped_early(self, chain: _Chain, error: BaseException) -> None:
        """Keep what the run made: checkpoint the last committed state, say where the
        draws are, and hand them over on a NonFiniteError."""
        if getattr(error, "_pyro_csg_noted", False):
            return
        kept = chain.kept
        files = chain.files
        if files is not None and chain.state.started and chain.checkpointed_at != chain.state.draws:
            try:
                self._save_checkpoint(chain)
            except Exception as failure:  # noqa: BLE001 -- report, keep the first error
                error.add_note(f"pyro-csg: writing the checkpoint failed too: {failure!r}")
        cycles = kept // self.samples_per_cycle
        note = (
            f"pyro-csg: chain {chain.index} stopped after {kept} retained draw(s) "
            f"({cycles} complete cycle(s) of {self.samples_per_cycle})."
        )
        if kept:
            note += " kernel.get_samples() returns them"
            if files is not None:
                note += (
                    f"; they are also on disk in {files.folder}, and "
                    f"pyro_csg.to_inference_data({str(files.root)!r}) reads them"
                )
            note += "."
        warmup = " of the chain, warm-up included" if chain.warmup_steps else ""
        if files is not None and chain.checkpointed_at >= 0:
            if isinstance(error, KeyboardInterrupt):
                note += (
                    " Run the same script again to resume after draw "
                    f"{chain.checkpointed_at}{warmup} (the checkpoint {files.path})."
                )
            else:
                note += (
                    f" The checkpoint {files.path} is after draw {chain.checkpointed_at}"
                    f"{warmup}: a run "
                    "with the same settings resumes there; one with other settings (say a "
                    "smaller step_size) needs another folder or "
                    "pyro_csg.Checkpoint(..., resume=False)."
                )
        elif files is None:
            note += (
                " Pass checkpoint='<folder>' to the kernel to stream the draws to disk and "
                "resume after a stop."
            )
        error.add_note(note)
        error._pyro_csg_noted = True
        if isinstance(error, NonFiniteError):
            error.samples = chain.constrained_draws()
            error.num_draws = kept

    def get_samples(self, chain: int | None = None) -> dict[str, torch.Tensor]:
        """The retained draws of a chain, constrained, as ``{site: tensor (draws, ...)}``,
        even when the run stopped early.

        ``MCMC.get_samples()`` has nothing after an exception (Ctrl-C, ``NonFiniteError``,
        an error in the model); this has every draw made before it. With ``checkpoint=``
        the draws are read from the store.

        :param int chain: which chain of the run (default: the one running, else the last).

        Example::

            >>> import torch, pyro, pyro.distributions as dist
            >>> from pyro.infer import MCMC
            >>> from pyro_csg import CyclicalSGLD
            >>> def model():
            ...     pyro.sample("z", dist.Normal(0.0, 1.0))
            >>> kernel = CyclicalSGLD(model, step_size=0.1, steps_per_cycle=20)
            >>> MCMC(kernel, num_samples=8, warmup_steps=0, disable_progbar=True).run()
            >>> kernel.get_samples()["z"].shape
            torch.Size([8])
        """
        if not self._chains:
            raise RuntimeError(f"{type(self).__name__} has not run yet")
        if chain is None:
            found = self._current or self._chains[max(self._chains)]
        elif chain in self._chains:
            found = self._chains[chain]
        else:
            raise ValueError(f"chain must be one of {sorted(self._chains)}, got {chain!r}")
        return found.constrained_draws()

    def logging(self) -> OrderedDict:
        chain = self._current
        if chain is None or chain.state.iteration == 0:
            return OrderedDict()
        state = chain.state
        return OrderedDict(
            [
                ("cycle", self.layout.cycle(state.iteration)),
                ("stage", self.layout.stage(state.iteration)),
                ("step size", f"{state.step_size:.2e}"),
                ("potential", f"{state.energy.item():.4g}"),
            ]
        )

    def diagnostics(self) -> dict[str, list]:
        """Per retained (post-warm-up) draw: cycle, iteration, step size, ``U~``, the
        minibatch noise ratio; and the draws flagged as diverging.

        ``noise_ratio`` is the minibatch gradient's noise against the injected Langevin
        noise at the draw's step size, ``eta_k * mean(V) / (2 alpha T)``, with ``V`` the
        per-coordinate variance of the gradient the chain uses, measured at each cycle's
        first kept draw on a few extra minibatches; the first call after a chain's last
        draw warns when, at the sampling stage's first step, it exceeds 1 in the median
        cycle (with the step size or batch size that would bring it to 0.5).

        ``potential_energy`` is the minibatch estimate ``U~`` at the draw (on the batch
        of the following iteration), so ``-potential_energy`` estimates the log joint.
        ``divergences`` lists the draws of cycles that sampled far above the chain's
        typical potential (a chain still travelling or running away; see
        :func:`pyro_csg.core.runaway.runaway_cycles`); the first call after a chain's last
        draw warns about them. It also makes ``az.from_pyro`` fail with a pointer to
        :func:`pyro_csg.to_inference_data`.
        """
        chain = self._current
        if chain is None:
            return {**{key: [] for key in STATS}, "divergences": _Divergences()}
        stats = {key: list(values[: chain.kept]) for key, values in chain.stats.items()}
        report = runaway_cycles(
            stats["cycle"], stats["potential_energy"], chain.layout.size, self.temperature
        )
        if report.cycles and not chain.runaway_reported:
            chain.runaway_reported = True
            warnings.warn(report.message(chain.index, self.samples_per_cycle), stacklevel=2)
        if not chain.noise_reported and chain.schedule is not None:
            chain.noise_reported = True
            message = self._noise_warning(chain, stats)
            if message:
                warnings.warn(message, stacklevel=2)
        return {**stats, "divergences": _Divergences(report.draws)}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_chains"] = {}  # rebuilt by setup() in the process that samples
        state["_current"] = None
        return state


class CyclicalSGLD(CyclicalKernel):
    r"""Cyclical stochastic-gradient Langevin dynamics (cSGLD) for :class:`pyro.infer.MCMC`.

    Zhang, Li, Zhang, Chen and Wilson, *Cyclical Stochastic Gradient MCMC for Bayesian
    Deep Learning*, ICLR 2020; Welling and Teh, *Bayesian Learning via Stochastic Gradient
    Langevin Dynamics*, ICML 2011.

    **Update.** With ``U`` the full-data potential (the negative log joint in unconstrained
    space, Jacobians included, as in Pyro's HMC), ``U~`` its minibatch estimate, ``k = 1,
    2, ...`` the iteration, ``L = steps_per_cycle`` and ``beta = exploration_fraction``::

        eta_k  = (step_size / 2) * (cos(pi * mod(k - 1, L) / L) + 1)      (Eq. 1)
        stage  = exploration while mod(k - 1, L) / L < beta, sampling after
        theta <- theta - eta_k * grad U~(theta) + [sampling] sqrt(2 * eta_k * T) * xi

    with ``xi ~ N(0, I)``. Exploration steps add no noise: they are SGD, which carries the
    chain into a new mode at the start of every cycle; the sampling steps explore that mode.

    **Step size.** By default (``step_size=None``) chosen at the start of each chain, with
    a diagonal preconditioner ``G`` (see :mod:`pyro_csg.core.tuning`): the update then uses
    ``G * grad U~`` and ``sqrt(G) * xi``, and ``eta_1 = 1 / lambda_max`` is dimensionless;
    the measured minibatch noise is subtracted from the injected noise. An explicit
    ``step_size`` is in units of ``U``, which grows with the number of data points ``N``:
    a deep-learning learning rate ``lr`` on a *mean* loss corresponds to
    ``step_size = lr / N``.

    **Large data.** For a model with one subsampled plate the gradient is by default the
    control-variate estimate around a centre moved at the end of every exploration
    stage (:mod:`pyro_csg.core.estimators`), and an optimisation stage (Adam) brings the chain
    to the posterior's bulk before the first cycle.

    **Temperature.** ``T = 1`` (default) samples the posterior; ``T < 1`` a cold posterior
    ``p(theta | data) ** (1 / T)``, as the paper's deep-learning experiments do.

    **Draws and warm-up.** One call of ``sample`` -- one draw of ``MCMC`` -- runs the
    iterations up to the next retained one. The ``samples_per_cycle`` draws of a cycle are
    evenly spaced over its sampling stage, the last at the cycle's final step. So
    ``num_samples = num_cycles * samples_per_cycle``, and ``warmup_steps`` counts draws
    that are thrown away: ``MCMC`` defaults ``warmup_steps`` to ``num_samples``, which would
    discard as many cycles as it keeps. Pass ``warmup_steps=0`` (each cycle restarts from
    SGD, so there is no adaptation to wait for) or a multiple of ``samples_per_cycle``.

    **Minibatches.** The model declares its data plate as usual,
    ``pyro.plate("data", N, subsample_size=B)``; the kernel feeds every subsampled plate a
    new random permutation each epoch, cut into batches of ``B``. The plate's ``N / B``
    scale makes ``U~`` unbiased. Local latent variables inside a subsampled plate, discrete
    latents and models without latents are refused at set-up.

    :param model: a Pyro model (give this or ``potential_fn``).
    :param potential_fn: a callable from a dict of unconstrained tensors to the (possibly
        stochastic) potential; then pass ``initial_params`` to ``MCMC``.
    :param float step_size: the largest step size ``eta_1`` of each cycle, ``> 0``;
        ``None`` (default, without ``schedule``): chosen at the start.
    :param int steps_per_cycle: ``L``, iterations per cycle (default 1000).
    :param float exploration_fraction: ``beta`` in [0, 1) (default 0.5). The paper's
        deep-learning runs use 0.8 to 0.9, which spends most of a cycle finding a mode; at
        temperature 1 a longer sampling stage gives better within-mode spread (on the
        breast-cancer logistic regression of notebook 1, the median ratio of posterior sds to
        NUTS's was 0.64 with 0.8 and 0.99 with 0.5, 20 cycles of 1000 steps).
    :param int samples_per_cycle: retained draws per cycle, at most the number of
        sampling-stage steps (default 4).
    :param float temperature: ``T > 0`` (default 1, the posterior).
    :param init_strategy: a Pyro ``init_to_*`` strategy (default ``init_to_uniform``, as
        HMC).
    :param dict transforms: optional ``{site: Transform}`` to unconstrained space; other
        sites get ``biject_to(support).inv``.
    :param schedule: a callable ``k -> eta_k`` replacing the cosine schedule, e.g.
        :class:`~pyro_csg.core.schedules.Constant` or
        :class:`~pyro_csg.core.schedules.PolynomialDecay` for plain SGLD baselines (then the
        "cycles" are blocks of ``steps_per_cycle`` iterations that set the thinning, and
        ``exploration_fraction=0`` keeps the noise on throughout).
    :param compile_potential: ``True`` (default): trace the model's potential and gradient
        into one graph at the first step; models that cannot be traced fall back to the
        eager potential with a warning. ``"inductor"``: also build that graph with
        :func:`torch.compile` (opt-in: it compiles for tens of seconds once, then fuses the
        step's kernels; see ``benchmarks/overhead.py --inductor``). ``False``: eager.
    :param checkpoint: a folder (or a :class:`~pyro_csg.Checkpoint`) for long runs: every
        retained draw is written there as it is made, the chain's state at the end of
        every cycle and when the run stops early, and running the same script again
        resumes (bit for bit on the CPU). See :mod:`pyro_csg.services.checkpoint`.
    :param bool control_variates: estimate gradients with control variates (default
        ``None``: for models with exactly one subsampled plate). Each step then costs two
        minibatch gradients and each cycle one full-data pass.
    :param bool preconditioner: a diagonal preconditioner measured at the start (default
        ``None``: with the automatic step size); with an explicit ``step_size`` it makes
        that step dimensionless.
    :param bool optimize_start: run Adam until the minibatch potential stops falling
        before the first cycle (default ``None``: for models with a subsampled plate).

    **Randomness.** Each chain draws its Langevin noise and its minibatch permutations from
    its own ``torch.Generator``, seeded from Pyro's RNG at set-up: ``pyro.set_rng_seed``
    fixes the run, and other code drawing random numbers meanwhile does not change it.

    **Early stops.** After a ``NonFiniteError``, Ctrl-C or an error in the model,
    ``kernel.get_samples()`` returns the draws made before it (and ``NonFiniteError``
    carries them as ``error.samples``); the exception's note says how many and, with
    ``checkpoint=``, where they are on disk and how to resume.

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> from pyro_csg import CyclicalSGLD
        >>> y = 1.0 + torch.randn(1000)
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y), subsample_size=50) as idx:
        ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
        >>> kernel = CyclicalSGLD(model, step_size=5e-4, steps_per_cycle=200,
        ...                       samples_per_cycle=4)
        >>> mcmc = MCMC(kernel, num_samples=5 * 4, warmup_steps=0, disable_progbar=True)
        >>> mcmc.run(y)
        >>> mcmc.get_samples()["mu"].shape
        torch.Size([20])
    """

    def _diffusion(self) -> Diffusion:
        return sgld(self.temperature)


class CyclicalSGHMC(CyclicalKernel):
    r"""Cyclical stochastic-gradient Hamiltonian Monte Carlo (cSGHMC) for :class:`pyro.infer.MCMC`.

    Zhang, Li, Zhang, Chen and Wilson, *Cyclical Stochastic Gradient MCMC for Bayesian
    Deep Learning*, ICLR 2020; Chen, Fox and Guestrin, *Stochastic Gradient Hamiltonian
    Monte Carlo*, ICML 2014.

    **Update.** With the notation of :class:`CyclicalSGLD` (``U``, ``U~``, ``k``, ``L``,
    ``beta``, ``eta_k`` of Eq. 1, ``T``) and ``alpha = friction``::

        v     <- (1 - alpha) * v - eta_k * grad U~(theta)
                 + [sampling] sqrt(2 * alpha * eta_k * T) * xi
        theta <- theta + v

    ``xi ~ N(0, I)``; the momentum ``v`` starts at 0 and persists across stages and cycles.
    The exploration stage is SGD with momentum ``1 - alpha``.

    **Step size and friction.** ``step_size = lr / N`` for a learning rate ``lr`` on a mean
    loss over ``N`` data points; ``friction = 1 - momentum`` (the default 0.1 is SGD's
    usual momentum 0.9). Minibatch gradient noise adds variance of order
    ``eta * N / (B * alpha)`` relative to the injected noise, so a smaller friction needs a
    smaller step size in the sampling stage.

    Draws, warm-up, minibatches, temperature and the other arguments are as in
    :class:`CyclicalSGLD`; read its docstring before choosing ``warmup_steps``.

    :param float friction: ``alpha`` in (0, 1] (default 0.1).

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> from pyro_csg import CyclicalSGHMC
        >>> y = 1.0 + torch.randn(1000)
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y), subsample_size=50) as idx:
        ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
        >>> kernel = CyclicalSGHMC(model, step_size=1e-4, steps_per_cycle=200,
        ...                        samples_per_cycle=4, friction=0.5)
        >>> mcmc = MCMC(kernel, num_samples=5 * 4, warmup_steps=0, disable_progbar=True)
        >>> mcmc.run(y)
        >>> mcmc.get_samples()["mu"].shape
        torch.Size([20])
    """

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
        *,
        friction: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if not (is_number(friction) and 0.0 < friction <= 1.0):
            raise ValueError(f"friction must be a number in (0, 1], got {friction!r}")
        super().__init__(model, potential_fn, **kwargs)
        self.friction = float(friction)

    def _fixed_hyperparameters(self) -> dict[str, Any]:
        return {**super()._fixed_hyperparameters(), "friction": self.friction}

    def _diffusion(self) -> Diffusion:
        return sghmc(self.friction, self.temperature)
