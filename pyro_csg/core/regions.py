"""Regions apart: a few cycles that sampled where the other cycles never went.

Cyclical SG-MCMC has no Metropolis test and gives its cycles equal weight, so a region of
the posterior receives the share of cycles whose exploration stage ended there, not its
posterior mass. Where the cycles agree on one region but for one or two that sampled
somewhere else, that share is the region's weight in every average the draws make, and
nothing else warns: the runaway check sees a level within the potential's own spread,
the drift check sees no trend, and a region found by one cycle is not a mode to the
cycle diagnostic (:func:`pyro_csg.mode_census` needs three cycles to a group).

Per unconstrained coordinate ``i``, over the ``K`` cycles with at least two retained
draws (``m_c`` a cycle's mean draw, ``s_c`` its draws' sd, ``U_c`` the median potential
of its draws)::

    scale_i = max(1.4826 MAD_c(m_c,i), median_c s_c,i)   (how far cycles lie apart, or a
                                                           cycle's own spread if larger)
    the cycles' m_c,i sorted; at each end, the widest gap among the J = max(1, K // 10)
    outermost: the k cycles beyond it are a region apart if the gap is at least
        REGION_GAP * scale_i                                (6)
    and the region is reported if its level is above the other cycles' by more than
        median(U apart) - median(U rest) > log((K - k) / k)

The level test: two Gaussian regions of equal volume whose typical potentials differ by
``dU`` hold masses in the ratio ``exp(-dU)``, so a region that held its share of cycles,
``k / (K - k)`` of the others', would sit ``log((K - k) / k)`` above them; a region
higher still holds less mass than the cycles gave it (at equal volume: a broader region
holds more, so the test is a guide, not a proof). A region below that level is not
reported: it may deserve more weight than its share, which more cycles would tell.

Measured (``benchmarks/defaults.py --dump``: the defaults, 50 cycles, both kernels, 3
seeds on each of its 17 models, 102 runs; runaway cycles left out, as here): the widest
such gap was 2.9 on the 75 right runs, 1.7 and 2.1 on the two silent ones (Monte Carlo
error, not a region), and up to 10.6 on the 25 warned ones, where the centred eight
schools' and baseball's cycles fell into a funnel's neck. One region was reported, on a
run already warned (the centred eight schools, cSGLD seed 1: gap 10.1, 22 above). The
time series as a ``potential_fn`` started at its MAP (stop 38's silent run: cycle 7 of
50 sampled ``rho`` near -0.6 where every other cycle and NUTS put it at 0.78 +- 0.08):
gap 8.9, 14.8 above the others' level, where ``log(49)`` is 3.9: reported.
The targets of ``benchmarks/cycle_diagnostic.py``, 20 seeds each (a Gaussian mean, the
README's regression, notebook 1's logistic regression, notebook 2's 25 Gaussians, two
Student-t modes in 1-D): no region reported on any of the 100 runs.

A heavy tail opens such gaps too: with cycle means drawn from Student-t tails (50 cycles,
20 coordinates, 200 runs; ``tests/test_regions.py``) a gap of 6 appeared in 0 runs of
Gaussian means, 1 to 4 of ``t`` with 10 degrees of freedom, 31 to 45 with 5 and 163
with 3 (two random streams). A cycle far out in such a tail sits above the others'
level too, so it is reported; the message names that reading: it is then a sample of
the tail, and the posterior's mean and sd are as uncertain as 50 cycles of a heavy tail
make them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Region", "regions_apart", "regions_message", "REGION_GAP", "MIN_REGION_CYCLES"]

REGION_GAP = 6.0
"""The gap (in ``scale_i``) that sets a few cycles apart from the others."""
MIN_REGION_CYCLES = 10
"""Cycles (with at least two draws) the check needs: the others' spread over fewer is
too uncertain to measure a gap against."""


@dataclass(frozen=True)
class Region:
    """A few cycles apart from the others along one coordinate.

    ``cycles``: theirs (the chain's cycle numbers); ``coordinate``: the flat
    unconstrained index; ``gap``: in ``scale``; ``location``: their mean draws' median
    there, ``others``: the other cycles' (lowest, highest) mean draws; ``excess``: their
    median potential above the others' (nats); ``total``: ``K``, the cycles looked at.

    Example::

        >>> from pyro_csg.core.regions import Region
        >>> Region([7], 0, 8.9, -2.2, (1.3, 3.3), 14.8, 50).over_weighted  # 14.8 > log 49
        True
    """

    cycles: list[int]
    coordinate: int
    gap: float
    location: float
    others: tuple[float, float]
    excess: float
    total: int

    @property
    def share(self) -> float:
        """``k / K``: the region's share of the cycles."""
        return len(self.cycles) / self.total

    @property
    def over_weighted(self) -> bool:
        """Whether the region's level says it holds less mass than its share of cycles
        (at equal volume)."""
        k = len(self.cycles)
        return self.excess > math.log((self.total - k) / k)


def regions_apart(
    cycles: Sequence[int],
    means: np.ndarray,
    sds: np.ndarray,
    levels: Sequence[float],
    gap: float = REGION_GAP,
) -> list[Region]:
    """The regions apart (module docstring), the widest gap first, one per set of cycles.

    :param cycles: each cycle's number (``K`` of them, each with at least two draws).
    :param means: ``(K, D)``: each cycle's mean unconstrained draw.
    :param sds: ``(K, D)``: the sd of each cycle's draws.
    :param levels: ``(K,)``: the median potential of each cycle's draws.
    :returns: every region apart, over-weighted or not (:attr:`Region.over_weighted`).

    Example::

        >>> import numpy as np
        >>> from pyro_csg.core.regions import regions_apart
        >>> rng = np.random.default_rng(0)
        >>> means = rng.normal(size=(20, 2)) * 0.5
        >>> means[7, 1] = 9.0  # cycle 7 sampled somewhere else
        >>> levels = np.zeros(20)
        >>> levels[7] = 12.0  # 12 nats above the others
        >>> [(r.cycles, r.coordinate, r.over_weighted)
        ...  for r in regions_apart(range(20), means, np.ones((20, 2)), levels)]
        [([7], 1, True)]
    """
    means, sds = np.asarray(means, dtype=float), np.asarray(sds, dtype=float)
    levels, cycles = np.asarray(levels, dtype=float), list(cycles)
    count = len(cycles)
    if count < MIN_REGION_CYCLES or not np.isfinite(means).all() or not np.isfinite(levels).all():
        return []
    centre = np.median(means, 0)
    scale = np.maximum(1.4826 * np.median(np.abs(means - centre), 0), np.median(sds, 0))
    outermost = max(1, count // 10)
    found: dict[tuple[int, ...], Region] = {}
    for i in np.flatnonzero(scale > 0):
        order = np.argsort(means[:, i], kind="stable")
        for side in (order, order[::-1]):  # from the lowest, then from the highest
            values = means[side, i]
            gaps = np.abs(np.diff(values[: outermost + 1])) / scale[i]
            j = int(np.argmax(gaps))
            if gaps[j] < gap:
                continue
            apart, rest = side[: j + 1], side[j + 1 :]
            key = tuple(sorted(int(cycles[c]) for c in apart))
            region = Region(
                list(key),
                int(i),
                float(gaps[j]),
                float(np.median(means[apart, i])),
                (float(means[rest, i].min()), float(means[rest, i].max())),
                float(np.median(levels[apart]) - np.median(levels[rest])),
                count,
            )
            if key not in found or region.gap > found[key].gap:
                found[key] = region
    return sorted(found.values(), key=lambda region: -region.gap)


def regions_message(name: str, regions: Sequence[Region], labels: Sequence[str]) -> str:
    """The warning for the over-weighted regions (``""`` when none).

    Example::

        >>> from pyro_csg.core.regions import Region, regions_message
        >>> region = Region([7], 0, 8.9, -2.2, (1.3, 3.3), 14.8, 50)
        >>> regions_message("chain 0", [region], ["rho"])[:62]
        'chain 0: a region apart: cycle(s) [7] of 50 along rho (unconst'
    """
    shown = [region for region in regions if region.over_weighted]
    if not shown:
        return ""
    parts = []
    for region in shown[:3]:
        low, high = region.others
        parts.append(
            f"cycle(s) {region.cycles} of {region.total} along {labels[region.coordinate]} "
            f"(unconstrained: {region.location:.3g}, where the other cycles' means lie in "
            f"[{low:.3g}, {high:.3g}]; a gap of {region.gap:.1f} times their spread), "
            f"{region.excess:.3g} above the other cycles' potential"
        )
    worst = shown[0]
    return (
        f"{name}: a region apart: {'; '.join(parts)}. Cyclical SG-MCMC gives a region the "
        "share of cycles whose exploration ended there, not its posterior mass: at equal "
        f"volume a region {worst.excess:.3g} above the others would hold about "
        f"exp(-{worst.excess:.3g}) of their mass, less than the "
        f"{len(worst.cycles)} of {worst.total} cycles it has, "
        "so its draws are probably over-weighted in every average. Look at those cycles' "
        "draws (sample_stats['cycle']; to_inference_data(mcmc, group_by='cycle') makes each "
        "cycle a chain). If the region holds as little mass as its level suggests, leave "
        "those cycles out (they move every average by their share); if it holds more than "
        "its share (a broad region), it is under-sampled, and more cycles tell how often "
        "the exploration finds it. Or the posterior has a heavy tail there and those "
        "cycles sampled far out in it: then more cycles fill the gap. Listed in the "
        "InferenceData's attrs (region_check_flagged); the run is marked in "
        "attrs['sampler_warnings']."
    )
