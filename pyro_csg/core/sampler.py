"""The cyclical SG-MCMC sampler: a chain's working parts, its start and its hot loop.

With ``U~`` the minibatch potential, ``k = 1, 2, ...`` the iteration, ``L`` the cycle's
length and ``beta`` its exploration fraction, iteration ``k`` is (in a chain that skips
its explorations, from cycle ``c_noisy`` on, skipped where ``mod(k - 1, L) < beta L`` and
at all but every ``r``-th sampling-stage position counted back from each retained one,
:func:`sampling_stride`)::

    eta_k  = schedule(k)                      (cosine: (eta_1 / 2) (cos(pi mod(k-1, L) / L) + 1))
    state  <- rescale(state, eta_k / eta_{k-1})     (the diffusion's, if it has one)
    xi     = [mod(k - 1, L) >= beta L or c(k) >= c_noisy] * N(0, I) * sqrt(max(0, 1 - eta_k V))
    theta, state <- update(theta, state, g, eta_k, xi)
    U~, g  <- estimator(theta; next minibatch)

``c(k)`` is iteration ``k``'s cycle and ``c_noisy`` the cycle from which the exploration
stage has noise too, or is skipped where each cycle's draws mix on their own (by
default from when the cycles show one mode: :func:`choose_exploration`). ``update`` is
the diffusion's (:mod:`pyro_csg.core.diffusions`), preconditioned by ``G`` when the
tuning chose one;
``V`` is the measured minibatch noise per unit step (the noise correction,
:mod:`pyro_csg.core.tuning`); the estimator (:mod:`pyro_csg.core.estimators`) may refresh
itself at fixed positions of every cycle (control variates re-centre there). The ``n``-th
draw is the state after iteration ``layout.retained_iteration(n)``.

A NaN or infinite potential does not have to end the run (:func:`advance_safely`): the
draw's iterations are undone and run again with proposals into an infinite potential
rejected, and a chain that blew up has its automatic step halved.

The functions work on a frozen :class:`~pyro_csg.core.state.ChainState` and return a new
one; nothing is committed here. :func:`run` is the whole loop without Pyro; the kernels
of :mod:`pyro_csg.adapter.kernels` call :func:`init_chain`, :func:`start` and
:func:`advance` and record the draws themselves.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch

from .diffusions import Diffusion, preconditioned
from .drift import DriftCheck
from .errors import NonFiniteError, SamplerWarning, StateMismatchError
from .estimators import Gradient, GradientEstimator, Minibatch, lean_binding
from .noise import noise_limited_message, spare_batches
from .parameters import Potential, as_potential
from .schedules import CosineCyclical, CycleLayout, Schedule
from .state import ChainState
from .subsample import EpochBatches, grown_batch
from .tuning import Tuning, optimize_start, tune

__all__ = [
    "SamplerConfig",
    "Chain",
    "RunResult",
    "init_chain",
    "start",
    "advance",
    "advance_safely",
    "backoff_message",
    "check_exploration_noise",
    "choose_exploration",
    "skipped_cycles",
    "skipping_from",
    "show_exploration",
    "sampling_stride",
    "iterations_run",
    "MIN_GAP",
    "EXPLORATION_NOISE",
    "run",
]

CHECK_EVERY = 100
"""Iterations between two checks of the potential for NaN/inf: a check reads a value back
from the device, so it is batched rather than per step."""

EXPLORATION_NOISE = ("auto", "never", "always")
"""What the exploration stage does: the paper's until the cycles show one mode, then
skipped where each cycle's draws mix on their own and noisy elsewhere; the paper's
noise-free exploration throughout; or noise from the first cycle."""


def check_exploration_noise(value: Any) -> str:
    """``value`` if it is one of :data:`EXPLORATION_NOISE`, else a clear error."""
    if not (isinstance(value, str) and value in EXPLORATION_NOISE):
        raise ValueError(
            f"exploration_noise must be one of {', '.join(map(repr, EXPLORATION_NOISE))} "
            "(once the cycles show one mode the exploration stage is skipped or gets noise, "
            f"never: the paper's, or noise from the first cycle), got {value!r}"
        )
    return value

DENSE_CYCLES = 100
"""With ``full_mass=None`` (the kernels' default) the preconditioner is dense where the
Hessian's condition number ``kappa``, once the diagonal has scaled it, exceeds this many
cycles' steps: at the automatic step (``1 / lambda_max``) the softest direction relaxes
by one e-fold in about ``kappa`` steps of SGLD, so a diagonal chain would need more than
100 cycles for it to forget once where it was (parameters identified only in
combinations). Where the first pass cannot tell (``kappa`` is ``nan``: a negative
curvature, real or from noisy minibatch columns) the second pass decides: dense where
the whitened Hessian is close enough to the identity
(:data:`~pyro_csg.core.tuning.DENSE_AGREEMENT`).
Measured on ``benchmarks/defaults.py`` (seeds 0-2, the default 1,000-step cycles):
growth ``nan`` (a direction pinned by the priors alone) and dense; the centred eight
schools and baseball's centred model ``nan`` and diagonal (funnels: once whitened, a
curvature of -0.9, or 60 times the first pass's); SIR 770-1,700, a latent time series
630-650, an AR(1) Gaussian 560, the other twelve models 1 to 180: diagonal. Not 1
cycle: on SIR (a ridge that curves towards a wall of +inf) dense chains were 3 to 5 sds
off where diagonal ones are right."""

MAX_BACKOFFS = 12
"""How often a chain's automatic step may be halved (to ``2**-12`` of the tuned step)
before a NaN or infinite potential ends the run."""


@dataclass(frozen=True)
class SamplerConfig:
    """What a chain runs: the cycles, the diffusion, the temperature, the step size
    (``schedule``; ``None``: chosen at the start, with the diagonal preconditioner), the
    gradient estimator (``step_scale`` multiplies the automatic step) and whether an
    optimisation stage finds the start
    (``start_fallback``: where it finds no minimum, the chain starts where it was, with a
    warning, instead of raising).

    ``name`` begins every message; ``suggest_control_variates`` makes the noise warnings
    name control variates (the user turned them off). ``exploration_noise`` is one of
    :data:`EXPLORATION_NOISE` (:func:`choose_exploration`). ``max_batch``: the most
    indices of the one subsampled plate a step may read where the start grows the batch
    (:func:`~pyro_csg.core.subsample.grown_batch`; ``None``: its default bound).

    Example::

        >>> from pyro_csg.core.diffusions import sgld
        >>> from pyro_csg.core.sampler import SamplerConfig
        >>> from pyro_csg.core.schedules import CycleLayout
        >>> config = SamplerConfig(CycleLayout(100, 0.5, 4), sgld())
        >>> config.auto_step_size, config.preconditioner
        (True, True)
    """

    layout: CycleLayout
    diffusion: Diffusion
    temperature: float = 1.0
    schedule: Schedule | None = None
    preconditioner: bool | None = None
    estimator: GradientEstimator = field(default_factory=Minibatch)
    step_scale: float = 1.0
    optimize_start: bool = False
    start_fallback: bool = False
    name: str = "sampler"
    suggest_control_variates: bool = False
    exploration_noise: str = "auto"
    max_batch: int | None = None
    full_mass: bool | None = False

    def __post_init__(self) -> None:
        check_exploration_noise(self.exploration_noise)
        if self.preconditioner is None:  # by default with the automatic step size
            object.__setattr__(self, "preconditioner", self.schedule is None)

    @property
    def auto_step_size(self) -> bool:
        return self.schedule is None


class Chain:
    """One chain's working parts: potential, settings, generator and minibatch cursors.

    It records nothing (the kernels and :func:`run` keep the draws); what changes from
    draw to draw is in the :class:`~pyro_csg.core.state.ChainState` handed in and out.
    """

    def __init__(
        self,
        potential: Potential,
        config: SamplerConfig,
        generator: torch.Generator,
        batches: list[EpochBatches],
    ) -> None:
        self.potential = potential
        self.config = config
        self.generator = generator
        self.batches = batches
        self.window = config.estimator.refresh_window(config.layout)
        self._cache: dict[str, tuple[Any, Any]] = {}

    def next_indices(self) -> list[torch.Tensor]:
        """The next minibatch of every subsampled plate."""
        return [cursor.next() for cursor in self.batches]

    def streams(self) -> dict:
        """The chain's random streams: its generator and minibatch cursors."""
        return {
            "generator": self.generator.get_state(),
            "batches": [cursor.state_dict() for cursor in self.batches],
        }

    def set_streams(self, streams: dict) -> None:
        """Put back streams saved by :meth:`streams`."""
        self.generator.set_state(streams["generator"])
        for cursor, saved in zip(self.batches, streams["batches"], strict=True):
            cursor.load_state_dict(saved)

    def _cached(self, name: str, key: Any, build):
        held = self._cache.get(name)
        if held is None or held[0] is not key:
            held = self._cache[name] = (key, build())
        return held[1]

    def schedule(self, state: ChainState) -> Schedule:
        """The config's schedule, or the cosine schedule at the tuned ``eta_1``."""
        if self.config.schedule is not None:
            return self.config.schedule
        if state.tuning is None:
            raise RuntimeError("the automatic step size is chosen by start()")
        steps = self.config.layout.steps_per_cycle
        return self._cached(
            "schedule", state.tuning, lambda: CosineCyclical(state.tuning.step_size, steps)
        )

    def diffusion(self, state: ChainState) -> Diffusion:
        """The config's diffusion, preconditioned by the tuned ``G`` if there is one."""
        mass = None if state.tuning is None else state.tuning.preconditioner
        return self._cached("diffusion", mass, lambda: preconditioned(self.config.diffusion, mass))

    def gradient(self, state: ChainState) -> Gradient:
        """The estimator's gradient function for the state's estimator state."""
        estimator = self.config.estimator
        return self._cached(
            "gradient", state.estimator, lambda: estimator.bind(self.potential, state.estimator)
        )

    def lean_gradient(self, state: ChainState) -> Gradient | None:
        """The estimator's gradient without ``U~`` (:func:`~pyro_csg.core.estimators.
        lean_binding`), or ``None`` where the potential or the estimator has none."""
        estimator, held = self.config.estimator, state.estimator
        return self._cached("lean", held, lambda: lean_binding(estimator, self.potential, held))

    def release(self) -> None:
        """Drop what holds the data and the traced graph (after the run)."""
        self.potential = None
        self._cache.clear()

    def resize(self, batch: int, theta: torch.Tensor | None = None) -> bool:
        """Run on batches of ``batch`` indices of the one subsampled plate (a potential
        that has ``widened``; built at ``theta`` where given) with new cursors; whether it
        could (the potential's ``widened`` gives ``None`` where it cannot)."""
        widened = getattr(self.potential, "widened", None)
        wide = None if widened is None else widened(batch, theta)
        if wide is None:
            return False
        self.potential = wide
        self.batches = [EpochBatches(plate, self.generator) for plate in wide.plates]
        self._cache.clear()
        return True

    def rewind(self, state: ChainState) -> None:
        """Set the generator and the cursors back to where they were at ``state``."""
        self.generator.set_state(state.rng_state)
        for cursor, saved in zip(self.batches, state.batches, strict=True):
            cursor.load_state_dict(saved)

    def snapshot(
        self, state: ChainState, theta: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor
    ) -> ChainState:
        """``state`` moved to ``theta``, with ``U~`` and its gradient on a batch just
        drawn, and the cursors and generator as they are now."""
        return replace(
            state,
            theta=theta,
            energy=energy,
            grad=grad,
            batches=tuple(cursor.state_dict() for cursor in self.batches),
            rng_state=self.generator.get_state(),
        )

    def restore(self, saved: dict[str, Any], like: torch.Tensor) -> ChainState:
        """A saved state (``ChainState.state_dict()``) on the device and dtype of
        ``like``, with the generator and the cursors set to it."""
        config = self.config
        state = ChainState.from_state_dict(
            saved, config.diffusion.state_type, config.estimator, like=like
        )
        if state.theta.shape != like.shape:
            raise StateMismatchError(
                f"the saved state has {state.theta.numel()} parameters, this model has "
                f"{like.numel()}"
            )
        if state.batch_size is not None and not self.resize(state.batch_size):
            raise StateMismatchError(
                f"the saved chain ran batches of {state.batch_size} indices, which this "
                "model's potential cannot evaluate"
            )
        if len(state.batches) != len(self.batches):
            raise StateMismatchError(
                f"the saved state has {len(state.batches)} subsampled plate(s), this model "
                f"has {len(self.batches)}"
            )

        def move(value):
            return None if value is None else value.to(device=like.device, dtype=like.dtype)

        self.rewind(state)
        tuning = state.tuning
        if tuning is not None:
            tuning = replace(
                tuning, preconditioner=move(tuning.preconditioner), noise=move(tuning.noise)
            )
        algorithm = type(state.algorithm)(*(move(value) for value in state.algorithm))
        return replace(
            state,
            theta=move(state.theta),
            grad=move(state.grad),
            energy=move(state.energy),
            algorithm=algorithm,
            tuning=tuning,
        )


def init_chain(
    potential: Potential, theta: torch.Tensor, config: SamplerConfig, seed: int
) -> tuple[Chain, ChainState]:
    """A chain at ``theta`` whose generator (all its noise and minibatch permutations)
    is seeded with ``seed``, and its state before the start.

    Example::

        >>> import torch
        >>> from pyro_csg.core.diffusions import sghmc
        >>> from pyro_csg.core.sampler import SamplerConfig, init_chain
        >>> from pyro_csg.core.schedules import CycleLayout
        >>> config = SamplerConfig(CycleLayout(10, 0.5, 2), sghmc(0.1))
        >>> chain, state = init_chain(lambda t, i: ((t**2).sum() / 2, t), torch.ones(2),
        ...                           config, seed=0)
        >>> state.iteration, state.started
        (0, False)
    """
    potential = as_potential(potential)
    generator = torch.Generator(device=theta.device)
    generator.manual_seed(int(seed))
    batches = [EpochBatches(plate, generator) for plate in potential.plates]
    state = ChainState(
        theta=theta,
        algorithm=config.diffusion.init(theta),
        energy=None,
        grad=None,
        iteration=0,
        draws=0,
        step_size=math.nan,
        batches=tuple(cursor.state_dict() for cursor in batches),
        rng_state=generator.get_state(),
        noisy_exploration_from=0 if config.exploration_noise == "always" else None,
    )
    return Chain(potential, config, generator, batches), state


def _converged_start(chain: Chain, theta: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The optimisation stage (Adam on ``U~``) from ``theta``: the start and its steps
    (0 when the chain falls back to ``theta``)."""
    name, fallback = chain.config.name, chain.config.start_fallback
    try:
        found, report = optimize_start(chain.potential.value_and_grad, theta, chain.next_indices)
    except FloatingPointError as error:
        if not fallback:
            raise NonFiniteError(
                f"{name}: {error}. Check the model's likelihood, or pass "
                "optimize_start=False with initial_params."
            ) from None
        report = None
    if report is not None and report.converged:
        return found, report.steps
    if report is None:  # a fallback: the stage became non-finite
        # A potential that fell until it overflowed has no minimum (a hierarchy's scale
        # going to 0), and a step measured on the way would stall the chain.
        warnings.warn(
            f"{name}: the optimisation stage before the first cycle found no minimum of the "
            "potential (it became non-finite), so the chain starts at the initial "
            "parameters. A potential unbounded below is most often a funnel: a hierarchical "
            "scale whose "
            "density grows without bound towards 0 (a centred hierarchy). First-order "
            "samplers, NUTS included, sample such a posterior badly: reparameterise it "
            "(pyro.infer.reparam.LocScaleReparam, or poutine.reparam with a non-centred "
            "parameterisation); pass optimize_start=False to skip the stage.",
            SamplerWarning,
            stacklevel=4,
        )
        return theta, 0
    warnings.warn(
        f"{name}: the optimisation stage before the first cycle "
        f"stopped after {report.steps} iterations with the potential still "
        "falling: the first cycles may still be travelling (check "
        "pyro_csg.cycle_summary, or discard them with warmup_steps).",
        SamplerWarning,
        stacklevel=4,
    )
    return found, report.steps


def _tuning(
    chain: Chain,
    state: ChainState,
    theta: torch.Tensor,
    gradient: Gradient,
    precondition: bool | None = None,
):
    """The automatic step size and preconditioner at ``theta``, measured with the chain's
    gradient (before ``step_scale``); spare batches come from ``state`` (the state
    before the start). ``precondition``: measure in preconditioned units (default: where
    the chain runs in them)."""
    config = chain.config
    plates = chain.potential.plates
    # The noise is bounded where the sampling stage starts, its largest step.
    first = config.layout.num_exploration_steps + 1
    try:
        tuning = tune(
            gradient,
            theta,
            chain.next_indices,
            chain.generator,
            first_draw_factor=CosineCyclical(1.0, config.layout.steps_per_cycle)(first),
            friction=config.diffusion.friction,
            temperature=config.temperature,
            precondition=config.preconditioner if precondition is None else precondition,
            full_mass=config.full_mass,
            dense_condition=DENSE_CYCLES * config.layout.steps_per_cycle,
            batches_per_epoch=min((plate.batches_per_epoch for plate in plates), default=None),
            spare_batches=spare_batches(state, plates),
        )
    except FloatingPointError as error:
        raise NonFiniteError(f"{config.name}: {error}") from None
    return tuning


def _choose_estimator(
    chain: Chain, state: ChainState, theta, gradient, before: dict, precondition=None
):
    """Control variates where they pay (``config.estimator`` is
    :class:`~pyro_csg.core.estimators.Automatic`): where the plain gradient's noise cut the
    step, the chain is tuned again with a centre at ``theta``, and keeps it where the step
    grew more than ``CONTROL_VARIATES_PAY`` times (a network's noise far from the centre
    can be as large with them as without). ``before``: the chain's streams before any
    tuning, which either choice then continues as if it had been made by the user (the
    same draws as ``control_variates=True`` or ``False``). ``precondition``: as
    :func:`_tuning`'s. Returns the estimator's state, its gradient, the tuning and the
    tuning with control variates where they were tried and dropped (else ``None``)."""
    estimator, potential = chain.config.estimator, chain.potential
    tuning = _tuning(chain, state, theta, gradient, precondition=precondition)
    if estimator.pays(tuning):
        centred = estimator.adopt(potential, theta)
        centred_gradient = estimator.bind(potential, centred)
        after_plain = chain.streams()
        chain.set_streams(before)  # tuned as control_variates=True would have been
        centred_tuning = _tuning(
            chain, state, theta, centred_gradient, precondition=precondition
        )
        if estimator.pays_against(tuning, centred_tuning):
            return centred, centred_gradient, centred_tuning, None
        chain.set_streams(after_plain)  # and on as control_variates=False would have
        return None, gradient, tuning, centred_tuning
    return None, gradient, tuning, None


class _Tuned(NamedTuple):
    """A start's tuned parts (:func:`_tuned`, and :func:`_grown` on larger batches):
    ``batch`` ``None`` where it is the plate's own, ``start_steps`` the optimisation
    steps run again on a grown batch."""

    batch: int | None
    theta: torch.Tensor
    start_steps: int
    estimate: Any
    gradient: Gradient
    tuning: Tuning


def _grown(chain: Chain, state: ChainState, theta, estimate, tuning: Tuning) -> _Tuned | None:
    """Where the automatic step is :data:`~pyro_csg.core.subsample.GROW_FROM` times or
    more below the mean curvature's bound, the chain on larger
    batches of its one subsampled plate (:func:`~pyro_csg.core.subsample.grown_batch`):
    the optimisation stage run again on them (the plate's own batches' noise stops it
    short: on ``benchmarks/defaults.py``'s hierarchical regression, ``tau`` at 0.36 to
    1.5 over seeds, at 1.9 on every datum), control variates centred there (dropped on
    every datum a step, where there is no noise for them to remove) and the step tuned
    there. ``None`` where the batch stays (a potential that cannot widen)."""
    plates = chain.potential.plates
    if len(plates) != 1:
        return None
    # How far below the mean curvature's bound the step is: the noise (~ 1 / B) and the
    # stiffest single batch's curvature (its spread ~ 1 / sqrt(B)) both shrink with B.
    cut = tuning.curvature_cut
    batch = grown_batch(plates[0], cut, chain.config.max_batch, theta.numel())
    if batch == plates[0].subsample_size or not chain.resize(batch, theta):
        return None
    config, steps = chain.config, 0
    if config.optimize_start:  # the narrow batch's noise stopped the first stage short
        theta, steps = _converged_start(chain, theta)
    estimator = config.estimator
    if batch == plates[0].size and getattr(estimator, "pays", None) is not None:
        estimate = None  # every datum a step: no noise for control variates to remove
    elif estimate is not None:  # centred where the chain now starts
        estimate = getattr(estimator, "adopt", estimator.init)(chain.potential, theta)
    gradient = estimator.bind(chain.potential, estimate)
    tuning = _tuning(chain, state, theta, gradient)
    return _Tuned(batch, theta, steps, estimate, gradient, tuning)


def _tuned(chain: Chain, state: ChainState, theta, estimate, gradient) -> _Tuned:
    """The start's tuning (:func:`start`): the estimator (control variates where they
    pay), the batch (grown where the noise at least halved the automatic step, with the
    start found again on it), the step and preconditioner, and the warning where the
    noise still limits the step. The batch is ``None`` where it is the plate's own."""
    config, tried, batch, steps = chain.config, None, None, 0
    if getattr(config.estimator, "pays", None) is None:
        tuning = _tuning(chain, state, theta, gradient)
    else:  # control variates where they pay
        estimate, gradient, tuning, tried = _choose_estimator(
            chain, state, theta, gradient, chain.streams()
        )
    grown = _grown(chain, state, theta, estimate, tuning) if config.auto_step_size else None
    if grown is not None:  # larger batches where the noise at least halved the step
        (batch, theta, steps, estimate, gradient, tuning), tried = grown, None
    _warn_noise_limited(config, tuning, tried, batch, stacklevel=5)
    if config.step_scale != 1.0:  # the user's factor, after the measurements that use it
        scale, stable = config.step_scale, tuning.stable_step
        tuning = replace(
            tuning,
            step_size=tuning.step_size * scale,
            stable_step=None if stable is None else stable * scale,
        )
    tuned = getattr(config.estimator, "tuned", None)  # the spread, where it needs it
    estimate = estimate if tuned is None else tuned(estimate, tuning)
    return _Tuned(batch, theta, steps, estimate, gradient, tuning)


NOISE_WARNING_CUT = 10.0
"""The curvature cut (:attr:`~pyro_csg.core.tuning.Tuning.curvature_cut`) above which the
start warns that the minibatch noise limits the automatic step: there the chain barely
moves in its cycles."""


def _warn_noise_limited(
    config: SamplerConfig,
    tuning: Tuning,
    tried: Tuning | None = None,
    batch: int | None = None,
    stacklevel: int = 5,
):
    if config.auto_step_size and tuning.curvature_cut > NOISE_WARNING_CUT:
        suggest = config.suggest_control_variates
        message = noise_limited_message(config.name, tuning, suggest, tried, batch)
        warnings.warn(message, SamplerWarning, stacklevel=stacklevel)


def start(
    chain: Chain, state: ChainState, announce: Callable[[str], None] | None = None
) -> ChainState:
    """The state before the first cycle: the optimisation stage (if the config asks for
    it), the estimator's state, the automatic step size and preconditioner (if asked
    for), and ``U~`` with its gradient at the start. A started state is returned as it is.

    ``announce(stage)`` is told each slow stage as it begins (``"optimising"``,
    ``"tuning"``), for a progress bar.
    """
    if state.started:
        return state
    config = chain.config
    say = announce or (lambda stage: None)
    theta, start_steps = state.theta, 0
    if config.optimize_start and theta.numel():  # a potential without parameters: nothing
        say("optimising")
        theta, start_steps = _converged_start(chain, theta)
    estimator_state = config.estimator.init(chain.potential, theta)
    gradient = config.estimator.bind(chain.potential, estimator_state)
    tuning = batch = None
    if config.auto_step_size or config.preconditioner:
        say("tuning")
        batch, theta, steps, estimator_state, gradient, tuning = _tuned(
            chain, state, theta, estimator_state, gradient
        )
        start_steps += steps
    elif getattr(config.estimator, "pays", None) is not None:
        # An explicit step: the same measurement (in the preconditioned units where the
        # posterior's sd is 1) chooses the estimator, not the step, and the streams are
        # put back, so the chain draws as control_variates=True or False would.
        say("tuning")
        before = chain.streams()
        try:
            estimator_state, gradient, *_ = _choose_estimator(
                chain, state, theta, gradient, before, precondition=True
            )
        except NonFiniteError:  # a measurement the explicit step does not need: centred,
            estimator_state = config.estimator.adopt(chain.potential, theta)  # as before
            gradient = config.estimator.bind(chain.potential, estimator_state)
        chain.set_streams(before)
    energy, grad = gradient(theta, chain.next_indices())
    if not (torch.isfinite(energy) and torch.isfinite(grad).all()):
        raise NonFiniteError(
            f"{config.name}: the potential energy or its gradient is non-finite at "
            "the initial parameters. Check initial_params and the model's supports."
        )
    return replace(
        chain.snapshot(state, theta, energy, grad),
        tuning=tuning,
        estimator=estimator_state,
        start_steps=start_steps,
        batch_size=batch,
    )


def non_finite_error(config: SamplerConfig, schedule: Schedule, k: int, what: str):
    """The :class:`NonFiniteError` for ``what`` becoming NaN/inf at iteration ``k``
    (which it carries as ``error.iteration``)."""
    layout = config.layout
    if config.auto_step_size:
        advice = (
            "The automatic step size (halved each time the chain blew up) could not keep "
            "it finite: check that the model's potential is finite wherever the chain can "
            "go, or reparameterise it (pyro.infer.reparam.LocScaleReparam for a "
            "hierarchy's scale); step_scale=0.1 starts from a 10 times smaller automatic "
            "step, preconditioner kept."
        )
    else:
        advice = (
            "The step size is most likely too large for this model (a larger step is taken "
            "at the start of every cycle): try a step_size 10 times smaller (an explicit "
            "step_size is in units of the potential, lr / N for a learning rate on a mean "
            "loss over N data, and runs without the preconditioner), or leave step_size out "
            "for the automatic step; also check that the model's likelihood is finite for "
            "all parameter values it can reach."
        )
    error = NonFiniteError(
        f"{config.name}: {what} became NaN or infinite after the update of "
        f"iteration {k} (cycle {layout.cycle(k)}, {layout.stage(k)} stage, "
        f"step size {schedule(k):.3g}). " + advice
    )
    error.iteration = k
    return error


def _step_size(schedule: Schedule, k: int) -> float:
    eta = schedule(k)
    try:
        valid = 0.0 < eta < math.inf
    except TypeError:  # None, a string, a tensor of several values...
        valid = False
    if not valid:
        raise ValueError(
            f"the schedule {schedule!r} gave step size {eta!r} at iteration {k}; "
            "step sizes must be finite and > 0"
        )
    return eta


class _FiniteWatch:
    """Collects ``U~`` and checks it for NaN/inf every :data:`CHECK_EVERY` iterations."""

    def __init__(self, config: SamplerConfig, schedule: Schedule) -> None:
        self.config, self.schedule, self.energies = config, schedule, []

    def add(self, k: int, energy: torch.Tensor, last: bool) -> None:
        energies = self.energies
        energies.append(energy)
        if len(energies) == CHECK_EVERY or last:
            values = torch.stack(energies)
            if not torch.isfinite(values).all():
                offset = int((~torch.isfinite(values)).nonzero()[0, 0])
                k = k - len(energies) + 1 + offset
                raise non_finite_error(self.config, self.schedule, k, "the potential")
            energies.clear()


MAX_ENERGY_RISE = 1000.0
"""A rise of ``U~`` by more than this in one step is a divergence in a careful rerun
(NUTS's threshold on a trajectory's energy error, Pyro's and Stan's): a chain that
blew up climbs by orders of magnitude a step, a sound one by about ``sqrt(D)``."""


def _diverged(new_energy, energy, proposal, new_grad) -> bool:
    """Whether a careful rerun rejects a proposal: a NaN or infinite potential, gradient
    or parameter, or a potential that jumped by more than :data:`MAX_ENERGY_RISE`."""
    if not (torch.isfinite(new_energy) and torch.isfinite(proposal).all()):
        return True
    if not torch.isfinite(new_grad).all():
        return True
    return bool(new_energy - energy > MAX_ENERGY_RISE)


MIN_GAP = 25
"""The fewest iterations a cycle that skips its exploration stage runs from one retained
draw to the next (:func:`sampling_stride`). Measured on ``benchmarks/large_n.py``'s
logistic regression (N = 1e4, 1,000 draws, cSGHMC, skipping): cycles of 100 iterations
(12.5 between draws) gave an ESS of 822 and sd ratios 0.98-1.08, like cycles of 1,000;
cycles of 62 (7.75 between draws) an ESS of 648 and sds up to 1.23 times too wide, the
momentum (friction 0.1: about 10 iterations to forget) not keeping up with the falling
step. 25 leaves twice the margin."""


def sampling_stride(layout: CycleLayout) -> int:
    """``r``: a cycle that skips its exploration stage runs every ``r``-th position of its
    sampling stage (:meth:`~pyro_csg.core.schedules.CycleLayout.idle_positions`), the most
    that keeps :data:`MIN_GAP` iterations between two retained draws.

    Where the sampling stage decorrelates a cycle's draws by itself (the condition to skip),
    its length is what sets the cost per draw, not the draws' quality: the step sizes of a
    cycle ``r`` times shorter give the same draws for ``1 / r`` of the iterations, down to
    the gap the momentum needs. The default layout (1,000 iterations, half exploring,
    4 draws) has 125 between draws: ``r = 5``. Measured on the logistic regression of
    ``benchmarks/large_n.py`` (N = 1e4, 1,000 draws, cSGHMC): an ESS of 745, 810 and 629
    (seeds 0-2) in about a quarter of the iterations (34,000, not 130,000), where the
    whole sampling stage gave 828 and 879 (seeds 0, 1); on the hierarchical logistic
    regression of ``benchmarks/defaults.py`` (100 cycles) a least ESS of 203 in 48 s over
    its 90 skipping cycles, against 240 in 96 s. The draws come out a little wider (N =
    1e6, 1,000 draws, 3 seeds: sd ratios 1.030 on average over the 11 coordinates, 1.017
    without the stride; the first draw of a cycle, after the largest steps, the widest,
    with or without it: on a 5-D standard Gaussian with exact gradients, 600 cycles of
    cSGHMC, 1.041 with the stride and 1.066 without, all draws 1.026 and 1.028).
    :func:`choose_exploration` uses it where
    the draws mixed within their cycles with a margin
    (:attr:`~pyro_csg.core.drift.DriftReport.mixes_with_margin`), and 1 otherwise.

    Example::

        >>> from pyro_csg.core.sampler import sampling_stride
        >>> from pyro_csg.core.schedules import CycleLayout
        >>> sampling_stride(CycleLayout(1000, 0.5, 4)), sampling_stride(CycleLayout(200, 0.5, 4))
        (5, 1)
    """
    positions = (layout.num_exploration_steps - 1, *layout.retained_positions)
    gap = min(b - a for a, b in zip(positions, positions[1:], strict=False))
    return max(1, gap // MIN_GAP)


def _exploration(config: SamplerConfig, state: ChainState) -> tuple[int, tuple[bool, ...] | None]:
    """``(noise_free, idle)``: how many of a cycle's first positions run without noise,
    and which positions do not run at all (``None``: all run) (:func:`choose_exploration`):
    the paper's exploration stage until it stops being noise-free, then the sampling
    stage's noise in it, or, in a cycle where the sampling stage mixes on its own, no
    exploration stage and every ``state.sampling_stride``-th sampling-stage position."""
    layout = config.layout
    if state.noisy_exploration_from is None:
        return layout.num_exploration_steps, None
    if not state.skipping_exploration:
        return 0, None
    return 0, layout.idle_positions(state.sampling_stride)


def iterations_run(config: SamplerConfig, state: ChainState, target: int) -> int:
    """How many of the iterations ``k + 1, ..., target`` :func:`advance` runs from
    ``state`` (all of them, except in a cycle that skips its exploration stage).

    Example::

        >>> from dataclasses import replace
        >>> import torch
        >>> from pyro_csg.core.diffusions import sgld
        >>> from pyro_csg.core.sampler import SamplerConfig, init_chain, iterations_run
        >>> from pyro_csg.core.schedules import CycleLayout
        >>> config = SamplerConfig(CycleLayout(1000, 0.5, 4), sgld())
        >>> _, state = init_chain(lambda t, i: ((t**2).sum() / 2, t), torch.zeros(2), config, 0)
        >>> iterations_run(config, state, 625)  # to the first draw, exploration included
        625
        >>> skipping = replace(
        ...     state, noisy_exploration_from=0, skipping_exploration=True, sampling_stride=5
        ... )
        >>> iterations_run(config, skipping, 625)  # positions 504, 509, ..., 624
        25
    """
    _, idle = _exploration(config, state)
    if idle is None:
        return target - state.iteration
    steps = config.layout.steps_per_cycle
    return sum(not idle[(k - 1) % steps] for k in range(state.iteration + 1, target + 1))


MAX_NOISE_SCALES = 4096
"""How many step sizes' noise scales :func:`_injected` keeps (a cycle has at most
``steps_per_cycle`` step sizes, and every cycle the same ones)."""


def _injected(theta: torch.Tensor, generator, eta: float, noise, scales: dict) -> torch.Tensor:
    """``xi``: ``N(0, I)`` less the minibatch's measured noise ``V`` (the noise
    correction), ``sqrt(max(0, 1 - eta V))`` times it.

    ``scales`` holds that factor by ``eta`` for one ``V``: the cosine schedule gives every
    cycle the same step sizes, and four small ops a step (a multiplication by a Python
    number costs twice one by a tensor on a small model) become a look-up, with the same
    values. ``torch.empty_like(theta).normal_`` is ``torch.randn``'s own stream."""
    xi = torch.empty_like(theta).normal_(generator=generator)
    if noise is None:
        return xi
    scale = scales.get(eta)
    if scale is None:
        if len(scales) >= MAX_NOISE_SCALES:
            scales.clear()
        scale = scales[eta] = (1.0 - eta * noise).clamp_min(0.0).sqrt()
    return xi * scale


def _noise_scales(chain: Chain, state: ChainState) -> tuple[torch.Tensor | None, dict]:
    """The minibatch noise ``V`` the state's tuning measured, and :func:`_injected`'s
    store of its scales (kept while ``V`` is the same tensor)."""
    noise = None if state.tuning is None else state.tuning.noise
    return noise, chain._cached("noise_scales", noise, dict)


def advance(chain: Chain, state: ChainState, target: int, careful: bool = False) -> ChainState:
    """Run iterations ``k + 1, ..., target`` from ``state`` (the hot loop; see the module
    docstring) and return the new state, one draw further, uncommitted.

    ``careful``: a proposal where the potential, its gradient or the parameters are NaN
    or infinite, or where the potential rose by more than :data:`MAX_ENERGY_RISE`, is
    rejected (as NUTS rejects a divergent trajectory): the chain stays, the diffusion's
    ``reject`` drops its momentum, ``state.rejected`` counts it. Otherwise the potential
    is checked every :data:`CHECK_EVERY` iterations (a NaN or inf raises NonFiniteError),
    and between checks a ``lean`` potential computes the gradient alone (``U~`` is finite
    wherever ``theta`` is: :func:`pyro_csg.adapter.graph.lean`).
    """
    config, potential, estimator = chain.config, chain.potential, chain.config.estimator
    schedule, diffusion = chain.schedule(state), chain.diffusion(state)
    update, rescale, reject = diffusion.update, diffusion.rescale, diffusion.reject
    steps, (exploration, idle) = config.layout.steps_per_cycle, _exploration(config, state)
    (first, last), generator = chain.window, chain.generator
    estimate, gradient = state.estimator, chain.gradient(state)
    lean = None if careful else chain.lean_gradient(state)  # the gradient alone
    theta, algorithm, energy, grad = state.theta, state.algorithm, state.energy, state.grad
    noise, scales = _noise_scales(chain, state)  # the minibatch's V; sqrt(1 - eta V) by eta
    watch, eta, rejected = _FiniteWatch(config, schedule), state.step_size, 0
    for k in range(state.iteration + 1, target + 1):
        position = (k - 1) % steps
        if idle is not None and idle[position]:
            continue
        previous, eta = eta, _step_size(schedule, k)
        if rescale is not None and previous == previous and eta != previous:
            algorithm = rescale(algorithm, eta / previous)
        xi = _injected(theta, generator, eta, noise, scales) if position >= exploration else None
        proposal, moved = update(theta, algorithm, grad, eta, xi)
        held = estimate, gradient
        if first <= position <= last:
            ends = position == last
            estimate = estimator.refresh(potential, estimate, proposal, position == first, ends)
            gradient = estimator.bind(potential, estimate)
            lean = lean and lean_binding(estimator, potential, estimate)
        # U~ only where it is checked (every CHECK_EVERY-th iteration) or kept (the draw).
        quick = lean is not None and k != target and k % CHECK_EVERY
        new_energy, new_grad = (lean if quick else gradient)(proposal, chain.next_indices())
        if careful and _diverged(new_energy, energy, proposal, new_grad):
            rejected += 1  # stay; the estimator as it was; no momentum into the wall
            estimate, gradient = held
            algorithm = algorithm if reject is None else reject(algorithm)
            continue
        theta, algorithm, energy, grad = proposal, moved, new_energy, new_grad
        if not (careful or quick):
            watch.add(k, energy, k == target or lean is not None)
    new = replace(
        chain.snapshot(state, theta, energy, grad),
        algorithm=algorithm,
        iteration=max(target, state.iteration),
        draws=state.draws + 1,
        step_size=eta,
        estimator=estimate,
        rejected=state.rejected + rejected,
    )
    if not torch.isfinite(new.theta).all():
        raise non_finite_error(config, schedule, new.iteration, "the parameters")
    return new


def choose_exploration(config: SamplerConfig, state: ChainState, drift: DriftCheck) -> ChainState:
    """The state to start the next draw from: with ``exploration_noise="auto"``, at each
    cycle's start, what its exploration stage does.

    1. Until the retained draws' cycles show one mode and no trend
       (:attr:`~pyro_csg.core.drift.DriftReport.one_mode_arrived`), the paper's
       noise-free exploration. From the cycle where they do, ``noisy_exploration_from``
       (kept in the state, so that a resumed run makes the same choice), it stops:
    2. where each cycle's draws spread over most of the posterior on their own
       (:attr:`~pyro_csg.core.drift.DriftReport.mixes_within_cycles`, decided at the
       same cycle: ``skipping_exploration``; :func:`skipped_cycles` counts them), every
       cycle skips its exploration stage, and of its sampling stage runs every ``r``-th
       position counted back from each retained one (``sampling_stride``, kept in the
       state: :func:`sampling_stride` where the draws spread with a margin,
       :attr:`~pyro_csg.core.drift.DriftReport.mixes_with_margin`, else 1; the
       step sizes of a cycle ``r`` times shorter; the schedule, the retained positions and
       the iteration count are unchanged), the chain going on from where the last cycle's
       sampling stage ended;
    3. otherwise the exploration stage adds the sampling stage's Langevin noise.

    Both choices are made once and kept in the state, so that a run continued from its
    ``state_dict`` alone (without its draws to show the drift check) goes on as it was.

    Why 3: on one mode the noise-free exploration finds nothing new, and it pulls every
    cycle to the mode, from where the sampling stage's small steps do not spread the
    chain out again along a slow direction: measured on ``benchmarks/defaults.py``'s SIR
    model (cSGHMC, seed 0, 50 cycles), ``R0``'s sd was 0.65 of the exact one with
    noise-free exploration and 1.01 with the noise on from cycle 10. Why 2: where the
    sampling stage decorrelates the draws by itself, the exploration's iterations buy
    nothing: on the logistic regression of ``benchmarks/large_n.py`` (N = 1e4, 1,000
    draws, cSGHMC) skipping gave an ESS of 828 and 879 (seeds 0, 1) in 43 s, against 882
    in 79 s with the noisy exploration (the stride: :func:`sampling_stride`). Where the
    draws do not mix within a cycle (a slow direction), the noisy exploration moves the
    chain further per iteration than the sampling stage's smaller steps, and stays.
    Several modes keep the paper's noise-free exploration, which finds them.

    From the switch on ``drift`` no longer tests whether the cycles mix within themselves
    (:meth:`~pyro_csg.core.drift.DriftCheck.stop_exploring`): their starts are no longer
    pulled to the mode, so cycles whose draws are close together are simply short.
    """
    layout = config.layout
    if (
        config.exploration_noise == "auto"
        and state.noisy_exploration_from is None
        and layout.num_exploration_steps
        and state.draws % layout.samples_per_cycle == 0
    ):
        report = drift.report()
        if report is not None and report.one_mode_arrived:
            cycle, skip = state.draws // layout.samples_per_cycle, report.mixes_within_cycles
            stride = sampling_stride(layout) if skip and report.mixes_with_margin else 1
            state = replace(
                state,
                noisy_exploration_from=cycle,
                skipping_exploration=skip,
                sampling_stride=stride,
            )
    show_exploration(state, drift)
    return state


def show_exploration(state: ChainState, drift: DriftCheck) -> None:
    """Tell ``drift`` what the state chose (:func:`choose_exploration`): from the switch
    on its cycles no longer start with the noise-free exploration, and those from
    :func:`skipping_from` on do not restart at all. A resumed run calls it before its
    replayed draws come, since its state made the choice already.

    Example::

        >>> from dataclasses import replace
        >>> import torch
        >>> from pyro_csg.core.diffusions import sgld
        >>> from pyro_csg.core.drift import DriftCheck
        >>> from pyro_csg.core.sampler import SamplerConfig, init_chain, show_exploration
        >>> from pyro_csg.core.schedules import CycleLayout
        >>> config = SamplerConfig(CycleLayout(100, 0.5, 4), sgld())
        >>> _, state = init_chain(lambda t, i: ((t**2).sum() / 2, t), torch.zeros(2), config, 0)
        >>> drift = DriftCheck()
        >>> show_exploration(replace(state, noisy_exploration_from=10), drift)
        >>> drift.exploring
        False
    """
    if state.noisy_exploration_from is not None:
        drift.stop_exploring(skipping_from(state))


def skipping_from(state: ChainState) -> int | None:
    """The first cycle that skips its exploration stage (``None``: none does).

    Example::

        >>> from dataclasses import replace
        >>> import torch
        >>> from pyro_csg.core.diffusions import sgld
        >>> from pyro_csg.core.sampler import SamplerConfig, init_chain, skipping_from
        >>> from pyro_csg.core.schedules import CycleLayout
        >>> config = SamplerConfig(CycleLayout(100, 0.5, 4), sgld())
        >>> _, state = init_chain(lambda t, i: ((t**2).sum() / 2, t), torch.zeros(2), config, 0)
        >>> skipping_from(replace(state, noisy_exploration_from=10, skipping_exploration=True))
        10
        >>> skipping_from(replace(state, noisy_exploration_from=10)) is None  # noise instead
        True
    """
    return state.noisy_exploration_from if state.skipping_exploration else None


def skipped_cycles(config: SamplerConfig, state: ChainState) -> int:
    """How many of the cycles begun so far skipped their exploration stage
    (:func:`choose_exploration`): every one from ``noisy_exploration_from`` on, or none.

    Example::

        >>> from dataclasses import replace
        >>> import torch
        >>> from pyro_csg.core.diffusions import sgld
        >>> from pyro_csg.core.sampler import SamplerConfig, init_chain, skipped_cycles
        >>> from pyro_csg.core.schedules import CycleLayout
        >>> config = SamplerConfig(CycleLayout(100, 0.5, 4), sgld())
        >>> _, state = init_chain(lambda t, i: ((t**2).sum() / 2, t), torch.zeros(2), config, 0)
        >>> state = replace(state, noisy_exploration_from=10, skipping_exploration=True)
        >>> skipped_cycles(config, replace(state, draws=49))  # cycles 10, 11 and 12
        3
    """
    if not state.skipping_exploration:
        return 0
    begun = -(-state.draws // config.layout.samples_per_cycle)  # the current one included
    return begun - state.noisy_exploration_from


MAX_REJECTED = 0.5
"""The share of a draw's iterations whose proposals may be rejected before
:func:`advance_safely` takes the chain for stuck where the step is unstable (a chain
near a wall of the support has some proposals rejected, a chain that blew up has them
all) and halves the automatic step."""


def advance_safely(
    chain: Chain,
    state: ChainState,
    target: int,
    on_backoff: Callable[[NonFiniteError, float], None] | None = None,
) -> ChainState:
    """:func:`advance`, where a NaN or infinite potential does not end the run when the
    sampler can recover.

    The draw's iterations run fast; if the potential or the parameters become NaN or
    infinite, they are undone (the generator and the minibatch cursors rewound) and run
    again ``careful``: a proposal into a region where the potential is infinite (a wall
    of the support) is rejected and counted, and the chain goes on. More than a share
    :data:`MAX_REJECTED` of the draw's iterations rejected means the step is unstable
    here: with
    the automatic step size the iterations are undone again and the tuned ``eta_1`` is
    halved for the rest of the run (``state.backoffs`` counts it, ``on_backoff(error,
    new_step)`` hears of it), up to :data:`MAX_BACKOFFS` times. With a step the user
    chose, or past that, the :class:`NonFiniteError` is raised.
    """
    try:
        return advance(chain, state, target)
    except NonFiniteError as error:
        failure = error
    while True:
        chain.rewind(state)
        new = advance(chain, state, target, careful=True)
        ran = iterations_run(chain.config, state, target)
        if new.rejected - state.rejected <= MAX_REJECTED * ran:
            return new
        if not chain.config.auto_step_size or state.backoffs >= MAX_BACKOFFS:
            if state.backoffs:
                failure.add_note(
                    f"pyro-csg: the automatic step size had been halved {state.backoffs} "
                    f"time(s) already, to {state.tuning.step_size:.3g}."
                )
            raise failure
        chain.rewind(state)
        step = state.tuning.step_size / 2
        tuning = replace(state.tuning, step_size=step)
        state = replace(state, tuning=tuning, backoffs=state.backoffs + 1)
        if on_backoff is not None:
            on_backoff(failure, step)


def backoff_message(name: str, backoffs: list[tuple[int, float]]) -> str:
    """The warning after :func:`advance_safely` halved the step: ``backoffs`` holds the
    iteration and the new ``eta_1`` of each halving; ``name`` starts the message."""
    iterations = [iteration for iteration, _ in backoffs]
    distinct = list(dict.fromkeys(iterations))  # one failure may cost several halvings
    shown = distinct if len(distinct) <= 8 else [*distinct[:8], "..."]
    return (
        f"{name}: the potential became NaN or infinite {len(iterations)} time(s) with the "
        f"automatic step size (after iteration(s) {shown}); each time the iterations "
        f"since the last draw were undone and the step halved, from {backoffs[0][1] * 2:.3g} "
        f"to {backoffs[-1][1]:.3g} now. The draws are those of the smaller step "
        "(sample_stats['backoffs'] marks where it happened), and they may be too narrow: "
        "the chain had gone where the curvature is steeper, and the smaller step takes it "
        "there less often (a 2-D banana: sds 0.3 to 0.9 of the exact posterior's, cSGLD's "
        "0.4 to 0.8 with cycles four times longer). A posterior whose curvature "
        "grows away from the start (a funnel, a hierarchy's scale near 0, a curved ridge) "
        "often does this: reparameterise it (pyro.infer.reparam.LocScaleReparam) or check "
        "the model's supports; for a model of a few parameters and no large data, NUTS "
        "is the better tool."
    )


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` made: the draws ``(num_draws, D)`` of the flat ``theta``, each
    draw's ``cycle``, ``iteration``, ``step_size`` and ``potential_energy`` (``U~``),
    and the chain's last state (to continue it, or to save it)."""

    draws: torch.Tensor
    stats: dict[str, list]
    state: ChainState


def run(
    potential: Potential,
    theta: torch.Tensor,
    config: SamplerConfig,
    num_draws: int,
    *,
    seed: int | None = None,
) -> RunResult:
    """Run one chain from ``theta`` for ``num_draws`` draws, without Pyro.

    ``potential`` is anything :func:`~pyro_csg.core.parameters.as_potential` accepts (a
    plain function ``(theta, indices) -> (U~, grad U~)`` included). ``seed`` seeds the
    chain's generator; ``None`` draws it from torch's global generator, as the kernels
    do, so that ``torch.manual_seed(s)`` then ``run(...)`` equals ``pyro.set_rng_seed(s)``
    then ``MCMC(CyclicalSGLD(potential_fn=...), warmup_steps=0)``, bit for bit.

    Example::

        >>> import torch
        >>> from pyro_csg.core.diffusions import sgld
        >>> from pyro_csg.core.sampler import SamplerConfig, run
        >>> from pyro_csg.core.schedules import CycleLayout
        >>> def gaussian(theta, indices):  # U = |theta|^2 / 2
        ...     return (theta**2).sum() / 2, theta.clone()
        >>> config = SamplerConfig(CycleLayout(200, 0.5, 4), sgld())
        >>> result = run(gaussian, torch.zeros(2), config, num_draws=400, seed=0)
        >>> result.draws.shape, bool(abs(result.draws.std(0) - 1).max() < 0.2)
        (torch.Size([400, 2]), True)
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), device=theta.device).item())
    chain, state = init_chain(potential, theta, config, seed)
    state = start(chain, state)
    draws, stats = [], {"cycle": [], "iteration": [], "step_size": [], "potential_energy": []}
    drift = DriftCheck(config.layout.num_exploration_steps > 0)
    for _ in range(num_draws):
        state = choose_exploration(config, state, drift)
        state = advance_safely(chain, state, config.layout.retained_iteration(state.draws))
        draws.append(state.theta)
        drift.add(config.layout.cycle(state.iteration), state.theta)
        stats["cycle"].append(config.layout.cycle(state.iteration))
        stats["iteration"].append(state.iteration)
        stats["step_size"].append(state.step_size)
        stats["potential_energy"].append(state.energy.item())
    empty = theta.new_zeros((0, theta.numel()))
    return RunResult(torch.stack(draws) if draws else empty, stats, state)
