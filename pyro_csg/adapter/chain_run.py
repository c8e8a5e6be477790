"""One chain of a kernel's run in progress: the core chain, its record, its noise
measurement, what Pyro's progress bar shows of it, and its warnings."""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.drift import DriftCheck, drift_message, effective_draws_message
from ..core.errors import SamplerWarning
from ..core.noise import CycleNoise, noise_warning
from ..core.regions import Region, regions_apart, regions_message
from ..core.runaway import RunawayReport, runaway_cycles
from ..core.sampler import (
    Chain,
    advance_safely,
    backoff_message,
    choose_exploration,
    show_exploration,
    skipped_cycles,
    start,
)
from ..core.temperature import TemperatureCheck, TemperatureReport, temperature_message
from ..services.resume import ChainRecord
from ..services.store import write_checks
from .pyro_runner import in_warmup_habit, runner_num_samples, runner_progress_bars, warmup_message

__all__ = [
    "ChainRun",
    "checks_attrs",
    "checks_by_coordinate",
    "drift_attrs",
    "drift_by_coordinate",
    "marks_attrs",
    "estimator_attrs",
    "exploration_attrs",
    "temperature_attrs",
    "temperature_by_coordinate",
    "tuning_attrs",
]


@dataclass
class ChainRun:
    """One chain of the run in progress: the core chain (working parts), its record
    (committed state, kept draws, resume), its noise measurement, and how far the
    kernel got with it."""

    chain: Chain
    record: ChainRecord
    noise: CycleNoise
    temperature: TemperatureCheck
    drift: DriftCheck | None = None  # made for the chain's cycle layout when not given
    backend: str = "eager"  # how the potential is evaluated: "graph", "inductor", "eager"
    ready: bool = False  # compiled, verified and started
    runaway_reported: bool = False
    noise_reported: bool = False
    backoffs: list = field(default_factory=list)  # (iteration, new eta_1) of each back-off
    backoffs_reported: int = 0
    temperature_reported: bool = False
    drift_reported: bool = False
    ess_reported: bool = False
    regions_reported: bool = False
    # What the run's warnings said of its draws, in the order they fired ("start",
    # "noise", "backoff", "runaway", "temperature", "drift", "ess", "region"): the run's mark, for
    # hyperparameters() and the InferenceData's attrs.
    marks: list = field(default_factory=list)
    bars: list = field(default_factory=list)  # Pyro's progress bar(s) for this chain
    num_samples: int | None = None  # the run's kept draws, when Pyro's runner says
    num_cycles: int | None = None  # of the whole run (warm-up included), when known
    chain_tag: str = ""  # " [i]" when Pyro runs several chains, as its labels say

    def __post_init__(self) -> None:
        if self.drift is None:  # cycles with a noise-free exploration stage, or without
            self.drift = DriftCheck(self.chain.config.layout.num_exploration_steps > 0)

    @property
    def state(self):
        return self.record.state

    def advance(self, state, layout):
        """The state at the next retained draw, the back-offs on the way recorded (and,
        at a cycle's start, what its exploration stage does: :func:`choose_exploration`)."""
        state = choose_exploration(self.chain.config, state, self.drift)
        target = layout.retained_iteration(state.draws)

        def backed_off(error, step: float) -> None:
            self.backoffs.append((error.iteration, step))

        return advance_safely(self.chain, state, target, backed_off)

    def replay(self) -> dict[str, torch.Tensor]:
        """A resumed run's draw, read back; a kept one is shown to the drift check, which
        so knows the whole run's cycles (its one-mode test chooses the exploration's
        noise, as in the uninterrupted run)."""
        record = self.record
        kept = record.replayed >= record.warmup_steps
        draw = record.replay()
        if kept:
            show_exploration(record.state, self.drift)
            self.drift.add(record.stats["cycle"][-1], record.flat.flatten(draw))
        return draw

    def progress(self, layout) -> OrderedDict:
        """What Pyro's progress bar shows after a draw: the cycle (of how many), the
        draw's iteration within its cycle, the step size and ``U~``. (Every draw lies in
        a sampling stage, so the stage is not shown: the iteration says where it is.)"""
        state = self.state
        if state.iteration == 0:
            return OrderedDict()
        cycle = layout.cycle(state.iteration) + 1  # counted from 1 on the bar
        length = layout.steps_per_cycle
        within = layout.position(state.iteration) + 1
        return OrderedDict(
            [
                ("cycle", f"{cycle}/{self.num_cycles}" if self.num_cycles else cycle),
                ("iteration", f"{within}/{length}"),
                ("step size", f"{state.step_size:.2e}"),
                ("potential", f"{state.energy.item():.4g}"),
            ]
        )

    def watch_progress(self, num_chains: int | None, samples_per_cycle: int) -> None:
        """Find Pyro's progress bar for this chain, to say what the kernel is doing."""
        self.bars = runner_progress_bars()
        self.chain_tag = f" [{self.record.index}]" if num_chains and num_chains > 1 else ""
        self.num_samples = runner_num_samples()
        if self.num_samples:
            draws = self.record.warmup_steps + self.num_samples
            self.num_cycles = math.ceil(draws / samples_per_cycle)
        self.label("Start")

    def label(self, text: str) -> None:
        """Relabel Pyro's progress bar (Pyro says ``Warmup`` until the first draw), in
        Pyro's form: ``Sample`` for one chain, ``Sample [1]`` for chain 1 of several."""
        for bar in self.bars:
            bar.set_description(f"{text}{self.chain_tag}", refresh=True)

    def begin(self, kernel: Any) -> None:
        """Start the chain (optimisation, tuning), saying which on the progress bar, and
        warn when a warm-up will throw away cycles after a start that converged."""
        record = self.record
        was_started = record.state.started
        with warnings.catch_warnings(record=True) as caught:
            # Every SamplerWarning is caught here, so the run is marked even where the
            # user ignores them; passed on below, they meet the user's filters.
            warnings.simplefilter("always", SamplerWarning)
            record.state = start(
                self.chain, record.state, lambda stage: self.label(f"Start: {stage}")
            )
        for found in caught:  # passed on as they were, the run marked by the kind
            if issubclass(found.category, SamplerWarning):
                self.mark("noise" if "noise" in str(found.message) else "start")
            warnings.warn_explicit(found.message, found.category, found.filename, found.lineno)
        self.label("Warmup" if record.warmup_steps else "Sample")
        warmup, start_steps = record.warmup_steps, record.state.start_steps
        if not was_started and in_warmup_habit(warmup, start_steps, kernel):
            name = type(kernel).__name__
            message = warmup_message(name, warmup, start_steps, kernel, self.num_samples)
            warnings.warn(message, SamplerWarning, stacklevel=5)

    def kept_stats(self) -> dict[str, list]:
        """The per-draw statistics of the chain's kept draws (warm-up left out)."""
        record = self.record
        return {key: list(values[: record.kept]) for key, values in record.stats.items()}

    def runaway(self, stats: dict[str, list]) -> RunawayReport:
        """The runaway cycles among the draws of ``stats`` (:mod:`pyro_csg.core.runaway`)."""
        size, temperature = self.record.flat.size, self.chain.config.temperature
        return runaway_cycles(stats["cycle"], stats["potential_energy"], size, temperature)

    def report(self, stats: dict[str, list], kernel: Any):
        """The chain's runaway cycles; the first time, warn about them and about a
        minibatch noise that dominated the injected noise."""
        record = self.record
        per_cycle = kernel.samples_per_cycle
        report = self.runaway(stats)
        if report.cycles and not self.runaway_reported:
            self.runaway_reported = True
            self.mark("runaway")
            warnings.warn(report.message(record.index, per_cycle), SamplerWarning, stacklevel=3)
        if not self.noise_reported and (kernel.schedule is not None or self.state.tuning):
            self.noise_reported = True
            message = noise_warning(
                f"{type(kernel).__name__}: chain {record.index}",
                stats,
                kernel.layout,
                self.chain.schedule(self.state),
                len(self.chain.batches),  # one cursor per subsampled plate
                kernel.control_variates is False,
            )
            if message:
                self.mark("noise")
                warnings.warn(message, SamplerWarning, stacklevel=3)
        self._report_temperature(type(kernel).__name__, kernel.auto_step_size)
        self._report_drift(type(kernel).__name__)
        self._report_regions(type(kernel).__name__, stats, report.cycles)
        if len(self.backoffs) > self.backoffs_reported:
            self.backoffs_reported = len(self.backoffs)
            self.mark("backoff")
            name = f"{type(kernel).__name__}: chain {record.index}"
            warnings.warn(backoff_message(name, self.backoffs), SamplerWarning, stacklevel=3)
        return report

    def finish(self) -> None:
        """After the chain's last draw (and the warnings): its final checkpoint and, in a
        run folder, what the checks found, so that a run in doubt read back from the
        folder carries its mark as the InferenceData of the run does."""
        self.record.finish()
        if self.record.files is not None:
            write_checks(self.record.files.folder, checks_attrs([self]))

    def check(self, cycle: int, theta: torch.Tensor, grad: torch.Tensor) -> None:
        """Give a retained draw (flat ``theta``, the gradient there) to the checks on
        the draws: the temperature and the drift."""
        self.temperature.add(cycle, theta, grad)
        self.drift.add(cycle, theta)

    def mark(self, kind: str) -> None:
        """Note that a warning of this kind fired about the chain's draws."""
        if kind not in self.marks:
            self.marks.append(kind)

    def temperature_report(self) -> TemperatureReport | None:
        """The configurational temperature of the chain's retained draws so far
        (:mod:`pyro_csg.core.temperature`; ``None`` before the first)."""
        return self.temperature.report()

    def _scale_sites(self) -> set[str]:
        """The sites on ``(0, inf)`` (a hierarchy's scales): their map from the
        unconstrained space goes to 0 at one end and without bound at the other."""
        found = set()
        for site in self.record.sites:
            try:
                low, high = (
                    site.transform.inv(torch.full(site.unconstrained_shape, value))
                    for value in (-30.0, 30.0)
                )
            except Exception:  # noqa: BLE001 - a transform that cannot say is no scale
                continue
            if bool(((low >= 0) & (low < 1e-6)).all() and (high > 1e6).all()):
                found.add(site.name)
        return found

    def _report_temperature(self, kernel_name: str, auto_step: bool) -> None:
        if self.temperature_reported:
            return
        report = self.temperature.report()
        if report is None or not report.flagged:
            return
        self.temperature_reported = True
        self.mark("temperature")
        name = f"{kernel_name}: chain {self.record.index}"
        labels = self.record.flat.labels()
        scales = [label for label in labels if label.split("[")[0] in self._scale_sites()]
        message = temperature_message(name, report, labels, auto_step, scales)
        warnings.warn(message, SamplerWarning, stacklevel=4)

    def regions(self, stats: dict[str, list], runaway: Sequence[int] = ()) -> list[Region]:
        """The chain's regions apart so far (:mod:`pyro_csg.core.regions`), the runaway
        cycles left out (already reported); ``[]`` for a model whose cycles' means are not
        kept (above :data:`~pyro_csg.core.drift.SPREAD_MAX_DIM` coordinates)."""
        summaries = self.drift.cycle_summaries()
        if summaries is None:
            return []
        cycles, means, sds = summaries
        left_out = set(runaway)
        keep = [i for i, cycle in enumerate(cycles) if cycle not in left_out]
        of_draw = np.asarray(stats["cycle"])
        energies = np.asarray(stats["potential_energy"], dtype=float)
        levels = [float(np.median(energies[of_draw == cycles[i]])) for i in keep]
        chosen = [cycles[i] for i in keep]
        return regions_apart(chosen, means[keep].numpy(), sds[keep].numpy(), levels)

    def _report_regions(self, kernel_name: str, stats: dict, runaway: Sequence[int]) -> None:
        if self.regions_reported:
            return
        name = f"{kernel_name}: chain {self.record.index}"
        message = regions_message(name, self.regions(stats, runaway), self.record.flat.labels())
        if message:
            self.regions_reported = True
            self.mark("region")
            warnings.warn(message, SamplerWarning, stacklevel=4)

    def _report_drift(self, kernel_name: str) -> None:
        report = self.drift.report()
        if report is not None and not self.ess_reported and report.few_effective.any():
            self.ess_reported = True
            self.mark("ess")
            name = f"{kernel_name}: chain {self.record.index}"
            message = effective_draws_message(name, report, self.record.flat.labels())
            warnings.warn(message, SamplerWarning, stacklevel=4)
        if self.drift_reported or report is None or not report.any:
            return
        self.drift_reported = True
        self.mark("drift")
        name = f"{kernel_name}: chain {self.record.index}"
        message = drift_message(name, report, self.record.flat.labels())
        warnings.warn(message, SamplerWarning, stacklevel=4)


def tuning_attrs(runs: list[ChainRun]) -> dict[str, Any]:
    """Each chain's automatic step (``nan`` before its start), its noise ratio, how
    often the step was halved, whether its preconditioner is dense (``full_mass``) and
    the condition number the diagonal leaves and, for a model with one subsampled
    plate, the batch it reads a step (grown where the noise cut the step: ``max_batch_size``), for
    ``hyperparameters()``."""
    tunings = [run.state.tuning for run in runs]
    attrs = {
        "tuned_step_size": [math.nan if t is None else t.step_size for t in tunings],
        "noise_ratio": [math.nan if t is None else t.noise_ratio for t in tunings],
        "backoffs": [run.state.backoffs for run in runs],
    }
    if any(t is not None and t.preconditioner is not None for t in tunings):
        # Whether the preconditioner is dense, and the Hessian's condition number once
        # the diagonal has scaled it (nan: not measured), which chose it (full_mass=None).
        attrs["dense_mass"] = [t is not None and t.dense for t in tunings]
        attrs["curvature_condition"] = [
            math.nan if t is None or t.condition is None else t.condition for t in tunings
        ]
    cursors = [run.chain.batches for run in runs]
    if cursors and all(len(chain) == 1 for chain in cursors):
        attrs["subsample_size"] = [chain[0].plate.subsample_size for chain in cursors]
    return attrs


def exploration_attrs(runs: list[ChainRun]) -> dict[str, Any]:
    """From which cycle each chain's exploration stage stopped being noise-free (-1:
    never, as netCDF attrs keep no ``None``), how many cycles skipped it and their
    sampling stride, for
    ``hyperparameters()`` where the kernel decides it (``exploration_noise="auto"`` with
    an exploration stage)."""
    config = runs[0].chain.config if runs else None
    if config is None or config.exploration_noise != "auto":
        return {}
    if not config.layout.num_exploration_steps:
        return {}
    cycles = [run.state.noisy_exploration_from for run in runs]
    return {
        "noisy_exploration_from": [-1 if cycle is None else cycle for cycle in cycles],
        "exploration_skipped_cycles": [skipped_cycles(config, run.state) for run in runs],
        "sampling_stride": [run.state.sampling_stride for run in runs],
    }


def estimator_attrs(runs: list[ChainRun]) -> dict[str, Any]:
    """Whether each started chain chose control variates at its start (1) or not (0),
    for ``hyperparameters()`` when the kernel left the choice to the noise (netCDF attrs
    keep ints, not bools)."""
    if not runs:
        return {}
    used = [int(getattr(run.state.estimator, "centre", None) is not None) for run in runs]
    return {"control_variates_used": used}


def temperature_attrs(runs: list[ChainRun]) -> dict[str, Any]:
    """The chains' configurational temperatures for ``hyperparameters()`` (and so the
    InferenceData's attrs): each chain's lowest and highest over its coordinates, and the
    flagged coordinates as one string (``""`` when none)."""
    reports = [run.temperature_report() for run in runs]
    if all(report is None for report in reports):
        return {}
    low = [math.nan if r is None else float(r.temperature.min()) for r in reports]
    high = [math.nan if r is None else float(r.temperature.max()) for r in reports]
    flagged = []
    for run, report in zip(runs, reports, strict=True):
        if report is not None and report.flagged:
            labels = run.record.flat.labels()
            mask = report.cold | report.hot
            shown = [f"{labels[i]} {report.temperature[i]:.2g}" for i in mask.nonzero()[:, 0]]
            shown += [f"a widest direction {value:.2g}" for value, _ in report.cold_directions]
            flagged.append(f"chain {run.record.index}: {', '.join(shown[:20])}")
    return {
        "temperature_check_min": low,
        "temperature_check_max": high,
        "temperature_check_flagged": "; ".join(flagged),
    }


def temperature_by_coordinate(run: ChainRun | None) -> dict[str, float]:
    """``{coordinate label: temperature}`` of a chain's draws so far, for ``diagnostics()``."""
    report = None if run is None else run.temperature_report()
    if report is None:
        return {}
    labels = run.record.flat.labels()
    return {label: float(value) for label, value in zip(labels, report.temperature, strict=True)}


def drift_attrs(runs: list[ChainRun]) -> dict[str, Any]:
    """The coordinates that had not arrived (:mod:`pyro_csg.core.drift`), per chain, as
    one string (``""`` when none), for ``hyperparameters()``: ``"chain 0: tau settling
    -0.9 sd, w[1] travelling +3 sd"``, and those with few effective draws (``"R0 12
    effective draws"``)."""
    reports = [run.drift.report() for run in runs]
    if all(report is None for report in reports):
        return {}
    flagged = []
    for run, report in zip(runs, reports, strict=True):
        if report is None or not (report.any or report.few_effective.any()):
            continue
        labels = run.record.flat.labels()
        shown = [
            f"{labels[i]} {kind} {float(values[i]):+.2g} sd"
            for kind, mask, values in (
                ("travelling", report.travelling, report.drift),
                ("settling", report.settling, report.settle),
            )
            for i in mask.nonzero()[:, 0].tolist()
        ]
        shown += [
            f"{labels[i]} within-cycle spread {float(report.spread[i]):.2g}"
            for i in report.narrow.nonzero()[:, 0].tolist()
        ]
        shown += [
            f"{labels[i]} {float(report.effective_draws[i]):.0f} effective draws"
            for i in report.few_effective.nonzero()[:, 0].tolist()
        ]
        flagged.append(f"chain {run.record.index}: {', '.join(shown[:20])}")
    return {"drift_check_flagged": "; ".join(flagged)}


def marks_attrs(runs: list[ChainRun]) -> dict[str, Any]:
    """What the warnings said of each chain's draws, as one string for the InferenceData's
    attrs (netCDF keeps no lists of strings): ``"chain 0: noise, drift"``, ``""`` when no
    warning fired. A run whose draws are in doubt is marked in its results, not only in
    a warning that may have scrolled by."""
    if not runs:
        return {}
    marked = [f"chain {run.record.index}: {', '.join(run.marks)}" for run in runs if run.marks]
    return {"sampler_warnings": "; ".join(marked)}


def drift_by_coordinate(run: ChainRun | None) -> dict[str, dict[str, float]]:
    """A chain's trends so far, for ``diagnostics()``: ``{"across_cycles": {label: drift},
    "within_cycles": {label: settling}}``, both in sds of the draws (0 when arrived), and
    ``"within_cycle_spread"``: the pooled within-cycle sd over all draws' (about 1 when
    each cycle's draws mix); ``"effective_draws"``: what the draws are worth in
    independent ones (from the cycles' means)."""
    report = None if run is None else run.drift.report()
    if report is None:
        return {}
    labels = run.record.flat.labels()
    series = [("across_cycles", report.drift), ("within_cycles", report.settle)]
    if report.spread is not None:
        series.append(("within_cycle_spread", report.spread))
    if report.effective_draws is not None:
        series.append(("effective_draws", report.effective_draws))
    return {
        key: {label: float(value) for label, value in zip(labels, values, strict=True)}
        for key, values in series
    }


def region_attrs(runs: list[ChainRun]) -> dict[str, Any]:
    """The over-weighted regions apart (:mod:`pyro_csg.core.regions`), per chain, as one
    string (``""`` when none) for ``hyperparameters()``: ``"chain 0: cycles [7] along rho
    (gap 8.9, 14.8 above)"``; nothing for models whose cycles' means are not kept."""
    shown, checked = [], False
    for run in runs:
        if run.drift.cycle_summaries() is None:
            continue
        checked = True
        stats = run.kept_stats()
        labels = run.record.flat.labels()
        found = [
            f"cycles {region.cycles} along {labels[region.coordinate]} (gap "
            f"{region.gap:.2g}, {region.excess:.3g} above)"
            for region in run.regions(stats, run.runaway(stats).cycles)
            if region.over_weighted
        ]
        if found:
            shown.append(f"chain {run.record.index}: {', '.join(found[:5])}")
    return {"region_check_flagged": "; ".join(shown)} if checked else {}


def checks_attrs(runs: list[ChainRun]) -> dict[str, Any]:
    """What the checks on the draws found, for ``hyperparameters()``: the temperature,
    drift and region checks' results and the run's mark."""
    return {
        **exploration_attrs(runs),
        **temperature_attrs(runs),
        **drift_attrs(runs),
        **region_attrs(runs),
        **marks_attrs(runs),
    }


def checks_by_coordinate(run: ChainRun | None) -> dict[str, dict]:
    """The checks per coordinate, for ``diagnostics()``."""
    return {
        "temperature_check": temperature_by_coordinate(run),
        "drift_check": drift_by_coordinate(run),
    }
