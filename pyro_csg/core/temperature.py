"""Are the draws at the temperature they should be? The configurational temperature.

SG-MCMC has no Metropolis test, so nothing in the update says whether the draws follow
the posterior: a step too large for the curvature the chain met inflates them, a
direction the chain barely moves along (a stiff preconditioner, a chain still
travelling, a parameter stuck at a boundary) shrinks them, and neither raises anything.
One identity checks both, per coordinate, for any posterior ``p(theta) ~ exp(-U / T)``
on the unconstrained space (integrate by parts; the boundary terms vanish)::

    E[(theta_i - c_i) dU/dtheta_i] = T          for any constant c

and since the minibatch gradient ``g`` is unbiased, ``E[(theta_i - c_i) g_i] = T`` too.
For a Gaussian posterior, ``(theta_i - c_i) g_i / T`` averages to ``Var_draws / Var_true``
along coordinate ``i`` (with its correlations: ``(Cov_draws H)_ii``): SGLD's
discretisation at step ``eta`` gives ``1 / (1 - eta h / 2)`` there, a direction that does
not move gives ``~0``. The check needs nothing but the draws and the gradients the chain
already has; it sees what the step size, the preconditioner and the noise correction
did to the draws, wherever the chain went.

Estimated per coordinate from each cycle's draws (``a_c = mean(theta * g)``, ``b_c =
mean(g)`` over cycle ``c``'s retained draws; ``m`` the mean of all draws)::

    t_c = (a_c - m * b_c) / T           temperature_i = mean_c t_c      se_i = sd_c t_c / sqrt(K)

(cycles restart the chain's exploration, so they serve as batches for the standard
error). The centre ``m`` is the pooled mean, so a multimodal run is judged over all the
modes its cycles found. A coordinate is flagged when its temperature is outside
``[1/2, 2]`` (draws spreading less than 0.71 or more than 1.41 times what the curvature
says) and more than 3 standard errors from 1, with at least :data:`MIN_CYCLES` cycles.

Measured (cSGHMC's defaults, 1,000 draws): right runs of a linear regression and of
the non-centred eight schools gave 0.93 to 1.16 (se <= 0.06); the non-centred eight
schools started at ``init_to_uniform`` without the optimisation stage, where ``tau``
stuck at 0 in every draw (the only other warning gone), gave ``0.00`` for ``tau``; the
2-D banana of issue 21 (off by 0.4 sd, no warning) gave 0.53 to 0.61 for ``x[1]``; the
centred eight schools gave up to 4.4.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "TEMPERATURE_BOUNDS",
    "MIN_CYCLES",
    "TemperatureCheck",
    "TemperatureReport",
    "temperature_message",
    "widest_directions",
]

TEMPERATURE_BOUNDS = (0.5, 2.0)
"""A coordinate's temperature outside these (a Gaussian's draws spreading below 0.71 or
above 1.41 times its sd) is flagged, when it is also significant."""
DIRECTIONS_MAX_DIM = 256
"""Models up to this many coordinates keep each draw's ``theta`` and gradient, to check
the draws' widest directions too (a correlated direction that does not move is diluted
over its coordinates, each of which may still read about 1)."""
DIRECTIONS_MAX_DRAWS = 20_000
"""The draws kept for the directions (at most 80 MB)."""
NUM_DIRECTIONS = 3
MIN_CYCLES = 3
"""Cycles (with retained draws) the check needs for a standard error."""
SIGNIFICANCE = 3.0
"""Standard errors from 1 that a flagged temperature must also be."""


@dataclass(frozen=True)
class TemperatureReport:
    """Per unconstrained coordinate: the temperature (1 when the draws are right), its
    standard error, and which coordinates are too cold or too hot.

    Example::

        >>> import torch
        >>> from pyro_csg.core.temperature import TemperatureReport
        >>> report = TemperatureReport(torch.tensor([1.0, 0.1]), torch.tensor([0.05, 0.02]), 4)
        >>> report.cold.tolist(), report.hot.tolist()
        ([False, True], [False, False])
    """

    temperature: torch.Tensor  # (D,), float64, on the CPU
    se: torch.Tensor  # (D,)
    cycles: int
    # The draws' widest directions (see :func:`widest_directions`): (temperature, se,
    # the direction's weight per coordinate), for models of at most DIRECTIONS_MAX_DIM.
    directions: tuple[tuple[float, float, torch.Tensor], ...] = ()

    @property
    def cold_directions(self) -> list[tuple[float, torch.Tensor]]:
        """The widest directions whose draws spread much less than the curvature says."""
        enough = self.cycles >= MIN_CYCLES
        return [
            (value, weights)
            for value, se, weights in self.directions
            if enough and value < TEMPERATURE_BOUNDS[0] and 1 - value > SIGNIFICANCE * se
        ]

    def _significant(self) -> torch.Tensor:
        enough = self.cycles >= MIN_CYCLES
        return enough & ((self.temperature - 1).abs() > SIGNIFICANCE * self.se)

    @property
    def cold(self) -> torch.Tensor:
        """Coordinates whose draws spread much less than the curvature says."""
        return self._significant() & (self.temperature < TEMPERATURE_BOUNDS[0])

    @property
    def hot(self) -> torch.Tensor:
        """Coordinates whose draws spread much more than the curvature says."""
        return self._significant() & (self.temperature > TEMPERATURE_BOUNDS[1])

    @property
    def flagged(self) -> bool:
        return bool(self.cold.any() or self.hot.any() or self.cold_directions)


class TemperatureCheck:
    """Accumulates ``theta * g`` and ``g`` over each cycle's retained draws, in O(D)
    memory whatever the number of cycles, and reports the temperature per coordinate
    (see the module docstring).

    Example::

        >>> import torch
        >>> from pyro_csg.core.temperature import TemperatureCheck
        >>> check, generator = TemperatureCheck(temperature=1.0), torch.Generator().manual_seed(0)
        >>> for cycle in range(5):  # exact draws of N(0, diag(1, 4)): U = x0^2/2 + x1^2/8
        ...     for _ in range(200):
        ...         x = torch.randn(2, generator=generator) * torch.tensor([1.0, 2.0])
        ...         check.add(cycle, x, x / torch.tensor([1.0, 4.0]))
        >>> report = check.report()
        >>> bool((report.temperature - 1).abs().max() < 0.15), report.flagged
        (True, False)
    """

    def __init__(self, temperature: float) -> None:
        self.temperature = float(temperature)
        self._cycle: int | None = None
        self._n = 0  # draws in the current cycle
        self._cycle_sums: tuple[torch.Tensor, torch.Tensor] | None = None  # theta*g, g
        # Over closed cycles: sums of a_c, b_c, a_c^2, a_c b_c, b_c^2, and their count.
        self._moments: list[torch.Tensor] | None = None
        self._cycles = 0
        self._theta_sum: torch.Tensor | None = None  # over every draw, for the centre
        self._draws = 0
        self._kept: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # small models only
        self._report: TemperatureReport | None = None  # report() of these draws, once made

    def add(self, cycle: int, theta: torch.Tensor, grad: torch.Tensor) -> None:
        """One retained draw of cycle ``cycle``: its flat ``theta`` and the gradient of
        ``U~`` there (the one the chain computed)."""
        theta, grad = theta.detach().double(), grad.detach().double()
        if cycle != self._cycle:
            self._moments, self._cycles = self._closed()
            self._cycle_sums, self._n, self._cycle = None, 0, cycle
        if self._cycle_sums is None:
            self._cycle_sums = (theta * grad, grad.clone())
        else:
            self._cycle_sums[0].add_(theta * grad)
            self._cycle_sums[1].add_(grad)
        self._n += 1
        if self._theta_sum is None:
            self._theta_sum = theta.clone()
        else:
            self._theta_sum.add_(theta)
        self._draws += 1
        self._report = None  # the cached report is out of date
        if theta.numel() <= DIRECTIONS_MAX_DIM and len(self._kept) < DIRECTIONS_MAX_DRAWS:
            self._kept.append((cycle, theta.cpu(), grad.cpu()))

    def _closed(self) -> tuple[list[torch.Tensor] | None, int]:
        """The moments over the closed cycles and the current one (without changing them)."""
        if self._cycle_sums is None:
            return self._moments, self._cycles
        a, b = (value / self._n for value in self._cycle_sums)
        terms = (a, b, a * a, a * b, b * b)
        if self._moments is None:
            return [term.clone() for term in terms], self._cycles + 1
        return [total + term for total, term in zip(self._moments, terms, strict=True)], (
            self._cycles + 1
        )

    def report(self) -> TemperatureReport | None:
        """The temperature per coordinate over the draws so far (``None`` without
        draws); the current cycle counts as one, as far as it has got. Made once per
        draw count (the hyperparameters, the diagnostics and the warning all ask)."""
        if self._report is None:
            self._report = self._make_report()
        return self._report

    def _make_report(self) -> TemperatureReport | None:
        moments, k = self._closed()
        if moments is None:
            return None
        sum_a, sum_b, sum_aa, sum_ab, sum_bb = moments
        m = self._theta_sum / self._draws
        mean = (sum_a - m * sum_b) / k
        squares = sum_aa - 2 * m * sum_ab + m * m * sum_bb
        if k > 1:
            variance = (squares - k * mean * mean).clamp_min(0.0) / (k - 1)
            se = variance.sqrt() / math.sqrt(k)
        else:
            se = torch.full_like(mean, math.inf)
        scale = self.temperature
        directions = widest_directions(self._kept, scale) if self._kept else ()
        return TemperatureReport((mean / scale).cpu(), (se / scale).cpu(), k, directions)


def widest_directions(kept, temperature: float, count: int = NUM_DIRECTIONS):
    """The temperature along the draws' widest directions, per cycle as for a coordinate.

    For any vectors ``a``, ``b``: ``E[(a . (theta - c)) (b . grad U)] = T a . b``. In
    coordinates scaled by ``s = sqrt(mean(g^2))`` (the curvature's scale, by Fisher's
    identity), ``u`` the top eigenvectors of the scaled draws' covariance, ``a = s * u``
    and ``b = u / s`` give ``T`` again: a soft direction that the chain barely moves
    along reads well below 1 there, where each of its coordinates may not.
    """
    cycles = torch.tensor([cycle for cycle, _, _ in kept])
    theta = torch.stack([value for _, value, _ in kept])
    grad = torch.stack([value for _, _, value in kept])
    scale = grad.pow(2).mean(0).sqrt().clamp_min(1e-300)
    centred = (theta - theta.mean(0)) * scale
    if len(kept) < 3 or not torch.isfinite(centred).all():
        return ()
    _, vectors = torch.linalg.eigh(centred.T @ centred)
    found = []
    for u in vectors.T.flip(0)[:count]:
        products = (centred @ u) * ((grad / scale) @ u) / temperature
        per_cycle = torch.stack([products[cycles == c].mean() for c in cycles.unique()])
        k = len(per_cycle)
        se = float(per_cycle.std() / math.sqrt(k)) if k > 1 else math.inf
        found.append((float(per_cycle.mean()), se, u.abs() / u.abs().sum()))
    return tuple(found)


def temperature_message(
    name: str,
    report: TemperatureReport,
    labels: Sequence[str],
    auto_step: bool = True,
    scales: Sequence[str] = (),
) -> str:
    """The warning for a report with flagged coordinates, ``labels`` naming each
    unconstrained coordinate (``"tau"``, ``"w[3]"``), its advice fitting the automatic
    step (``auto_step``) or the user's; ``scales``: the labels of positive sites (a
    hierarchy's scale, whose flag points to a funnel). Empty when nothing is flagged."""
    if not report.flagged:
        return ""

    def listed(mask: torch.Tensor) -> str:
        order = torch.argsort((report.temperature - 1).abs(), descending=True)
        chosen = [int(i) for i in order if mask[i]]
        shown = ", ".join(f"{labels[i]} {report.temperature[i]:.2g}" for i in chosen[:6])
        return shown + (f" and {len(chosen) - 6} more" if len(chosen) > 6 else "")

    parts = [
        f"{name}: the draws are not at the posterior's temperature along some "
        f"coordinates (configurational temperature mean((theta - mean) * dU/dtheta) over "
        f"{report.cycles} cycles; 1 when the draws are right, a Gaussian's variance ratio)."
    ]
    if report.cold.any():
        parts.append(
            f"Too cold, the draws spread less than the curvature says (sd about "
            f"sqrt(temperature) of the posterior's): {listed(report.cold)}. These directions "
            "barely move or are still travelling: run more cycles, longer cycles "
            "(steps_per_cycle), or start at a converged point (optimize_start=True); a "
            "site stuck at a boundary of its support (a scale at 0) needs "
            "reparameterising (pyro.infer.reparam.LocScaleReparam)."
        )
    # A direction that is mostly one coordinate already named adds nothing.
    named_already = report.cold | report.hot
    directions = [
        (value, weights)
        for value, weights in report.cold_directions
        if not (weights.max() >= 0.5 and named_already[int(weights.argmax())])
    ]
    if directions:
        named = []
        for value, weights in directions[:2]:
            top = [i for i in torch.argsort(weights, descending=True)[:3] if weights[i] >= 0.05]
            mix = " + ".join(f"{labels[int(i)]} {weights[i]:.0%}" for i in top)
            named.append(f"{value:.2g} along the direction of {mix}")
        parts.append(
            "Too cold along the draws' widest direction(s), where the posterior is soft "
            f"and correlated: {'; '.join(named)}. The chain does not travel along it within "
            "its cycles (a diagonal preconditioner follows the stiff directions): pass "
            "full_mass=True (a dense preconditioner, models of at most 256 parameters), "
            "run longer cycles (steps_per_cycle), or reparameterise the correlated sites."
        )
    if report.hot.any():
        smaller = (
            "step_scale=0.3 (a third of the automatic step, preconditioner kept)"
            if auto_step
            else "a smaller step_size (an explicit step is in units of the potential, "
            "lr / N, without the preconditioner; leaving it out picks one automatically)"
        )
        parts.append(
            f"Too hot, the draws spread more than the curvature says: {listed(report.hot)}. "
            "The step is too large for the curvature the chain met (or the minibatch noise "
            f"dominates): pass {smaller}, or a larger subsample_size; a funnel-shaped "
            "hierarchy needs reparameterising (pyro.infer.reparam.LocScaleReparam)."
        )
    flagged = report.cold | report.hot
    funnel = [label for i, label in enumerate(labels) if flagged[i] and label in set(scales)]
    if funnel:
        parts.append(
            f"{', '.join(funnel[:3])} {'is a scale' if len(funnel) == 1 else 'are scales'}: "
            "a centred hierarchy whose group effects it scales is a funnel, which no "
            "first-order sampler (NUTS included) samples well; reparameterise the effects "
            "(pyro.infer.reparam.LocScaleReparam, or a non-centred model)."
        )
    parts.append(
        "Per coordinate in diagnostics()['temperature_check'] and in the InferenceData's attrs "
        "(temperature_check_flagged)."
    )
    return " ".join(parts)
