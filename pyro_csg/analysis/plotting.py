"""Figures of cyclical SG-MCMC: the step-size schedule, and draws coloured by cycle.

Both functions use matplotlib's object API, never ``pyplot.show``, and return their
Axes, so they work in notebooks and headless (the Agg backend) alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.checks import check_int
from ..core.schedules import CosineCyclical, CycleLayout
from .arviz_lines import group
from .cycles import scalar_elements
from .modes import analyse, cycle_points, diagnostic_table, take_census

__all__ = ["plot_schedule", "plot_cycles", "plot_cycle_diagnostics"]

EXPLORE_COLOR = "#f5c27a"  # saturated enough to see a stage of 3% of a cycle
SAMPLE_COLOR = "#cfe3f3"
DRAW_COLOR = "#c0392b"


def _new_axes(ax, **figure_kwargs):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(layout="constrained", **figure_kwargs)
    return ax


def plot_schedule(
    kernel_or_schedule: Any,
    num_cycles: int,
    ax=None,
    *,
    layout: CycleLayout | None = None,
):
    """Step size against iteration, stages shaded and retained draws marked.

    The standard cSG-MCMC figure: for each cycle, the exploration stage (no noise) is
    shaded in one colour and the sampling stage (Langevin noise) in another, and a dot
    marks each retained draw on the step-size curve.

    :param kernel_or_schedule: a :class:`~pyro_csg.CyclicalSGLD` /
        :class:`~pyro_csg.CyclicalSGHMC` kernel (its schedule and cycle layout), or a
        schedule callable ``k -> eta_k``; a bare schedule is drawn without stages or
        draws unless ``layout`` is given.
    :param int num_cycles: cycles to draw (>= 1).
    :param ax: matplotlib Axes to draw on (default: a new figure).
    :param CycleLayout layout: stages and retained draws for a bare schedule.
    :returns: the Axes. Its ``patches`` are the shaded stages (``2 * num_cycles`` with a
        layout that has an exploration stage) and ``collections[0]`` holds the retained
        draws' markers.

    Example::

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from pyro_csg import CyclicalSGLD, plot_schedule
        >>> kernel = CyclicalSGLD(lambda: None, step_size=0.1, steps_per_cycle=50,
        ...                       samples_per_cycle=3)
        >>> ax = plot_schedule(kernel, num_cycles=4)
        >>> len(ax.patches), len(ax.collections[0].get_offsets())
        (8, 12)
    """
    check_int("num_cycles", num_cycles, 1)
    schedule = getattr(kernel_or_schedule, "schedule", kernel_or_schedule)
    if not callable(schedule):
        raise TypeError(
            "plot_schedule expects a cyclical kernel or a schedule callable, got "
            f"{type(kernel_or_schedule).__name__}"
        )
    layout = getattr(kernel_or_schedule, "layout", layout)
    if layout is not None:
        steps = layout.steps_per_cycle
    elif isinstance(schedule, CosineCyclical):
        steps = schedule.steps_per_cycle
    else:
        raise ValueError(
            "plot_schedule needs the cycle length: pass a kernel, a CosineCyclical "
            "schedule, or layout=CycleLayout(...)"
        )
    total = num_cycles * steps
    iterations = np.arange(1, total + 1)
    step_sizes = np.array([schedule(int(k)) for k in iterations])

    ax = _new_axes(ax, figsize=(8, 3.4))
    title = f"{type(schedule).__name__} schedule, {num_cycles} cycles"
    if layout is not None:
        explore = layout.num_exploration_steps
        for cycle in range(num_cycles):
            start = cycle * steps + 0.5
            if explore:
                ax.axvspan(
                    start,
                    start + explore,
                    color=EXPLORE_COLOR,
                    lw=0,
                    label="exploration stage (no noise)" if cycle == 0 else None,
                )
            ax.axvspan(
                start + explore,
                start + steps,
                color=SAMPLE_COLOR,
                lw=0,
                label="sampling stage (noise added)" if cycle == 0 else None,
            )
        title += (
            f" of {steps} steps: exploration {layout.exploration_fraction:.0%} of each, "
            f"{layout.samples_per_cycle} draws kept per cycle"
        )
    ax.plot(iterations, step_sizes, color="black", lw=1.5, label="step size", zorder=2)
    if layout is not None:
        # The retained draws as ticks in a strip along the bottom, not on the curve: at
        # 100 draws a cycle, markers on the curve would hide it.
        from matplotlib.transforms import blended_transform_factory

        retained = np.array(
            [layout.retained_iteration(n) for n in range(num_cycles * layout.samples_per_cycle)]
        )
        ax.scatter(
            retained,
            np.full(len(retained), 0.045),
            marker="|",
            s=60,
            linewidths=0.8,
            color=DRAW_COLOR,
            transform=blended_transform_factory(ax.transData, ax.transAxes),
            zorder=3,
            label="a retained draw (one tick each)",
        )
    ax.set_xlim(0.5, total + 0.5)
    ax.set_ylim(-0.12 * float(step_sizes.max()), 1.05 * float(step_sizes.max()))
    ax.set_xlabel("iteration k")
    ax.set_ylabel("step size eta_k")
    ax.set_title(title, fontsize="medium")
    # Below the axes, never on the data.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, fontsize="small")
    return ax


def plot_cycles(
    idata,
    var_names: Sequence[str] | None = None,
    *,
    max_plots: int = 12,
    cmap: str = "viridis",
):
    """Each variable's draws against the iteration, coloured by cycle.

    One panel per scalar element (``w[0]``, ``w[1]``, ...), at most ``max_plots``; each
    chain has its own marker. Draws of one cycle share a colour, so cycles that settled
    in different modes show as bands of different colours.

    :param idata: from :func:`pyro_csg.to_inference_data` (either ``group_by``), or
        a posterior ``xarray.Dataset`` with ``cycle`` and ``iteration`` coordinates.
    :param var_names: the posterior variables to draw (default: all).
    :param int max_plots: the most panels to draw (default 12).
    :param str cmap: the matplotlib colormap for the cycles.
    :returns: a NumPy array of Axes, one per panel drawn.

    Example::

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np, xarray as xr
        >>> from pyro_csg import plot_cycles
        >>> posterior = xr.Dataset(
        ...     {"w": (("chain", "draw", "w_dim"), np.zeros((1, 8, 2)))},
        ...     coords={"cycle": ("draw", np.repeat([0, 1], 4)),
        ...             "iteration": ("draw", np.arange(1, 9))})
        >>> [ax.get_title() for ax in plot_cycles(posterior)]
        ['w[0]', 'w[1]']
    """
    import matplotlib.pyplot as plt

    posterior = group(idata, "posterior")
    if posterior is None or "cycle" not in posterior.coords or "iteration" not in posterior.coords:
        raise ValueError(
            "plot_cycles needs an InferenceData from pyro_csg.to_inference_data "
            "(its posterior has no 'cycle' / 'iteration' coordinates)"
        )
    names = list(posterior.data_vars) if var_names is None else list(var_names)
    missing = [name for name in names if name not in posterior.data_vars]
    if missing:
        raise ValueError(
            f"var_names {missing} are not in the posterior: {list(posterior.data_vars)}"
        )
    # Cycle and iteration as (chain, draw) arrays, whichever way the draws are grouped.
    shape = (posterior.sizes["chain"], posterior.sizes["draw"])
    cycles = np.broadcast_to(
        posterior["cycle"].values[:, None]
        if posterior["cycle"].dims == ("chain",)
        else posterior["cycle"].values,
        shape,
    )
    iterations = np.broadcast_to(posterior["iteration"].values, shape)
    if "mcmc_chain" in posterior.coords:
        chains = np.broadcast_to(posterior["mcmc_chain"].values[:, None], shape)
    else:
        chains = np.broadcast_to(np.arange(shape[0])[:, None], shape)

    panels = [element for name in names for element in scalar_elements(posterior[name])][:max_plots]
    if not panels:
        raise ValueError("nothing to plot")
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4 * columns, 2.6 * rows), squeeze=False, layout="constrained"
    )
    markers = "o^sDv<>"
    norm = plt.Normalize(cycles.min(), max(cycles.max(), cycles.min() + 1))
    for ax, (label, values) in zip(axes.flat, panels, strict=False):
        for chain in np.unique(chains):
            where = chains == chain
            scatter = ax.scatter(
                iterations[where],
                values[where],
                c=cycles[where],
                cmap=cmap,
                norm=norm,
                s=12,
                marker=markers[int(chain) % len(markers)],
            )
        ax.set_title(label)
        ax.set_xlabel("iteration")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    figure.colorbar(scatter, ax=axes.ravel().tolist(), label="cycle")
    return axes.ravel()[: len(panels)]


def _place_in_cycle(posterior, shape: tuple[int, int]) -> np.ndarray:
    """Each draw's place within its cycle, 0 for the first, as a ``(chain, draw)`` array:
    with ``cycle`` along ``draw`` (``group_by="chain"``), the rank among the draws of
    its cycle; with every cycle an ArviZ chain (``group_by="cycle"``), the draw index."""
    cycle = posterior["cycle"]
    if cycle.dims == ("draw",):
        numbers = cycle.values.tolist()
        first: dict = {}
        for index, number in enumerate(numbers):
            first.setdefault(number, index)
        place = np.array([index - first[number] for index, number in enumerate(numbers)])
        return np.broadcast_to(place, shape)
    if "chain" in cycle.dims and "draw" not in cycle.dims:
        return np.broadcast_to(np.arange(shape[1]), shape)
    return np.zeros(shape)


def plot_cycle_diagnostics(
    idata,
    var_names: Sequence[str] | None = None,
    *,
    max_plots: int = 8,
):
    """Per-cycle locations against the pooled posterior, the mode census, and the
    gradient-noise ratio.

    One panel per scalar element (at most ``max_plots``; the elements that alarm in
    :func:`pyro_csg.cycle_diagnostic` first): each cycle's location with a bar of its
    draws' spread, as the diagnostic measures them (the median draw, and the sd -- for
    10 draws or more, 1.4826 times the median absolute deviation, so that a cycle's
    first steps through other modes do not hide where it settled), per chain, over the
    pooled posterior's mean and a band of one pooled sd, titled with the diagnostic's
    verdict. Cycles that sample the same distribution scatter
    inside the band; cycles whose bars sit apart, in tight groups, found different modes
    (the alarm); cycles scattered over the band with short bars are correlated draws of
    one mode (no alarm). When :func:`pyro_csg.mode_census` finds more than one mode, the
    cycles are coloured by mode (grey: in transit) and a panel shows which mode each
    cycle sat in, cycle by cycle. A last panel draws each draw's ``noise_ratio``
    (``sample_stats``) against its iteration, log scale, with the lines at 0.5 (what the
    automatic step size allows at the sampling stage's first step) and 1 (above it the
    minibatch noise dominates the injected noise). The ratio scales with the step, which
    the cosine shrinks through a cycle, so the draws fall into bands by their place in
    the cycle (first highest); they are coloured by that place.

    :param idata: from :func:`pyro_csg.to_inference_data` (either ``group_by``), or
        a posterior ``xarray.Dataset`` with ``cycle`` and ``iteration`` coordinates.
    :param var_names: the posterior variables to draw (default: all).
    :param int max_plots: the most variable panels to draw (default 8).
    :returns: a NumPy array of the Axes drawn: the elements, then the census (with
        more than one mode), then the noise (when ``sample_stats`` has ``noise_ratio``).

    Example::

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np, xarray as xr
        >>> from pyro_csg import plot_cycle_diagnostics
        >>> draws = np.random.default_rng(0).normal(size=(1, 12))
        >>> where = {"cycle": ("draw", np.repeat([0, 1, 2], 4)),
        ...          "iteration": ("draw", np.arange(1, 13))}
        >>> noise = np.full((1, 12), 0.1)
        >>> idata = xr.DataTree.from_dict({
        ...     "posterior": xr.Dataset({"mu": (("chain", "draw"), draws)}, coords=where),
        ...     "sample_stats": xr.Dataset({"noise_ratio": (("chain", "draw"), noise)}),
        ... })
        >>> [ax.get_title() for ax in plot_cycle_diagnostics(idata)]
        ['mu', 'noise_ratio']

    With two modes found by the cycles::

        >>> rng = np.random.default_rng(1)
        >>> modes = np.repeat([-3.0, 3.0], 5)
        >>> draws = (modes[:, None] + 0.3 * rng.normal(size=(10, 4))).reshape(1, -1)
        >>> posterior = xr.Dataset(
        ...     {"mu": (("chain", "draw"), draws)},
        ...     coords={"cycle": ("draw", np.repeat(np.arange(10), 4)),
        ...             "iteration": ("draw", np.arange(1, 41))})
        >>> [ax.get_title() for ax in plot_cycle_diagnostics(posterior)]
        ['mu: 2 groups, separation 22.9 (alarm)', 'mode census: 2 modes']
    """
    import matplotlib.pyplot as plt

    analysis = analyse(idata, var_names)  # regrouped once for the table, census and points
    verdicts = diagnostic_table(analysis)
    ranked = verdicts.assign(order=range(len(verdicts)))
    labels = list(ranked.sort_values(["alarm", "order"], ascending=[False, True]).index)
    labels = labels[:max_plots]
    table = cycle_points(analysis, labels)
    census = take_census(analysis)
    multimodal = census.num_modes > 1
    mode_of = census.assignment["mode"]
    pooled = {}
    posterior = group(idata, "posterior")
    names = list(posterior.data_vars) if var_names is None else list(var_names)
    for name in names:
        for label, values in scalar_elements(posterior[name]):
            if label in labels:
                pooled[label] = (float(values.mean()), float(values.std(ddof=1)))
    stats = group(idata, "sample_stats")
    noise = stats is not None and "noise_ratio" in stats
    panels = len(labels) + int(multimodal) + int(noise)
    columns = min(3, panels)
    rows = -(-panels // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4 * columns, 2.6 * rows), squeeze=False, layout="constrained"
    )
    markers = "o^sDv<>"

    def colour(chain: int, cycles: np.ndarray) -> list:
        modes = [mode_of.get((chain, int(cycle)), -1) for cycle in cycles]
        return ["0.6" if mode < 0 else f"C{mode % 10}" for mode in modes]

    for ax, label in zip(axes.flat, labels, strict=False):
        rows_of = table.xs(label, level="variable")
        mean, sd = pooled[label]
        ax.axhspan(mean - sd, mean + sd, color=SAMPLE_COLOR, label="pooled draws: mean ± 1 sd")
        ax.axhline(mean, color="0.3", linewidth=1)
        for chain in rows_of.index.get_level_values("chain").unique():
            part = rows_of.xs(chain, level="chain")
            x = part.index.values
            ax.errorbar(
                x,
                part["location"].values,
                yerr=part["spread"].values,
                fmt=markers[int(chain) % len(markers)],
                markersize=4,
                capsize=2,
                color="C0" if not multimodal else "0.4",
                label=f"a cycle of chain {chain}: median draw ± spread",
                zorder=1,
            )
            if multimodal:
                ax.scatter(
                    x,
                    part["location"].values,
                    c=colour(int(chain), x),
                    marker=markers[int(chain) % len(markers)],
                    s=16,
                    zorder=2,
                )
        separation = float(verdicts.loc[label, "separation"])
        found, alarm = int(verdicts.loc[label, "groups"]), bool(verdicts.loc[label, "alarm"])
        if np.isnan(separation):
            ax.set_title(label)
        else:
            ax.set_title(
                f"{label}: {found} group{'s' * (found > 1)}, separation {separation:.1f} "
                f"({'alarm' if alarm else 'no alarm'})"
            )
        ax.set_xlabel("cycle")
        ax.set_ylabel(label)
    if labels:
        # One legend for the element panels, under the first: the dot, the bar, the band.
        axes.flat[0].legend(fontsize="x-small", loc="best", framealpha=0.9)
    panel = len(labels)
    if multimodal:
        ax = axes.flat[panel]
        panel += 1
        for chain in mode_of.index.get_level_values("chain").unique():
            part = mode_of.xs(chain, level="chain")
            ax.scatter(
                part.index.values,
                part.values,
                c=colour(int(chain), part.index.values),
                marker=markers[int(chain) % len(markers)],
                s=20,
            )
        ticks = list(range(-1, census.num_modes, max(1, -(-census.num_modes // 8))))
        ax.set_yticks(ticks)
        ax.set_yticklabels(["transit", *map(str, ticks[1:])])
        along = ", ".join(census.elements[:3]) + (", ..." if len(census.elements) > 3 else "")
        ax.set_title(f"mode census: {census.num_modes} modes")
        ax.set_xlabel("cycle")
        ax.set_ylabel(f"mode (split along {along})", fontsize="small")
    if noise:
        ax = axes.flat[panel]
        ratios = stats["noise_ratio"].transpose("chain", "draw").values
        iterations = np.broadcast_to(posterior["iteration"].values, ratios.shape)
        # The ratio scales with the step, which the cosine shrinks through a cycle: the
        # draws' bands are their places in the cycle, coloured so (first to last).
        place = _place_in_cycle(posterior, ratios.shape)
        positive = ratios > 0
        points = ax.scatter(
            iterations[positive], ratios[positive], s=10, c=place[positive], cmap="viridis"
        )
        if place.max() > 0:
            bar = figure.colorbar(points, ax=ax, pad=0.01)
            bar.set_label("draw's place in its cycle (0: first)", fontsize="x-small")
            if place.max() < 10:
                bar.set_ticks(range(int(place.max()) + 1))
        for level, style, meaning in (
            (0.5, ":", "0.5: the automatic step's bound"),
            (1.0, "--", "1: minibatch noise = injected noise"),
        ):
            ax.axhline(level, color="C3", linestyle=style, linewidth=1, label=meaning)
        if positive.any():
            ax.set_yscale("log")
        ax.legend(fontsize="x-small", loc="lower left", framealpha=0.9)
        ax.set_title("noise_ratio")
        ax.set_xlabel("iteration")
        ax.set_ylabel("minibatch / injected noise")
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    return axes.ravel()[:panels]
