"""Runs that go wrong without a NaN: cycles sampled far above the chain's typical level.

SG-MCMC has no accept/reject step, so a chain that leaves the posterior's bulk and does
not come back within a cycle -- the steps at a cycle's end too small to return from where
its large first steps threw it, a step too large for the model's curvature, or the first
cycles still travelling from the start (burn-in) -- returns absurd draws without a word.
What shows it is the potential: at stationarity ``U`` fluctuates around a typical level,
and the draws of such a cycle sit far above it.

For each complete cycle ``c`` with retained draws' minibatch potentials ``U~``::

    level_c  = median of U~ over the cycle's draws
    spread   = median over cycles of the sd of U~ within a cycle      (chain and batch noise)
    scale    = max(spread, T * sqrt(D / 2))    (the sd of U at stationarity for a Gaussian
                                                posterior in D dimensions at temperature T)
    excess_c = (level_c - 10th percentile of the levels) / scale
    runaway  = excess_c > 12

Measured on Pyro's baseball example (``partially_pooled_with_logit``, D = 20, 25 cycles):
a sound cSGLD run (loc -1.02 +- 0.07, NUTS: -1.04 +- 0.09) had excesses up to 7.5; the
cSGHMC run at a ten times smaller step that returned ``scale`` up to 1e5 had 12 of its 25
cycles between 17 and 89; a cSGLD run at that small step, still travelling, had its first
7 cycles at 11 to 51. The threshold, 12, sits between. Needs 5 complete cycles (with
fewer, the typical level is too uncertain to judge against).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["RunawayReport", "runaway_cycles", "diverging_draws", "RUNAWAY_THRESHOLD"]

RUNAWAY_THRESHOLD = 12.0
"""How many ``scale`` units above the chain's typical level flags a cycle."""


@dataclass(frozen=True)
class RunawayReport:
    """Which cycles ran away, by how much, and the draws they hold.

    Example::

        >>> import numpy as np
        >>> from pyro_csg.core.runaway import runaway_cycles
        >>> cycles = np.repeat(np.arange(6), 4)
        >>> energies = np.array([10, 11, 9, 10] * 5 + [90, 80, 75, 70], dtype=float)
        >>> report = runaway_cycles(cycles, energies, num_params=2, temperature=1.0)
        >>> report.cycles, report.draws
        ([5], [20, 21, 22, 23])
    """

    cycles: list[int]
    excess: dict[int, float]  # every complete cycle's excess over the typical level
    scale: float
    draws: list[int]  # positions (0-based, in the given order) of the flagged cycles' draws

    def message(self, chain: int, samples_per_cycle: int) -> str:
        """The warning: which cycles, how far, and what to do."""
        if not self.cycles:
            return ""
        flagged = self.cycles
        sizes = [self.excess[c] for c in flagged]
        leading = flagged == list(range(min(self.excess), min(self.excess) + len(flagged)))
        text = (
            f"pyro-csg: chain {chain}: cycle(s) {flagged} sampled at a potential {min(sizes):.0f} "
            f"to {max(sizes):.0f} times its spread ({self.scale:.3g}) above the chain's typical "
            "level: the chain was still travelling, or had run away, when their draws were "
            "taken. Their draws are marked diverging (sample_stats['diverging'])."
        )
        if leading:
            keep_from = (max(flagged) + 1) * samples_per_cycle
            text += (
                " They are the first cycles: burn-in. Drop them with "
                f"warmup_steps={keep_from} (whole cycles), or start closer to the posterior."
            )
        else:
            text += (
                " Cycles late in the run: the steps at the end of a cycle are too small to "
                "return from where its large first steps threw the chain, or too large for "
                "the model's curvature. Compare runs at 10 times larger and 10 times smaller "
                "step_size (keep the one whose cycles agree), lengthen the cycles "
                "(steps_per_cycle), or try CyclicalSGLD."
            )
        return text


def runaway_cycles(
    cycles: np.ndarray,
    energies: np.ndarray,
    num_params: int,
    temperature: float,
    threshold: float = RUNAWAY_THRESHOLD,
) -> RunawayReport:
    """Flag the cycles whose draws sit far above the chain's typical potential.

    :param cycles: each retained draw's cycle (one chain, in draw order).
    :param energies: each retained draw's minibatch potential ``U~``.
    :param int num_params: ``D``, the number of unconstrained parameters.
    :param float temperature: ``T``.
    :param float threshold: flag cycles more than this many ``scale`` units above.
    :returns: :class:`RunawayReport` (nothing flagged with fewer than 5 complete cycles).
    """
    cycles = np.asarray(cycles)
    energies = np.asarray(energies, dtype=float)
    labels, counts = np.unique(cycles, return_counts=True)
    complete = labels[counts == counts.max()] if len(labels) else labels
    if len(complete) < 5 or counts.max() < 2 or not np.isfinite(energies).all():
        return RunawayReport([], {}, math.nan, [])
    levels, spreads = [], []
    for cycle in complete:
        values = energies[cycles == cycle]
        levels.append(np.median(values))
        spreads.append(values.std(ddof=1))
    levels = np.array(levels)
    scale = max(float(np.median(spreads)), temperature * math.sqrt(max(num_params, 1) / 2))
    reference = float(np.quantile(levels, 0.1))
    excess = {
        int(c): float((level - reference) / scale)
        for c, level in zip(complete, levels, strict=True)
    }
    flagged = [c for c, value in excess.items() if value > threshold]
    draws = np.flatnonzero(np.isin(cycles, flagged)).tolist()
    return RunawayReport(flagged, excess, scale, draws)


def diverging_draws(stats: dict, runaway: list[int]) -> list[int]:
    """The draws to mark diverging: those of ``runaway`` cycles, and those whose
    iterations had a proposal rejected or the step halved (``stats["rejected"]``,
    ``stats["backoffs"]``), as NUTS marks a divergent transition.

    Example::

        >>> from pyro_csg.core.runaway import diverging_draws
        >>> diverging_draws({"rejected": [0, 2, 0, 0], "backoffs": [0, 0, 0, 1]}, [0])
        [0, 1, 3]
    """
    rejected = stats.get("rejected", ())
    backoffs = stats.get("backoffs", ())
    marked = {i for i, (r, b) in enumerate(zip(rejected, backoffs, strict=True)) if r or b}
    return sorted(marked | set(runaway))
