"""Has the chain arrived? A trend across its cycles, and within them.

cSG-MCMC restarts its exploration every cycle. Once a chain has reached the posterior,
its cycles' mean draws ``m_c`` scatter about the posterior's mean (or its modes') in no
order, and within a cycle the retained draws, spread over the sampling stage, have
forgotten where the exploration left the chain: the last draw is no further along any
coordinate than the first, on average. Two ways a run can fail that the temperature
and runaway checks do not see, because each cycle's draws look settled:

* **still travelling** (a start far away, a step the minibatch noise cut to a crawl):
  the cycle means move one way, cycle after cycle;
* **still settling** (a sampling stage too short for a soft direction, e.g. the ridge
  of a non-centred hierarchy with much data per group): every cycle's exploration ends
  near a mode, and its draws drift the same way from there in every cycle, so they lean
  towards where the exploration ended;
* **not mixing within cycles** (a slow, curved direction on one mode: the SIR model's
  ``R0`` and ``recovery``, correlated -0.96): every cycle's draws stay close together,
  so the draws' spread is where the explorations stopped, and noise-free exploration
  pulls each cycle towards the mode: the draws are too narrow, with no trend to see.

Per unconstrained coordinate, over the ``K`` cycles with retained draws (``c`` the
cycle's number, ``sd`` that of all retained draws)::

    slope  = sum_c (c - c_bar)(m_c - m_bar) / S            S = sum_c (c - c_bar)^2
    s^2    = (sum_c (m_c - m_bar)^2 - slope^2 S) / (K - 2)  (the scatter about the line)
    t      = slope sqrt(S) / s                  drift  = slope (c_last - c_first) / sd
    d_c    = last draw - first draw of cycle c  (cycles with at least 2 draws, K' of them)
    t'     = mean(d_c) / (sd(d_c) / sqrt(K'))   settle = mean(d_c) / sd

A coordinate is flagged when ``|t|`` exceeds Student's ``t`` quantile at ``K - 2``
degrees of freedom for a two-sided level of ``0.01 / D`` (Bonferroni over the ``D``
coordinates: a stationary run with independent cycles is flagged 1 time in 100) and the
drift is at least :data:`MIN_DRIFT` sds; or when ``|t'|`` exceeds that quantile at
``K' - 1`` degrees of freedom and the settling is at least :data:`MIN_SETTLE` sds; or,
with at least :data:`MIN_SPREAD_CYCLES` cycles, when the pooled within-cycle sd is below
:data:`MIN_SPREAD` of all draws' sd while the cycles' means spread as over one mode (no
gap among their central 80% wider than :data:`MAX_GAP` median within-cycle sd, or
none wider than :data:`MAX_GAP_RATIO` median gaps; models of at
most :data:`SPREAD_MAX_DIM` coordinates, which keep each cycle's mean). At
stationarity ``E[d_c] = 0`` exactly, and the ``d_c`` of different cycles are independent
once the exploration decorrelates them. Needs :data:`MIN_CYCLES` cycles; memory O(D).

Measured (issue 21's hierarchical regression, 60 non-centred group effects, 3,000 rows,
B = 100, cSGLD defaults, 50 cycles): a seed still travelling, 10 NUTS sds off, with no
other warning, is flagged across cycles; a seed 1.9 NUTS sds off in ``tau`` (cycle means
uncorrelated, lag-1 autocorrelation -0.13, sd ratio 1.04) had each cycle's draws of
``log tau`` fall by 0.9 sds from first to last, ``t' = -6.5`` (at a quarter of the
step, 7.5 sds off: ``t' = -9.3``), where no coordinate of a right run exceeded 3.
The within-cycle spread (the defaults, 50 cycles; ``benchmarks/defaults.py``): 0.61 to
1.02 on right runs of nine models (seed 1, cSGHMC and cSGLD); 0.38 for the SIR model's
``R0`` under cSGHMC (sd ratio 0.65, no other warning; ``exploration_fraction=0`` makes
that run right) and 0.23 under cSGLD (sd ratio 0.46).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "DriftCheck",
    "DriftReport",
    "MIN_CYCLES",
    "drift_message",
    "effective_draws_message",
    "effective_size",
    "t_quantile",
]

MIN_CYCLES = 6
"""Cycles (with retained draws) the check needs: a trend over fewer is too uncertain."""
FAMILY_LEVEL = 0.01
"""The chance that a stationary run with independent cycles is flagged (either test)."""
MIN_DRIFT = 1.0
"""The smallest drift across cycles (first to last, in the draws' sds) flagged."""
MIN_SETTLE = 0.25
"""The smallest mean settling within a cycle (in the draws' sds) flagged."""
MIN_SPREAD = 0.5
"""Draws spreading within their cycles less than this fraction of all draws' sd (with
the cycles' means spread as one mode) are flagged as not mixing within cycles."""
MIN_SPREAD_CYCLES = 10
"""Cycles (with at least two draws) the within-cycle spread needs."""
STRIDE_SPREAD = 0.8
"""The within-cycle spread (as :data:`MIXED_SPREAD`) from which cycles that skip their
exploration stage also run their sampling stage with a stride
(:func:`~pyro_csg.core.sampler.sampling_stride`), which divides the Langevin time
between draws: a run that barely mixed within its cycles has none to give. Measured on
``benchmarks/defaults.py``'s non-centred eight schools (cSGLD seed 2, spread 0.73 at
cycle 10): a stride of 5 cut the least ESS of 360 draws from 77 to 29 and the 50-cycle
run came out 0.38 sds off (warned); the logistic regression of ``benchmarks/large_n.py``
read 0.84 to 0.92 under cSGHMC and 0.76 to 0.91 under cSGLD (N = 1e4, seeds 0-2), and
cSGHMC's ESS over 1,000 draws was 745, 810 and 629 with the stride, 828 and 879 (seeds 0,
1) without, for a quarter of the iterations; the hierarchical logistic regression read
0.87 to 0.89 (cSGLD). Ten cycles' spread scatters by about 0.1 below its value for
independent draws."""
MIXED_SPREAD = 0.7
"""Draws spreading within their cycles at least this fraction of all draws' sd on every
coordinate: each cycle's sampling stage mixes across the posterior on its own, and the
exploration stage adds nothing to the draws' independence
(:func:`~pyro_csg.core.sampler.choose_exploration` then skips it). Measured with the
defaults, minimum over the coordinates from cycle 10 to 50: 0.76 to 0.97 on the
logistic regression of ``benchmarks/large_n.py`` (N = 1e4, both kernels, seeds 0 and 1),
0.12 to 0.49 on a Gaussian with correlation 0.99 and cycles of 100 steps (seeds 0-2)."""
MIN_EFFECTIVE_DRAWS = 20
"""Draws worth fewer independent ones than this along a coordinate are reported: the
posterior mean's Monte Carlo error is then above 0.22 of its sd."""
MIN_EFFECTIVE_CYCLES = 40
"""Cycles (with at least two draws) the effective draws need: an autocorrelation over
fewer is too uncertain (notebook 1's 20 cycles of 31 coordinates read below 20 on 10 of
12 seeds, the runs' largest errors 0.26 to 0.68 sds, as before the exploration's noise)."""
SPREAD_MAX_DIM = 256
"""Models up to this many coordinates keep each cycle's mean draw, to tell one mode (the
cycles' means spread with no gap) from several; larger ones are not checked for it."""
MAX_GAP = 1.0
"""The largest gap between the central 80% of the cycles' sorted means, in the median
cycle's sds, that still counts as one mode."""
MAX_GAP_RATIO = 20.0
"""Or the largest such gap, in median gaps, that still counts as one mode: 40 draws
from a Gaussian give about 5 to 12, cycles settled in separated modes 30 and more."""


def _two_sided_tail(theta: float, dof: int) -> float:
    """``P(|T| > sqrt(dof) tan(theta))`` for Student's ``t`` with an integer ``dof``: the
    finite series of Abramowitz and Stegun 26.7.3-4 in ``theta``."""
    sin, cos = math.sin(theta), math.cos(theta)
    term, total = 1.0, 1.0
    if dof % 2 == 0:
        for j in range(2, dof, 2):  # 1 + (1/2) cos^2 + (1 3)/(2 4) cos^4 + ...
            term *= (j - 1) / j * cos * cos
            total += term
        return 1.0 - sin * total
    if dof == 1:
        return 1.0 - 2 * theta / math.pi
    for j in range(3, dof, 2):  # cos + (2/3) cos^3 + (2 4)/(3 5) cos^5 + ...
        term *= (j - 1) / j * cos * cos
        total += term
    return 1.0 - 2 / math.pi * (theta + sin * cos * total)


def t_quantile(p: float, dof: int) -> float:
    """Student's ``t`` quantile at probability ``p`` (upper tail, ``p > 0.5``) with an
    integer ``dof``, by bisection on the exact distribution function (no SciPy).

    Example::

        >>> from pyro_csg.core.drift import t_quantile
        >>> round(t_quantile(0.975, 10), 3), round(t_quantile(0.975, 1), 3)
        (2.228, 12.706)
    """
    level = 2 * (1 - p)  # the two-sided tail
    low, high = 0.0, math.pi / 2
    for _ in range(200):
        middle = (low + high) / 2
        if _two_sided_tail(middle, dof) > level:
            low = middle
        else:
            high = middle
        if high - low < 1e-15:
            break
    return math.sqrt(dof) * math.tan((low + high) / 2)


def _threshold(dimension: int, dof: int) -> float:
    """``|t|`` above which one of ``dimension`` coordinates is significant (both tests
    share :data:`FAMILY_LEVEL`)."""
    return t_quantile(1 - FAMILY_LEVEL / (4 * max(dimension, 1)), max(dof, 1))


@dataclass(frozen=True)
class DriftReport:
    """Per unconstrained coordinate: the trend across cycles (``t``, and ``drift`` from
    the first cycle to the last in the draws' sds), the mean settling within a cycle
    (``settle_t``, and ``settle`` in the draws' sds), and which are flagged.

    Example::

        >>> import torch
        >>> from pyro_csg.core.drift import DriftReport
        >>> zero = torch.zeros(2)
        >>> t, drift = torch.tensor([0.5, 12.0]), torch.tensor([0.1, 3.0])
        >>> report = DriftReport(t, drift, zero, zero, cycles=20)
        >>> report.travelling.tolist(), report.flagged.tolist()
        ([False, True], [False, True])
    """

    t: torch.Tensor  # (D,), float64, on the CPU
    drift: torch.Tensor  # (D,)
    settle_t: torch.Tensor  # (D,)
    settle: torch.Tensor  # (D,)
    cycles: int
    settle_cycles: int = 0  # cycles with at least two draws
    # The pooled within-cycle sd over all draws' sd, and whether the cycles' means look
    # like one mode (no gap); None where not measured (a model above SPREAD_MAX_DIM).
    spread: torch.Tensor | None = None
    one_mode: torch.Tensor | None = None
    exploring: bool = True  # cycles start with a noise-free exploration stage
    # What the draws are worth in independent ones (None where not measured).
    effective_draws: torch.Tensor | None = None
    # Of the settle cycles, those that restart with an exploration stage (the t' test's).
    lean_cycles: int | None = None

    @property
    def travelling(self) -> torch.Tensor:
        """Coordinates whose cycle means still move one way."""
        if self.cycles < MIN_CYCLES:
            return torch.zeros_like(self.t, dtype=torch.bool)
        significant = self.t.abs() > _threshold(self.t.numel(), self.cycles - 2)
        return significant & (self.drift.abs() >= MIN_DRIFT)

    @property
    def settling(self) -> torch.Tensor:
        """Coordinates whose draws move the same way within every cycle."""
        cycles = self.settle_cycles if self.lean_cycles is None else self.lean_cycles
        if cycles < MIN_CYCLES:
            return torch.zeros_like(self.t, dtype=torch.bool)
        significant = self.settle_t.abs() > _threshold(self.t.numel(), cycles - 1)
        return significant & (self.settle.abs() >= MIN_SETTLE)

    @property
    def narrow(self) -> torch.Tensor:
        """Coordinates whose draws barely move within a cycle, on a posterior the cycles
        show as one mode: the draws' spread is where the explorations stopped."""
        if (
            not self.exploring
            or self.spread is None
            or self.one_mode is None
            or self.settle_cycles < MIN_SPREAD_CYCLES
        ):
            return torch.zeros_like(self.t, dtype=torch.bool)
        return (self.spread < MIN_SPREAD) & self.one_mode

    @property
    def few_effective(self) -> torch.Tensor:
        """Coordinates whose draws are worth fewer than :data:`MIN_EFFECTIVE_DRAWS`
        independent ones (at least :data:`MIN_EFFECTIVE_CYCLES` cycles): the posterior
        mean's Monte Carlo error is above ``1 / sqrt(20)``, 0.22 sds."""
        if self.effective_draws is None or self.settle_cycles < MIN_EFFECTIVE_CYCLES:
            return torch.zeros_like(self.t, dtype=torch.bool)
        return self.effective_draws < MIN_EFFECTIVE_DRAWS

    @property
    def one_mode_arrived(self) -> bool:
        """Whether the cycles show one mode on every coordinate (their means spread with
        no gap, over at least :data:`MIN_SPREAD_CYCLES` cycles) and no trend across
        them: where the exploration stage no longer finds anything new
        (:func:`~pyro_csg.core.sampler.choose_exploration`). ``False`` for models above
        :data:`SPREAD_MAX_DIM` coordinates, which do not keep the cycles' means."""
        if self.one_mode is None or self.settle_cycles < MIN_SPREAD_CYCLES:
            return False
        return bool(self.one_mode.all()) and not bool(self.travelling.any())

    @property
    def mixes_within_cycles(self) -> bool:
        """Whether each cycle's draws spread over at least :data:`MIXED_SPREAD` of all
        draws' sd on every coordinate (over at least :data:`MIN_SPREAD_CYCLES` cycles):
        the sampling stage alone decorrelates the draws."""
        return self._spreads_over(MIXED_SPREAD)

    @property
    def mixes_with_margin(self) -> bool:
        """Whether each cycle's draws spread over at least :data:`STRIDE_SPREAD` of all
        draws' sd on every coordinate (over at least :data:`MIN_SPREAD_CYCLES` cycles)."""
        return self._spreads_over(STRIDE_SPREAD)

    def _spreads_over(self, level: float) -> bool:
        if self.spread is None or self.settle_cycles < MIN_SPREAD_CYCLES:
            return False
        return bool((self.spread >= level).all())

    @property
    def flagged(self) -> torch.Tensor:
        return self.travelling | self.settling | self.narrow

    @property
    def any(self) -> bool:
        return bool(self.flagged.any())


class DriftCheck:
    """Accumulates each cycle's mean draw into the sums of a straight-line fit over the
    cycles, each cycle's last-minus-first draw, and all draws' first two moments, in O(D)
    memory (module docstring).

    Example::

        >>> import torch
        >>> from pyro_csg.core.drift import DriftCheck
        >>> check, generator = DriftCheck(), torch.Generator().manual_seed(0)
        >>> for cycle in range(20):  # x[0] settled, x[1] still moving by 0.5 a cycle
        ...     for _ in range(4):
        ...         x = torch.randn(2, generator=generator) + torch.tensor([0.0, 0.5 * cycle])
        ...         check.add(cycle, x)
        >>> check.report().travelling.tolist(), check.report().settling.tolist()
        ([False, True], [False, False])
    """

    def __init__(self, exploring: bool = True) -> None:
        # Without a noise-free exploration stage (exploration_fraction=0) nothing pulls
        # a cycle's start towards the mode, so cycles that do not mix are not flagged.
        self.exploring = exploring
        self._cycle: int | None = None
        self._cycle_sum: torch.Tensor | None = None  # of the current cycle's draws
        self._cycle_first: torch.Tensor | None = None  # and its first draw
        self._last: torch.Tensor | None = None  # the latest draw
        self._n = 0  # draws in the current cycle
        self._first_cycle = 0  # c is counted from it
        # Over closed cycles: (K, sum c, sum c^2, the last c, [sums of m_c, c m_c, m_c^2],
        # K', [sums of d_c, d_c^2], the number of d_c); draws shifted by the first one, for
        # precision.
        self._closed_cycles: tuple = (0, 0.0, 0.0, 0.0, None, 0, None, 0)
        self._restarts_until: int | None = None  # cycles from here on do not restart
        self._shift: torch.Tensor | None = None
        self._draws = 0
        self._moments: list[torch.Tensor] | None = None  # sums of x - shift, (x - shift)^2
        self._cycle_squares: torch.Tensor | None = None  # the current cycle's sum of x^2
        # Over closed cycles of at least two draws: the within-cycle sum of squares, its
        # degrees of freedom, and (small models) each cycle's mean and sd.
        self._spread_sums: tuple = (None, 0, None)
        self._report: DriftReport | None = None

    def stop_exploring(self, skipping_from: int | None = None) -> None:
        """The cycles from here on start without a noise-free exploration stage (the
        sampler gave it noise or skips it), so their spread within a cycle is not tested.

        ``skipping_from``: the first cycle that skips its exploration stage. Those cycles
        go on from where the last one ended, with nothing to settle from, so their draws'
        lean within a cycle (``d_c``) is not tested: its test counts cycles independent,
        and those cycles are not (measured on the logistic regression of
        ``benchmarks/large_n.py``, N = 1e4, 250 cycles, cSGHMC seed 0: ``w[9]`` flagged
        settling by 0.33 sd; over 1,000 cycles of the same chain no coordinate's ``t'``
        passed 2.4)."""
        if self.exploring:
            self.exploring, self._report = False, None
        if skipping_from is not None and self._restarts_until is None:
            self._restarts_until, self._report = skipping_from, None

    def add(self, cycle: int, theta: torch.Tensor) -> None:
        """One retained draw of cycle ``cycle`` (its flat, unconstrained ``theta``)."""
        theta = theta.detach().double()
        if self._shift is None:
            self._shift, self._first_cycle = theta.clone(), cycle
            self._moments = [torch.zeros_like(theta), torch.zeros_like(theta)]
            means = [] if theta.numel() <= SPREAD_MAX_DIM else None
            self._spread_sums = (None, 0, means)
        centred = theta - self._shift
        if cycle != self._cycle:
            self._closed_cycles = self._closed()
            self._spread_sums = self._spread_closed(close=True)
            self._cycle, self._cycle_sum, self._n = cycle, torch.zeros_like(theta), 0
            self._cycle_squares = torch.zeros_like(theta)
            self._cycle_first = centred
        self._cycle_sum.add_(centred)
        self._cycle_squares.add_(centred * centred)
        self._last = centred
        self._n += 1
        self._moments[0].add_(centred)
        self._moments[1].add_(centred * centred)
        self._draws += 1
        self._report = None

    def _closed(self) -> tuple:
        """The sums over the closed cycles and the current one (without changing them)."""
        k, sum_c, sum_cc, last_c, sums, k_settle, settle_sums, k_lean = self._closed_cycles
        if self._cycle_sum is None or self._n == 0:
            return self._closed_cycles
        mean = self._cycle_sum / self._n
        c = float(self._cycle - self._first_cycle)
        sums = _added(sums, (mean, c * mean, mean * mean))
        if self._n >= 2:
            k_settle += 1
            if self._restarts_until is None or self._cycle < self._restarts_until:
                d = self._last - self._cycle_first
                k_lean, settle_sums = k_lean + 1, _added(settle_sums, (d, d * d))
        return k + 1, sum_c + c, sum_cc + c * c, c, sums, k_settle, settle_sums, k_lean

    def _spread_closed(self, close: bool = False) -> tuple:
        """The within-cycle sums over the closed cycles and the current one: for a report
        (the list of cycle means copied, unchanged), or to close the current cycle
        (``close``: its mean appended in place, so closing stays O(D) a cycle)."""
        squares, dof, means = self._spread_sums
        if self._cycle_sum is None or self._n < 2:
            return self._spread_sums
        mean = self._cycle_sum / self._n
        within = (self._cycle_squares - self._n * mean * mean).clamp_min(0.0)
        squares = within if squares is None else squares + within
        cycle_sd = (within / (self._n - 1)).sqrt()
        if means is not None:
            means = means if close else list(means)
            means.append((mean, cycle_sd, self._cycle))
        return squares, dof + self._n - 1, means

    def cycle_summaries(self) -> tuple[list[int], torch.Tensor, torch.Tensor] | None:
        """Each cycle of at least two draws so far: its number, mean draw and sd per
        coordinate (``(K, D)``, float64, on the CPU); ``None`` for a model above
        :data:`SPREAD_MAX_DIM` coordinates (not kept) or before such a cycle."""
        means = self._spread_closed()[2]
        if not means:
            return None
        cycles = [cycle for *_, cycle in means]
        centres = torch.stack([mean for mean, *_ in means]) + self._shift
        return cycles, centres.cpu(), torch.stack([sd for _, sd, _ in means]).cpu()

    def report(self) -> DriftReport | None:
        """Both trends per coordinate over the cycles so far, the current one counted as
        far as it has got (``None`` before three cycles have draws)."""
        if self._report is None:
            self._report = self._make_report()
        return self._report

    def _make_report(self) -> DriftReport | None:
        k, sum_c, sum_cc, last_c, sums, k_settle, settle_sums, k_lean = self._closed()
        if sums is None or k < 3 or not sums[0].numel():  # (a model without parameters)
            return None
        first, second = (moment / self._draws for moment in self._moments)
        sd = (second - first * first).clamp_min(0.0).sqrt().clamp_min(1e-300)
        sum_m, sum_cm, sum_mm = sums
        c_bar, m_bar = sum_c / k, sum_m / k
        s_cc = sum_cc - k * c_bar * c_bar
        slope = (sum_cm - k * c_bar * m_bar) / s_cc
        scatter = ((sum_mm - k * m_bar * m_bar - slope * slope * s_cc) / (k - 2)).clamp_min(0)
        t = slope * math.sqrt(s_cc) / scatter.sqrt().clamp_min(1e-300)
        zero = torch.zeros_like(t)
        settle_t, settle = zero, zero
        if k_lean >= 2:
            sum_d, sum_dd = settle_sums
            mean_d = sum_d / k_lean
            var_d = ((sum_dd - k_lean * mean_d * mean_d) / (k_lean - 1)).clamp_min(0.0)
            settle_t = mean_d / (var_d / k_lean).sqrt().clamp_min(1e-300)
            settle = mean_d / sd
        drift = slope * last_c / sd
        squares, dof, means = self._spread_closed()
        spread, one_mode = _spread(squares, dof, means, sd)
        effective = None
        if means is not None and len(means) >= 2:
            cycle_means = torch.stack([mean for mean, *_ in means])
            effective = _effective_draws(cycle_means, sd, self._draws).cpu()
        return DriftReport(
            t.cpu(),
            drift.cpu(),
            settle_t.cpu(),
            settle.cpu(),
            k,
            k_settle,
            spread,
            one_mode,
            self.exploring,
            effective,
            k_lean,
        )


def effective_size(series: torch.Tensor) -> torch.Tensor:
    """The effective sample size of each column of ``series`` ``(K, D)``, by Geyer's
    initial monotone sequence: with ``rho_t`` the autocorrelations (by FFT) and ``P_m =
    rho_2m + rho_2m+1`` summed while positive and made non-increasing, ``ESS = K / (2
    sum_m P_m - 1)``, at most ``K log10 K`` (an antithetic series, as Stan allows).

    Example::

        >>> import torch
        >>> from pyro_csg.core.drift import effective_size
        >>> white = torch.randn(400, 1, generator=torch.Generator().manual_seed(0))
        >>> bool(250 < effective_size(white.double()) < 600)
        True
    """
    k = series.shape[0]
    x = series - series.mean(0)
    n = 1 << (2 * k - 1).bit_length()  # zero-padded: no circular wrap
    spectrum = torch.fft.rfft(x, n=n, dim=0)
    autocov = torch.fft.irfft(spectrum * spectrum.conj(), n=n, dim=0)[:k]
    rho = autocov / autocov[0].clamp_min(1e-300)
    m = (k - 1) // 2
    pairs = rho[0 : 2 * m : 2] + rho[1 : 2 * m : 2]
    positive = (pairs > 0).cumprod(0).bool()  # up to the first pair that is not
    monotone = torch.cummin(torch.where(positive, pairs, torch.zeros_like(pairs)), 0).values
    tau = 2 * monotone.sum(0) - 1
    return k / tau.clamp_min(1.0 / (k * max(1.0, math.log10(k))))


def _effective_draws(cycle_means: torch.Tensor, sd: torch.Tensor, draws: int) -> torch.Tensor:
    """What the draws are worth in independent ones, per coordinate, from the cycles'
    means (batch means): the posterior mean's Monte Carlo variance is ``var(m_c) /
    ESS(m_c)``, so ``n_eff = sd^2 ESS(m_c) / var(m_c)`` (at most the number of draws)."""
    between = cycle_means.var(0, unbiased=False).clamp_min(1e-300)
    return (sd * sd * effective_size(cycle_means) / between).clamp(max=float(draws))


def _spread(squares, dof: int, means, sd: torch.Tensor) -> tuple:
    """The pooled within-cycle sd over ``sd``, and per coordinate whether the cycles'
    means look like one mode (``None`` without the means): among the central 80% of them,
    sorted, no gap wider than :data:`MAX_GAP` times the median cycle's sd (the median, as
    a cycle that hops between modes has a large sd of its own), or none wider than
    :data:`MAX_GAP_RATIO` times the median gap (means spread continuously, however
    little each cycle moves; means clustered in modes have tiny gaps inside a cluster
    and wide ones between)."""
    if squares is None or dof < 1:
        return None, None
    one_mode = None
    if means is not None and len(means) >= MIN_SPREAD_CYCLES:
        ordered = torch.stack([mean for mean, *_ in means]).sort(0).values
        typical = torch.stack([cycle_sd for _, cycle_sd, _ in means]).median(0).values
        cut = len(means) // 10
        central = ordered[cut : len(means) - cut]
        gaps = central[1:] - central[:-1]
        gap = gaps.max(0).values
        continuous = gap <= MAX_GAP_RATIO * gaps.median(0).values
        one_mode = ((gap <= MAX_GAP * typical) | continuous).cpu()
    return ((squares / dof).sqrt() / sd).cpu(), one_mode


def _added(totals: list[torch.Tensor] | None, terms) -> list[torch.Tensor]:
    if totals is None:
        return [term.clone() for term in terms]
    return [total + term for total, term in zip(totals, terms, strict=True)]


def effective_draws_message(name: str, report: DriftReport, labels: Sequence[str]) -> str:
    """The warning for coordinates with few effective draws (``""`` when none)."""
    chosen = sorted(
        (int(i) for i in report.few_effective.nonzero()[:, 0]),
        key=lambda i: float(report.effective_draws[i]),
    )
    if not chosen:
        return ""
    shown = ", ".join(f"{labels[i]} {float(report.effective_draws[i]):.0f}" for i in chosen[:6])
    more = f" and {len(chosen) - 6} more" if len(chosen) > 6 else ""
    worst = float(report.effective_draws[chosen[0]])
    return (
        f"{name}: few effective draws: along some coordinates the draws are worth fewer "
        f"than {MIN_EFFECTIVE_DRAWS} independent ones ({shown}{more}; from the "
        f"{report.settle_cycles} cycles' means, which follow each other from cycle to "
        "cycle), so the posterior means' Monte Carlo error is up to "
        f"{1 / math.sqrt(max(worst, 1e-12)):.2g} posterior sds and the sds are as "
        "uncertain. Run more cycles (the error falls as one over the square root of "
        "their number) or longer cycles (steps_per_cycle). Per coordinate in "
        "diagnostics()['drift_check'] (effective_draws) and in the InferenceData's attrs "
        "(drift_check_flagged); the run is marked in attrs['sampler_warnings']."
    )


def drift_message(name: str, report: DriftReport, labels: Sequence[str]) -> str:
    """The warning for a report with flagged coordinates (``""`` when none)."""
    if not report.any:
        return ""

    def listed(mask: torch.Tensor, values: torch.Tensor, unit: str = " sd") -> str:
        chosen = [int(i) for i in mask.nonzero()[:, 0]]
        chosen.sort(key=lambda i: -abs(float(values[i])) if unit else float(values[i]))
        number = "{:+.2g}" if unit else "{:.2g}"
        shown = ", ".join(
            f"{labels[i]} {number.format(float(values[i]))}{unit}" for i in chosen[:6]
        )
        return shown + (f" and {len(chosen) - 6} more" if len(chosen) > 6 else "")

    parts = [f"{name}: the draws have not reached the posterior along some coordinates."]
    if report.travelling.any():
        parts.append(
            f"Still travelling: over its {report.cycles} cycles, the cycles' mean draws "
            f"moved steadily one way ({listed(report.travelling, report.drift)}, first cycle "
            "to last, in sds of the draws), where cycles at the posterior scatter about "
            "one mean in no order. Run more cycles, start at a converged point "
            "(optimize_start=True), and where the minibatch noise limits the step (its own "
            "warning), pass a larger subsample_size or control_variates=True."
        )
    if report.settling.any():
        parts.append(
            f"Still settling: within each of {report.lean_cycles} cycles the draws moved "
            f"the same way from the cycle's first retained draw to its last "
            f"({listed(report.settling, report.settle)} on average, in sds of the draws), "
            "so they lean towards where each cycle's exploration ended (a mode): the "
            "sampling stage is too short for these directions (a soft, correlated "
            "direction, such as the ridge of a non-centred hierarchy with much data per "
            "group). Pass a smaller exploration_fraction or longer cycles "
            "(steps_per_cycle), or reparameterise (a centred hierarchy where the data per "
            "group are many)."
        )
    if report.narrow.any():
        parts.append(
            f"Not mixing within cycles: each of {report.settle_cycles} cycles' draws "
            f"spread only a fraction of all draws' sd ({listed(report.narrow, report.spread, '')}"
            "), while the cycles' means spread with no gap, as over one mode. So the "
            "draws' spread is set by where each exploration stage stopped, and noise-free "
            "exploration pulls the chain towards the mode: the draws are too narrow there "
            "(a slow, curved direction). Pass exploration_noise='always' (noise in the "
            "exploration stage from the first cycle: on one mode the exploration buys "
            "nothing; by default it comes once every coordinate's cycles show one mode) "
            "or longer cycles (steps_per_cycle)."
        )
    parts.append(
        "Per coordinate in diagnostics()['drift_check'] and in the InferenceData's attrs "
        "(drift_check_flagged); the run is marked in attrs['sampler_warnings']."
    )
    return " ".join(parts)
