"""The minibatch gradient's noise, measured beside the chain without moving it.

``noise_ratio = eta_k * mean(V) / (2 alpha T)`` is the minibatch gradient's noise
against the injected Langevin noise at step ``eta_k`` (``V`` the per-coordinate variance
of the gradient the chain uses, preconditioned if so; ``alpha`` the diffusion's
friction, 1 for SGLD). :class:`CycleNoise` measures it at each cycle's first kept draw on
:data:`NOISE_BATCHES` extra minibatches; :func:`noise_warning` says, after a run, when
it dominated, and :func:`noise_limited_message` when it limited the automatic step.
:meth:`CycleNoise.corrected` moves the automatic step's noise correction towards what
the measurements find at the draws.

The extra minibatches come from a generator seeded by a hash of the chain's state
(:func:`spare_batches`), and torch's global generator is set aside meanwhile
(:func:`aside_from_global_rng`), so the measurement neither moves the chain's own
batches nor draws from its generator or the global one (which a ``potential_fn`` may
use): the chain is the same with or without it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch

from .mass import root_of
from .schedules import CycleLayout, Schedule
from .state import ChainState
from .subsample import SubsamplePlate
from .tuning import Tuning, gradient_noise, noise_per_step

__all__ = [
    "NOISE_BATCHES",
    "NOISE_SPACING",
    "NOISE_WEIGHT",
    "NOISE_WARNING",
    "CycleNoise",
    "aside_from_global_rng",
    "spare_batches",
    "noise_warning",
    "noise_limited_message",
]

NOISE_BATCHES = 8
"""Minibatches at which each cycle's gradient noise is measured (at its first kept draw)."""
NOISE_SPACING = 50 * NOISE_BATCHES
"""Iterations between two noise measurements at the least (at most 2% extra gradients)."""
NOISE_WEIGHT = 0.2
"""How far each measurement moves the noise correction's ``V`` (:meth:`CycleNoise.corrected`):
an average over about the last five measurements (eight minibatches each)."""
NOISE_WARNING = 1.0
"""The ``noise_ratio`` at the sampling stage's first step above which a run warns."""


def _seed_of(state: ChainState, salt: bytes = b"") -> int:
    digest = hashlib.blake2b(state.rng_state.cpu().numpy().tobytes(), digest_size=8, salt=salt)
    return int.from_bytes(digest.digest(), "little") >> 2


@contextmanager
def aside_from_global_rng(state: ChainState) -> Iterator[None]:
    """Run a measurement with torch's global generator forked and reseeded from the
    chain's state, and restored after: a ``potential_fn`` that draws its own noise from
    the global generator (notebook 2's) then gets fresh noise for the measurement and
    leaves the chain's draws as they would be without it."""
    device = state.theta.device
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(_seed_of(state, b"aside"))
        yield


def spare_batches(
    state: ChainState, plates: Sequence[SubsamplePlate]
) -> Callable[[], list[torch.Tensor]]:
    """Random minibatches (one per plate a call) that leave the chain alone: they come
    from a generator seeded by a hash of the chain's state, not from the chain's batches
    or generator. The automatic step's batch curvatures and the noise diagnostic use them.

    Example::

        >>> import torch
        >>> from pyro_csg.core.noise import spare_batches
        >>> from pyro_csg.core.state import ChainState
        >>> from pyro_csg.core.subsample import SubsamplePlate
        >>> state = ChainState(torch.zeros(1), (), None, None, 0, 0, 0.0, (),
        ...                    torch.Generator().get_state())
        >>> batches = spare_batches(state, [SubsamplePlate("data", 100, 10, "cpu")])
        >>> [index.shape for index in batches()]
        [torch.Size([10])]
    """
    device = state.theta.device
    generator = torch.Generator(device=device)
    generator.manual_seed(_seed_of(state))

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


class CycleNoise:
    """The minibatch gradient's noise per unit step, ``mean(V) / (2 alpha T)``, of the
    gradient the chain uses, at each cycle's first kept draw.

    Short cycles reuse the last measurement until :data:`NOISE_SPACING` iterations have
    run, so that it never costs more than 2% of the run's gradient evaluations (plain
    SGLD as cycles of 10 steps had paid 80%); given the ``layout``, a cycle that skips
    positions (:meth:`~pyro_csg.core.schedules.CycleLayout.idle_positions`) counts the
    iterations it runs (with the defaults' stride a skipping cycle runs 100 of its 1,000
    and measured at every cycle's first draw, it paid 8%). A potential that declares itself
    ``deterministic`` without a subsampled plate (a Pyro model's) has an exact gradient:
    0; a ``potential_fn`` may be stochastic and is measured.

    Example::

        >>> import torch
        >>> from pyro_csg.core.noise import CycleNoise
        >>> from pyro_csg.core.parameters import GradientPotential
        >>> from pyro_csg.core.state import ChainState
        >>> state = ChainState(torch.zeros(2), (), None, None, 1, 0, 0.1, (),
        ...                    torch.Generator().get_state())
        >>> def noisy(theta, indices):  # grad = theta + N(0, 1) noise
        ...     return theta.sum(), theta + torch.randn(2)
        >>> value = CycleNoise().measure(noisy, GradientPotential(noisy), state, 0)
        >>> 0.2 < value < 1.0  # V = 1, over 2 alpha T = 2
        True
    """

    def __init__(
        self, friction: float = 1.0, temperature: float = 1.0, layout: CycleLayout | None = None
    ) -> None:
        self.friction, self.temperature, self.layout = friction, temperature, layout
        self.last: tuple[int, float, int] | None = None  # (cycle, value, iteration)
        self._spacing: dict[int, float] = {}  # NOISE_SPACING in positions, by stride

    def spacing(self, state: ChainState) -> float:
        """:data:`NOISE_SPACING` iterations run, in positions of the cycles at ``state``."""
        if self.layout is None or not state.skipping_exploration:
            return NOISE_SPACING
        stride = state.sampling_stride
        if stride not in self._spacing:
            steps = self.layout.steps_per_cycle
            runs = steps - sum(self.layout.idle_positions(stride))
            self._spacing[stride] = NOISE_SPACING * steps / max(runs, 1)
        return self._spacing[stride]

    def every(self, state: ChainState) -> int:
        """Measure at every this-many-th cycle's first kept draw (:meth:`spacing`, in
        cycles; counted from cycle 0, so that a resumed run measures where the whole run
        did)."""
        if self.layout is None:
            return 1
        return max(1, math.ceil(self.spacing(state) / self.layout.steps_per_cycle))

    def measure(self, gradient, potential, state: ChainState, cycle: int) -> float:
        """The noise per unit step at ``state``, the first kept draw of ``cycle``."""
        if self.last is not None:
            last_cycle, last_value, measured_at = self.last
            if self.layout is None:
                if last_cycle == cycle or state.iteration - measured_at < NOISE_SPACING:
                    return last_value
            elif last_cycle == cycle or cycle % self.every(state):
                return last_value
        plates = tuple(potential.plates)
        if (getattr(potential, "deterministic", False) and not plates) or not state.theta.numel():
            value = 0.0  # an exact gradient, or no parameter to be noisy
        else:
            theta = state.theta
            mass = state.tuning.preconditioner if state.tuning is not None else None
            root = torch.ones_like(theta) if mass is None else root_of(mass)
            with aside_from_global_rng(state):
                variance = gradient_noise(
                    gradient, theta, spare_batches(state, plates), root, batches=NOISE_BATCHES
                )
            per_step = noise_per_step(
                variance,
                friction=self.friction,
                temperature=self.temperature,
                batches_per_epoch=min((p.batches_per_epoch for p in plates), default=None),
            )
            value = float(per_step.mean())
        self.last = (cycle, value, state.iteration)
        return value

    def corrected(self, state: ChainState, cycle: int) -> ChainState:
        """``state`` with its noise correction's ``V`` moved towards the measurement just
        made at it (:meth:`measure`), where that measurement was the first kept draw of a
        cycle on the schedule (:meth:`every`) from the cycle where the exploration stopped
        being noise-free on (``state.noisy_exploration_from``); else ``state``.

        ``V`` keeps the per-coordinate profile the automatic step measured at the start
        and is rescaled towards the measured mean, by :data:`NOISE_WEIGHT` a time::

            V <- V * ((1 - w) + w * m / mean(V))

        Why: the start measures ``V`` at a few points one posterior sd from the converged
        start, but a control variate's noise grows with the distance from its centre, and
        the chain's draws are where it is measured here. Measured on the logistic
        regression of ``benchmarks/large_n.py`` (N = 1e6, cSGHMC defaults, seed 0): at the
        first draw of each cycle the noise was 1.8 times what the correction assumed, and
        those draws were 14% too wide (all draws: sd ratios up to 1.12); seed 1's was 1.06
        times. Why from the switch only: the cycles before it are the paper's, which the
        one-mode test judges."""
        measured = self.last
        tuning = state.tuning
        if (
            self.layout is None
            or measured is None
            or measured[2] != state.iteration
            or tuning is None
            or tuning.noise is None
            or state.noisy_exploration_from is None
            or cycle < state.noisy_exploration_from
            or cycle % self.every(state)
            or self.layout.position(state.iteration) != self.layout.retained_positions[0]
        ):
            return state
        assumed = float(tuning.noise.mean())
        if not (assumed > 0 and math.isfinite(measured[1])):
            return state
        scale = (1 - NOISE_WEIGHT) + NOISE_WEIGHT * measured[1] / assumed
        return replace(state, tuning=replace(tuning, noise=tuning.noise * scale))


def noise_warning(
    name: str,
    stats: dict[str, list],
    layout: CycleLayout,
    schedule: Schedule,
    num_plates: int,
    suggest_control_variates: bool,
) -> str | None:
    """A warning when the minibatch noise dominated the injected noise at the sampling
    stage's first step (its largest), in the median cycle; ``None`` otherwise.

    ``stats`` holds the draws' ``cycle``, ``step_size`` and ``noise_ratio``; ``name``
    starts the message (``"CyclicalSGHMC: chain 0"``).
    """
    ratios = {}
    for cycle, step, ratio in zip(
        stats["cycle"], stats["step_size"], stats["noise_ratio"], strict=True
    ):
        if cycle not in ratios and ratio == ratio and step > 0:
            first = cycle * layout.steps_per_cycle + layout.num_exploration_steps + 1
            ratios[cycle] = ratio / step * schedule(first)
    if len(ratios) < 2:
        return None
    median = float(np.median(list(ratios.values())))
    if not median > NOISE_WARNING:
        return None
    step = schedule(1)
    batch = (
        f" or a subsample_size about {median / 0.5:.3g} times larger (the noise's "
        "variance falls as 1 / subsample_size)"
        if num_plates
        else ""
    )
    return (
        f"{name}: the minibatch gradient's noise was "
        f"{median:.3g} times the injected Langevin noise at the sampling stage's first "
        "step (median over cycles; sample_stats['noise_ratio'] per draw), so it, not "
        "the sampler, sets the spread of the draws: the posterior's variance is "
        f"inflated. Use a step_size about {median / 0.5:.3g} times smaller (about "
        f"{step * 0.5 / median:.3g} for its largest step){batch}"
        + (", or control_variates=True." if suggest_control_variates and num_plates == 1 else ".")
    )


def noise_limited_message(
    name: str,
    tuning: Tuning,
    suggest_control_variates: bool,
    tried: Tuning | None = None,
    batch: int | None = None,
) -> str:
    """The warning when the minibatch noise cut the automatic step tenfold or more
    (``tried``: the tuning with control variates, which did not enlarge it enough;
    ``batch``: the batch the start grew the plate's to, which did not either)."""
    if batch is not None:
        advice = (
            f"the chain already runs batches of {batch} indices, grown from the plate's "
            "subsample_size as far as max_batch_size (or its default bound) allows: "
            "raise max_batch_size"
            + (", or drop control_variates=False" if suggest_control_variates else "")
        )
    else:
        advice = (
            "drop control_variates=False (they are then used where they enlarge the step: "
            "their variance shrinks near the mode), or use a larger subsample_size"
            if suggest_control_variates
            else "use a larger subsample_size"
        ) + " (or max_batch_size: the batch the kernel may grow to where the step is noise-bound)"
    if tried is not None:
        advice += (
            f" (control variates were tried and allowed {tried.step_size:.3g}: too little "
            "for a step that costs twice as much, so they are off)"
        )
    return (
        f"{name}: the minibatch gradient's noise limited the automatic "
        f"step size to {tuning.step_size:.3g} (curvature alone allowed "
        f"{1.0 / tuning.lambda_max:.3g}): larger steps would inflate the posterior's "
        "variance. The chain will mix slowly; " + advice + "."
    )
