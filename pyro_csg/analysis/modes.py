"""Did the cycles find different modes? A calibrated cycle diagnostic and a mode census.

ArviZ's R-hat with every cycle as a chain cannot tell the two reasons cycles disagree:
on a unimodal posterior the late steps of a cycle are small, so its few draws are
correlated and the cycle means scatter over the whole posterior (between-cycle R-hat
1.5 to 1.95 on notebook 1's good run); on a multimodal posterior the cycles sit in
different modes. Both inflate the spread of the cycle means against the spread within
cycles by the same amount. What differs is the *shape* of the cycle locations: correlated
cycles of a unimodal posterior fill it continuously, while cycles in different modes
gather in tight groups with empty gaps between them, gaps many times wider than a cycle's
own spread.

For one scalar element, with ``n >= 6`` complete cycles (over all chains) of ``M >= 2``
draws::

    loc_c   = median of cycle c's draws          (robust to a cycle that visits other
                                                  modes in its first, largest steps)
    s_c     = spread of cycle c's draws: the sd for M < 10, else 1.4826 * MAD
    s_w     = median over cycles of s_c          (the width of a mode, as a cycle sees it)
    transit = cycles with s_c > 3 s_w            (they changed mode while sampling)
    groups  = the other cycles' loc, sorted, cut at every gap of at least 4 s_w
    separation = the widest cut gap / s_w                (0 without a cut)
    tightness  = the largest sd of the loc of a group's cycles / s_w  (groups of >= 2)
    alarm      = at least two groups of >= 3 cycles, and tightness <= 1

A gap of 4 mode widths between groups of cycles is not enough alone: when a cycle's draws
are so correlated that ``s_w`` is tiny, the cycle locations are single draws of the
posterior, and such gaps open by chance in its tails. What such runs never show is the
other half: groups whose cycles agree *more closely than a cycle's own draws spread*
(``tightness <= 1``). Cycles that sampled the same mode do, since each cycle's median
averages over that mode; cycles that are single draws of a continuous posterior
scatter over it. Groups of one or two cycles are counted (and given to the census) but
cannot raise the alarm: two cycles can agree by chance.

Calibration (``benchmarks/cycle_diagnostic.py``: the kernels through ``MCMC``, 20 seeds a
target; the largest between-cycle R-hat, ArviZ's, for comparison)::

    target                                          alarms    R-hat between cycles
    notebook 1's logistic regression (unimodal)     0 / 20    1.82 to 2.45
    the README's linear regression (unimodal)       0 / 20    1.04 to 1.28
    a Gaussian mean (unimodal)                      0 / 20    0.99 to 1.25
    notebook 2's 25 Gaussians (multimodal)         20 / 20    1.42 to 1.54
    two Student-t modes in 1-D (multimodal)        20 / 20    1.39 to 1.61

``tests/test_modes.py`` batches 20 seeds of the same targets through the same update
functions, with the same verdicts, and adds cycles that are single draws of an 8-D
Gaussian (``s_w`` a tenth of the posterior sd): no alarm.

With many elements (a network's weights) chance alarms are rare per element: about
1e-3 of the elements with 10 cycles, 1e-4 with 20, none seen with 50 (cycles of single
draws of a 1000-D Gaussian). A run's ``alarm`` column is per element; read the share.

:func:`mode_census` groups the cycles by the same cuts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cycles import cycle_layout, scalar_elements

__all__ = [
    "SEPARATION_THRESHOLD",
    "TIGHTNESS_THRESHOLD",
    "cycle_diagnostic",
    "mode_census",
    "ModeCensus",
    "cycle_disagreement",
]

SEPARATION_THRESHOLD = 4.0
"""Groups of cycles this many within-cycle sds apart are candidate modes."""
TIGHTNESS_THRESHOLD = 1.0
"""Every group's cycle locations must spread less than this many within-cycle sds."""
TRANSIT_SPREAD = 3.0
"""A cycle whose own spread is this many times ``s_w`` changed mode while sampling."""
MIN_CYCLES = 6
"""Fewer complete cycles than this give no verdict."""
MIN_WITNESSES = 3
"""The alarm needs two groups of at least this many cycles (a mode found once or twice
could be chance)."""


def within_spread(values: np.ndarray) -> np.ndarray:
    """``s_c`` per element and cycle: ``values`` is ``(elements, cycles, M)``."""
    if values.shape[-1] < 10:
        return values.std(axis=-1, ddof=1)
    median = np.median(values, axis=-1, keepdims=True)
    return 1.4826 * np.median(np.abs(values - median), axis=-1)


@dataclass(frozen=True)
class CycleGroups:
    """Per element: the groups of cycles and the statistics of the diagnostic."""

    group: np.ndarray  # (elements, cycles): group number along the element, -1 in transit
    separation: np.ndarray  # (elements,): the widest gap between groups, in s_w
    tightness: np.ndarray  # (elements,): the largest spread of a group's locations, in s_w
    num_groups: np.ndarray  # (elements,)
    repeated: np.ndarray  # (elements,): groups holding at least MIN_WITNESSES cycles
    locations: np.ndarray  # (elements, cycles)

    @property
    def alarm(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return (self.repeated >= 2) & (self.tightness <= TIGHTNESS_THRESHOLD)


def group_cycles(values: np.ndarray) -> CycleGroups:
    """Group the cycles of every element of ``values`` ``(elements, cycles, M)``."""
    elements, num_cycles, per_cycle = values.shape
    locations = np.median(values, axis=-1)
    group = np.zeros((elements, num_cycles), dtype=int)
    separation = np.full(elements, np.nan)
    tightness = np.full(elements, np.nan)
    num_groups = np.ones(elements, dtype=int)
    repeated = np.ones(elements, dtype=int)
    if per_cycle < 2 or num_cycles < MIN_CYCLES:
        return CycleGroups(group, separation, tightness, num_groups, repeated, locations)
    spread = within_spread(values)
    width = np.median(spread, axis=-1)
    measurable = width > 0
    separation[measurable] = 0.0
    transit = spread > TRANSIT_SPREAD * width[:, None]
    # sort each element's settled cycles (transit ones last, as inf)
    settled = np.where(transit, np.inf, locations)
    order = np.argsort(settled, axis=-1)
    ordered = np.take_along_axis(settled, order, -1)
    with np.errstate(invalid="ignore"):
        cut = np.diff(ordered, axis=-1) >= SEPARATION_THRESHOLD * width[:, None]
    cut &= np.isfinite(ordered[:, 1:]) & measurable[:, None]
    sorted_group = np.concatenate([np.zeros((elements, 1), dtype=int), np.cumsum(cut, -1)], -1)
    sorted_group = np.where(np.isfinite(ordered), sorted_group, -1)
    np.put_along_axis(group, order, sorted_group, -1)
    for element in np.flatnonzero(cut.any(-1)):  # only elements with a cut: few, usually
        members = group[element]
        numbers = np.unique(members[members >= 0])
        spreads = [
            locations[element, members == number].std(ddof=1)
            for number in numbers
            if (members == number).sum() > 1
        ]
        with np.errstate(invalid="ignore"):  # inf - inf past the transit cycles
            gaps = np.diff(ordered[element])[cut[element]]
        num_groups[element] = len(numbers)
        repeated[element] = sum((members == number).sum() >= MIN_WITNESSES for number in numbers)
        separation[element] = gaps.max() / width[element]
        tightness[element] = max(spreads, default=0.0) / width[element]
    one_group = measurable & (num_groups == 1)
    if one_group.any():
        settled_spread = np.nanstd(np.where(transit, np.nan, locations), axis=-1, ddof=1)
        tightness[one_group] = settled_spread[one_group] / width[one_group]
    return CycleGroups(group, separation, tightness, num_groups, repeated, locations)


def cycle_values(idata, var_names: Sequence[str] | None):
    """``(labels, values (elements, cycles, M), chains, cycles)`` over complete cycles."""
    regrouped, chains, cycles = cycle_layout(idata, var_names)
    labels, values = [], []
    for _, variable in regrouped.data_vars.items():
        for label, element in scalar_elements(variable):
            labels.append(label)
            values.append(element)
    stacked = np.asarray(values, dtype=float).reshape(len(values), len(chains), -1)
    return labels, stacked, np.asarray(chains), np.asarray(cycles)


@dataclass(frozen=True)
class Analysis:
    """One regrouping of the posterior and its groups, shared by the diagnostic, the
    census and the figure."""

    labels: list[str]
    values: np.ndarray  # (elements, chain x cycle, M)
    chains: np.ndarray
    cycles: np.ndarray
    groups: CycleGroups


def analyse(idata, var_names: Sequence[str] | None) -> Analysis:
    labels, values, chains, cycles = cycle_values(idata, var_names)
    return Analysis(labels, values, chains, cycles, group_cycles(values))


def cycle_points(analysis: Analysis, labels: Sequence[str]):
    """``pandas.DataFrame`` indexed by ``(variable, chain, cycle)`` for the elements
    ``labels``: each cycle's ``location`` (median draw) and ``spread`` (``s_c``), the
    diagnostic's quantities."""
    import pandas as pd

    chains, cycles = analysis.chains, analysis.cycles
    position = {name: number for number, name in enumerate(analysis.labels)}
    values = analysis.values[[position[label] for label in labels]]
    spread = within_spread(values) if values.shape[-1] > 1 else np.zeros(values.shape[:2])
    index = pd.MultiIndex.from_tuples(
        [
            (label, int(chain), int(cycle))
            for label in labels
            for chain, cycle in zip(chains, cycles, strict=True)
        ],
        names=["variable", "chain", "cycle"],
    )
    return pd.DataFrame(
        {"location": np.median(values, -1).reshape(-1), "spread": spread.reshape(-1)},
        index=index,
    )


def cycle_diagnostic(idata, var_names: Sequence[str] | None = None):
    """Per scalar element, did the cycles find different modes?

    The cycles' locations (each cycle's median draw) are cut into groups at every gap of
    at least 4 within-cycle sds; the ``alarm`` fires when two groups of at least 3 cycles
    appear and every group's cycles agree more closely than one cycle's draws spread
    (the module docstring gives the rule, why, and its calibration). Unlike ArviZ's
    R-hat with cycles as chains, it stays quiet when a unimodal run's cycles are merely
    correlated, and fires when the cycles sit in separate modes.

    How to read it. No alarm: the cycles sampled one mode (along this element); pool
    their draws, even where the between-cycle R-hat exceeds 1.1 (then a cycle's draws
    are correlated: :func:`pyro_csg.cycle_summary`'s ``ess``). Alarm: the posterior is
    multimodal along this element and the chain found several modes;
    :func:`mode_census` says how many and which cycles sit in which. Pooled draws then
    weight each mode by how many cycles found it, not by its posterior mass; more
    cycles, or more chains, make those weights more reliable, and where the modes are
    symmetric copies (a network's permuted units, a mixture's relabelled components)
    a summary of any one of them is as good as the pooled one. ``separation`` and
    ``tightness`` are NaN with fewer than 6 complete cycles, a single draw per cycle
    (no within-cycle spread to measure a mode's width by), or draws that never vary.

    :param idata: from :func:`pyro_csg.to_inference_data` (either ``group_by``), or
        a posterior ``xarray.Dataset`` with a ``cycle`` coordinate.
    :param var_names: the posterior variables to include (default: all).
    :returns: ``pandas.DataFrame`` indexed by element (labelled as ``az.summary`` does),
        with the columns ``separation`` (the widest gap between groups, in within-cycle
        sds; 0 when there is one group), ``tightness`` (the largest spread of a group's
        cycle locations, in within-cycle sds), ``groups``, ``alarm`` and ``cycles`` (the
        complete cycles used).

    Example::

        >>> import numpy as np, xarray as xr
        >>> from pyro_csg import cycle_diagnostic
        >>> rng = np.random.default_rng(0)
        >>> modes = rng.choice([-3.0, 3.0], size=20)      # 20 cycles of 5 draws, 2 modes
        >>> draws = (modes[:, None] + 0.3 * rng.normal(size=(20, 5))).reshape(1, -1)
        >>> cycle = np.repeat(np.arange(20), 5)
        >>> posterior = xr.Dataset({"x": (("chain", "draw"), draws)},
        ...                        coords={"cycle": ("draw", cycle)})
        >>> cycle_diagnostic(posterior)[["groups", "alarm"]].values.tolist()
        [[2, True]]
    """
    return diagnostic_table(analyse(idata, var_names))


def diagnostic_table(analysis: Analysis):
    import pandas as pd

    groups = analysis.groups
    return pd.DataFrame(
        {
            "separation": groups.separation,
            "tightness": groups.tightness,
            "groups": groups.num_groups,
            "alarm": groups.alarm,
            "cycles": np.full(len(analysis.labels), analysis.values.shape[1]),
        },
        index=pd.Index(analysis.labels, name="variable"),
    )


@dataclass(frozen=True)
class ModeCensus:
    """Which cycles sit in which mode.

    ``assignment``: a ``pandas.DataFrame`` indexed by ``(chain, cycle)`` with the column
    ``mode`` (``-1``: in transit between modes during its draws); ``modes``: one row per
    mode with ``cycles`` (how many found it) and the median location of its cycles for
    every element that separates modes; ``elements``: those elements.

    Example::

        >>> import numpy as np, xarray as xr
        >>> from pyro_csg import mode_census
        >>> rng = np.random.default_rng(0)
        >>> modes = np.repeat([-3.0, 3.0], 10)
        >>> draws = (modes[:, None] + 0.3 * rng.normal(size=(20, 5))).reshape(1, -1)
        >>> cycle = np.repeat(np.arange(20), 5)
        >>> posterior = xr.Dataset({"x": (("chain", "draw"), draws)},
        ...                        coords={"cycle": ("draw", cycle)})
        >>> census = mode_census(posterior)
        >>> census.num_modes, census.modes["cycles"].tolist()
        (2, [10, 10])
    """

    assignment: Any
    modes: Any
    elements: list[str]

    @property
    def num_modes(self) -> int:
        """How many distinct modes the cycles found."""
        return len(self.modes)


def mode_census(idata, var_names: Sequence[str] | None = None) -> ModeCensus:
    """How many distinct modes the cycles found, and which cycles sit in which.

    The rule: when :func:`cycle_diagnostic` alarms on at least one element, the run is
    multimodal, and every element along which the cycle locations (each cycle's median
    draw) fall into two or more groups -- cut at every gap of at least 4 within-cycle sds
    (``SEPARATION_THRESHOLD``), the diagnostic's own groups -- separates modes, whether
    or not that element alarms by itself (a mode found by two cycles cannot raise the
    alarm, yet it is a mode). Two cycles are in the same mode when they share a group
    along every such element; modes are numbered by how many cycles found them, most
    first. A cycle whose draws spread over more than 3 within-cycle sds along such an
    element changed mode while sampling and is counted in transit (``mode = -1``), in no
    mode. Without any alarm all the cycles are one mode. A mode found by one cycle is
    counted.

    For a predictive model, :func:`cycle_disagreement` gives the function-space view:
    how often two cycles' predictions differ.

    :param idata: from :func:`pyro_csg.to_inference_data` (either ``group_by``), or
        a posterior ``xarray.Dataset`` with a ``cycle`` coordinate.
    :param var_names: the posterior variables to look at (default: all).
    :returns: a :class:`ModeCensus`.

    Example::

        >>> import numpy as np, xarray as xr
        >>> from pyro_csg import mode_census
        >>> rng = np.random.default_rng(1)
        >>> centres = rng.choice([-4.0, 0.0, 4.0], size=(30, 1, 2))   # 9 modes in 2-D
        >>> draws = (centres + 0.2 * rng.normal(size=(30, 10, 2))).reshape(1, 300, 2)
        >>> cycle = np.repeat(np.arange(30), 10)
        >>> posterior = xr.Dataset({"x": (("chain", "draw", "x_dim"), draws)},
        ...                        coords={"cycle": ("draw", cycle)})
        >>> census = mode_census(posterior)
        >>> census.num_modes, int(census.modes["cycles"].sum())
        (9, 30)
    """
    return take_census(analyse(idata, var_names))


def take_census(analysis: Analysis) -> ModeCensus:
    import pandas as pd

    labels, groups = analysis.labels, analysis.groups
    # Once one element alarms, the run is multimodal, and every element whose cycles fall
    # into separate groups separates modes: on the 25 Gaussians a mode found twice along
    # x[0] but by several cycles along x[1] is still its own mode. Without an alarm the
    # gaps are chance (or too few cycles to tell): one mode.
    alarmed = np.flatnonzero(groups.num_groups >= 2) if groups.alarm.any() else np.array([], int)
    num_cycles = analysis.values.shape[1]
    keys = groups.group[alarmed].T.reshape(num_cycles, len(alarmed))
    transit = (keys < 0).any(axis=1)
    combos: dict[tuple[int, ...], list[int]] = {}
    for cycle in np.flatnonzero(~transit):
        combos.setdefault(tuple(keys[cycle]), []).append(int(cycle))
    ordered = sorted(combos.values(), key=lambda members: (-len(members), members[0]))
    mode = np.full(num_cycles, -1)
    rows = []
    for number, members in enumerate(ordered):
        mode[members] = number
        row = {"cycles": len(members)}
        for element in alarmed:
            row[labels[element]] = float(np.median(groups.locations[element, members]))
        rows.append(row)
    assignment = pd.DataFrame(
        {"mode": mode},
        index=pd.MultiIndex.from_arrays(
            [analysis.chains, analysis.cycles], names=["chain", "cycle"]
        ),
    )
    modes = pd.DataFrame(rows, columns=["cycles", *[labels[e] for e in alarmed]])
    modes.index.name = "mode"
    return ModeCensus(assignment, modes, [labels[e] for e in alarmed])


def cycle_disagreement(predictions, cycles) -> Any:
    """How often two cycles' predictions differ: the function-space view of the modes.

    Each cycle's prediction on a point is the class its draws predict together: the arg
    max of their mean probabilities (``predictions`` of shape ``(draws, points,
    classes)``, e.g. a ``Predictive`` site holding softmax outputs), or the most frequent
    of their predicted labels (``(draws, points)`` integers, e.g. the ``obs`` site of
    ``Predictive``). Entry ``(a, b)`` is the share of points on which cycles ``a`` and
    ``b`` predict different classes. Cycles in one mode of a network's posterior agree
    on nearly every point; cycles in different modes disagree where the data do not pin
    the function down.

    :param predictions: ``(draws, points)`` labels or ``(draws, points, classes)``
        probabilities, one row per retained draw, in the run's order.
    :param cycles: the cycle of every draw, ``(draws,)``: with ``group_by="draw"``,
        ``idata.posterior["cycle"].values``.
    :returns: ``pandas.DataFrame`` (cycles x cycles), indexed by cycle number.

    Example::

        >>> import numpy as np
        >>> from pyro_csg import cycle_disagreement
        >>> labels = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0]])
        >>> cycle_disagreement(labels, cycles=[0, 0, 1, 1]).values.tolist()
        [[0.0, 0.25], [0.25, 0.0]]
    """
    import pandas as pd

    predictions = np.asarray(
        predictions.detach().cpu() if hasattr(predictions, "detach") else predictions
    )
    cycles = np.asarray(cycles).reshape(-1)
    if predictions.ndim not in (2, 3):
        raise ValueError(
            "predictions must be (draws, points) labels or (draws, points, classes) "
            f"probabilities, got shape {predictions.shape}"
        )
    if len(cycles) != len(predictions):
        raise ValueError(
            f"cycles has {len(cycles)} entries but predictions has {len(predictions)} draws"
        )
    numbers = np.unique(cycles)
    per_cycle = []
    for number in numbers:
        members = predictions[cycles == number]
        if predictions.ndim == 3:
            per_cycle.append(members.mean(axis=0).argmax(axis=-1))
        else:
            labels = members.astype(int)
            counts = np.apply_along_axis(
                np.bincount, 0, labels - labels.min(), minlength=int(np.ptp(labels)) + 1
            )
            per_cycle.append(counts.argmax(axis=0) + labels.min())
    stacked = np.stack(per_cycle)
    matrix = (stacked[:, None, :] != stacked[None, :, :]).mean(axis=-1)
    index = pd.Index(numbers, name="cycle")
    return pd.DataFrame(matrix, index=index, columns=index)
