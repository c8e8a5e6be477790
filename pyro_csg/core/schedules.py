"""Step-size schedules and the cycle layout of cyclical SG-MCMC.

A *schedule* is a plain callable ``k -> eta_k`` over the 1-based iteration ``k``.
Three ship here:

* :class:`CosineCyclical`, the cSG-MCMC schedule of Zhang et al. (2020), Eq. 1::

      eta_k = (step_size / 2) * (cos(pi * mod(k - 1, L) / L) + 1)

* :class:`Constant`, ``eta_k = step_size`` (plain SGLD / SGHMC);
* :class:`PolynomialDecay`, ``eta_k = a * (b + k) ** (-gamma)``, the decreasing
  schedule of the paper's Assumption 1 (Welling & Teh's SGLD schedule).

Any other callable returning a positive float works too.

The :class:`CycleLayout` says, for each iteration, which cycle it belongs to, whether it
is in the exploration stage (no noise) or the sampling stage (Langevin noise), and which
iterations are *retained* as draws. With ``L = steps_per_cycle`` and
``beta = exploration_fraction``::

    cycle(k)    = (k - 1) // L                       (0-based)
    position(k) = mod(k - 1, L)                      (0-based, within the cycle)
    stage(k)    = "explore" if position(k) / L < beta else "sample"

A cycle has ``E`` exploration steps and ``S = L - E`` sampling steps. Its
``M = samples_per_cycle`` retained draws are evenly spaced over the sampling stage, the
last one at the cycle's final step: positions ``E - 1 + ceil((m + 1) * S / M)`` for
``m = 0, ..., M - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from .checks import check_int, check_iteration, check_positive, is_number

__all__ = [
    "Schedule",
    "CosineCyclical",
    "Constant",
    "PolynomialDecay",
    "CycleLayout",
]

Schedule = Callable[[int], float]
"""A step-size schedule: a callable from the 1-based iteration ``k`` to ``eta_k > 0``."""


class CosineCyclical:
    """The cyclical cosine step size of cSG-MCMC (Zhang et al., 2020, Eq. 1).

    ``eta_k = (step_size / 2) * (cos(pi * mod(k - 1, L) / L) + 1)``: each cycle of
    ``L = steps_per_cycle`` iterations starts at ``step_size`` and decays to almost 0.

    With ``floor > 0`` the step never falls below ``floor * step_size``::

        eta_k = step_size * max((cos(pi * mod(k - 1, L) / L) + 1) / 2, floor)

    A floor keeps the chain moving to the cycle's end. It is not a default: with the
    automatic step size and control variates it did not raise the effective draws per
    cycle on the logistic regression of ``benchmarks/large_n.py`` (N = 1e5, 3 seeds: 1.8
    with a floor of 0.05, 2.2 without).

    :param float step_size: the initial (largest) step size of every cycle, ``> 0``.
    :param int steps_per_cycle: the cycle length ``L >= 1``.
    :param float floor: the smallest step as a fraction of ``step_size``, in ``[0, 1]``
        (default 0, the paper's schedule).

    Example::

        >>> from pyro_csg.core.schedules import CosineCyclical
        >>> schedule = CosineCyclical(step_size=0.1, steps_per_cycle=4)
        >>> [round(schedule(k), 4) for k in range(1, 6)]
        [0.1, 0.0854, 0.05, 0.0146, 0.1]
        >>> round(CosineCyclical(0.1, 4, floor=0.2)(4), 4)
        0.02
    """

    def __init__(self, step_size: float, steps_per_cycle: int, floor: float = 0.0) -> None:
        self.step_size = check_positive("step_size", step_size)
        self.steps_per_cycle = check_int("steps_per_cycle", steps_per_cycle, 1)
        if not (is_number(floor) and 0.0 <= floor <= 1.0):
            raise ValueError(f"floor must be a number in [0, 1], got {floor!r}")
        self.floor = float(floor)

    def __call__(self, k: int) -> float:
        check_iteration(k)
        position = (k - 1) % self.steps_per_cycle
        factor = 0.5 * (math.cos(math.pi * position / self.steps_per_cycle) + 1.0)
        return self.step_size * max(factor, self.floor)

    def __repr__(self) -> str:
        floor = f", floor={self.floor!r}" if self.floor else ""
        return (
            f"CosineCyclical(step_size={self.step_size!r}, "
            f"steps_per_cycle={self.steps_per_cycle!r}{floor})"
        )


class Constant:
    """A constant step size, ``eta_k = step_size``: plain SGLD / SGHMC.

    :param float step_size: the step size, ``> 0``.

    Example::

        >>> from pyro_csg.core.schedules import Constant
        >>> Constant(1e-3)(1000)
        0.001
    """

    def __init__(self, step_size: float) -> None:
        self.step_size = check_positive("step_size", step_size)

    def __call__(self, k: int) -> float:
        check_iteration(k)
        return self.step_size

    def __repr__(self) -> str:
        return f"Constant(step_size={self.step_size!r})"


class PolynomialDecay:
    """The decreasing step size ``eta_k = a * (b + k) ** (-gamma)`` of SGLD.

    This is the schedule of the paper's Assumption 1 (and of Welling & Teh, 2011):
    with ``gamma`` in (0.5, 1] the step sizes sum to infinity while their squares do
    not, so SGLD converges without a Metropolis correction.

    :param float a: scale, ``> 0``.
    :param float b: offset, ``>= 0``.
    :param float gamma: decay exponent, ``> 0`` (0.55 in the paper).

    Example::

        >>> from pyro_csg.core.schedules import PolynomialDecay
        >>> schedule = PolynomialDecay(a=0.1, b=1.0, gamma=0.55)
        >>> round(schedule(1), 5), round(schedule(100), 5)
        (0.0683, 0.0079)
    """

    def __init__(self, a: float, b: float = 1.0, gamma: float = 0.55) -> None:
        self.a = check_positive("a", a)
        if not (is_number(b) and math.isfinite(b) and b >= 0):
            raise ValueError(f"b must be a finite number >= 0, got {b!r}")
        self.b = float(b)
        self.gamma = check_positive("gamma", gamma)

    def __call__(self, k: int) -> float:
        check_iteration(k)
        return self.a * (self.b + k) ** (-self.gamma)

    def __repr__(self) -> str:
        return f"PolynomialDecay(a={self.a!r}, b={self.b!r}, gamma={self.gamma!r})"


@dataclass(frozen=True)
class CycleLayout:
    """Which cycle and stage each iteration is in, and which iterations are retained.

    :param int steps_per_cycle: ``L >= 1`` iterations per cycle.
    :param float exploration_fraction: ``beta`` in [0, 1): the share of each cycle spent
        exploring (no noise) before the sampling stage.
    :param int samples_per_cycle: ``M >= 1`` retained draws per cycle, at most the number
        of sampling-stage steps.

    Example::

        >>> from pyro_csg.core.schedules import CycleLayout
        >>> layout = CycleLayout(steps_per_cycle=10, exploration_fraction=0.6,
        ...                      samples_per_cycle=2)
        >>> layout.num_exploration_steps, layout.num_sampling_steps
        (6, 4)
        >>> [layout.retained_iteration(n) for n in range(4)]
        [8, 10, 18, 20]
        >>> layout.is_sampling(6), layout.is_sampling(7)
        (False, True)
    """

    steps_per_cycle: int
    exploration_fraction: float
    samples_per_cycle: int

    def __post_init__(self) -> None:
        # Stored as Python numbers (NumPy's are accepted), which JSON and netCDF keep.
        steps = check_int("steps_per_cycle", self.steps_per_cycle, 1)
        object.__setattr__(self, "steps_per_cycle", steps)
        beta = self.exploration_fraction
        if not (is_number(beta) and 0.0 <= beta < 1.0):
            raise ValueError(f"exploration_fraction must be a number in [0, 1), got {beta!r}")
        object.__setattr__(self, "exploration_fraction", float(beta))
        samples = check_int("samples_per_cycle", self.samples_per_cycle, 1)
        object.__setattr__(self, "samples_per_cycle", samples)
        if self.samples_per_cycle > self.num_sampling_steps:
            raise ValueError(
                f"samples_per_cycle must be at most the number of sampling-stage steps per "
                f"cycle ({self.num_sampling_steps} = steps_per_cycle {self.steps_per_cycle} "
                f"with exploration_fraction {beta}), got {self.samples_per_cycle}"
            )

    @cached_property
    def num_exploration_steps(self) -> int:
        """``E``: the number of positions ``j`` in a cycle with ``j / L < beta``."""
        length, beta = self.steps_per_cycle, self.exploration_fraction
        count = min(length, math.ceil(beta * length))
        # Agree exactly with the float test used by is_sampling().
        while count > 0 and not (count - 1) / length < beta:
            count -= 1
        while count < length and count / length < beta:
            count += 1
        return count

    @property
    def num_sampling_steps(self) -> int:
        """``S = L - E``: the sampling-stage steps per cycle."""
        return self.steps_per_cycle - self.num_exploration_steps

    @cached_property
    def retained_positions(self) -> tuple[int, ...]:
        """0-based positions within a cycle of its retained draws (the last is ``L - 1``)."""
        explore, sample, per_cycle = (
            self.num_exploration_steps,
            self.num_sampling_steps,
            self.samples_per_cycle,
        )
        return tuple(explore - 1 + -(-(m + 1) * sample // per_cycle) for m in range(per_cycle))

    def cycle(self, k: int) -> int:
        """0-based cycle of the 1-based iteration ``k``."""
        check_iteration(k)
        return (k - 1) // self.steps_per_cycle

    def position(self, k: int) -> int:
        """0-based position of iteration ``k`` within its cycle."""
        check_iteration(k)
        return (k - 1) % self.steps_per_cycle

    def is_sampling(self, k: int) -> bool:
        """True when iteration ``k`` is in the sampling stage (noise on)."""
        return self.position(k) / self.steps_per_cycle >= self.exploration_fraction

    def stage(self, k: int) -> str:
        """``"explore"`` or ``"sample"``."""
        return "sample" if self.is_sampling(k) else "explore"

    def retained_iteration(self, n: int) -> int:
        """The 1-based iteration of the ``n``-th retained draw (``n`` counted from 0)."""
        if n < 0:
            raise ValueError(f"draws are counted from 0, got n={n}")
        cycle, m = divmod(n, self.samples_per_cycle)
        return cycle * self.steps_per_cycle + self.retained_positions[m] + 1

    def idle_positions(self, stride: int) -> tuple[bool, ...]:
        """Per position of a cycle, whether a cycle that skips its exploration stage
        leaves it out: the exploration stage's ``0, ..., E - 1``, and in the sampling stage
        all but every ``stride``-th position counted back from each retained one.

        The positions that run keep the schedule's step at their place in the cycle, so
        the chain meets the step sizes of a cycle ``stride`` times shorter (``stride = 1``:
        every sampling-stage position runs), and every retained position runs.

        Example::

            >>> from pyro_csg.core.schedules import CycleLayout
            >>> layout = CycleLayout(steps_per_cycle=12, exploration_fraction=0.5,
            ...                      samples_per_cycle=2)
            >>> layout.retained_positions
            (8, 11)
            >>> idle = layout.idle_positions(2)
            >>> [n for n in range(12) if not idle[n]]
            [6, 8, 9, 11]
        """
        if not (isinstance(stride, int) and stride >= 1):
            raise ValueError(f"stride must be an int >= 1, got {stride!r}")
        idle = [True] * self.steps_per_cycle
        start = self.num_exploration_steps
        for retained in self.retained_positions:
            for position in range(retained, start - 1, -stride):
                idle[position] = False
            start = retained + 1
        return tuple(idle)
