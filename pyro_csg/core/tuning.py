"""A converged start and an automatic step size: what runs once before the first cycle.

**The start** (:func:`optimize_start`). Sampling should not begin before the chain has
reached the posterior's bulk: at step sizes suited to a posterior of ``N = 1e6`` data the
cycles would otherwise spend many iterations travelling. Adam (Kingma and Ba, 2015) on the
minibatch potential ``U~`` carries the chain there; it stops when the mean of ``U~`` over
a block of iterations no longer falls by more than twice its standard error plus 0.1
(nats; the potential's own spread in the posterior is ``sqrt(D / 2)``), first at
learning rate ``lr``, then at ``lr / 10`` and ``lr / 100``. Adam's steps are in units of
``theta`` whatever the scale of ``U``, which is why it, and not SGD, does this. Where
``U`` still falls but Adam's median step has shrunk below ``CRAWL * lr`` (its second
moment remembers a start whose gradients were orders of magnitude larger: a survival
model's ``U`` falling from 8e11 to 1e6 crept on for 10,000 iterations), its moments start
afresh.

**The preconditioner** (:func:`hessian_diagonal`). ``h ~ diag(grad^2 U)`` at the start,
by Hutchinson's estimator with finite-difference Hessian-vector products, each on one
minibatch (the same batch on both sides of the difference, so its noise cancels)::

    h_j = E_v[ v_j * (grad U~(theta + e s*v; b) - grad U~(theta - e s*v; b))_j / (2 e s_j) ]

with Rademacher ``v``. The kernels then use ``G = 1 / h`` (floored) as a constant
diagonal mass matrix: with ``g = G * grad U~`` and ``xi`` scaled by ``sqrt(G)`` the
updates of :mod:`pyro_csg.core.diffusions` are pSGLD / preconditioned SGHMC. Because ``G``
does not depend on ``theta`` (it is fixed for the run), the correction term ``Gamma`` of
Li et al. (2016), which RMSprop-style preconditioners drop at the cost of a bias, is
exactly zero here. Up to :data:`EXACT_DIAGONAL` parameters the same differences give
the whole Hessian (:func:`exact_hessian`); where the diagonal leaves it ill-conditioned
(``full_mass``, :data:`~pyro_csg.core.sampler.DENSE_CYCLES`), ``G`` is dense, its root
measured in two passes on shared batches (:func:`shared_batch_hessian`,
:mod:`pyro_csg.core.mass`).

**The step size** (:func:`tune`). In preconditioned coordinates the posterior is close
to unit scale, so the step is dimensionless: ``eta_1 = 1 / lambda_max``, where
``lambda_max`` is the largest eigenvalue of ``sqrt(G) H sqrt(G)`` found by power
iteration (again finite differences on minibatches). That is half the largest stable
step of SGD (``2 / lambda_max``) and a quarter of SGD with momentum's (and at most
``2 / c_b`` for the stiffest single batch along that direction, which binds only for
tiny batches: see :func:`tune`); the sampling stage
then runs at ``eta_k <= eta_1 / 2``, where the discretisation inflates a Gaussian's
variance by at most ``1 / (1 - eta lambda / 2)``, about 10% in the stiffest direction at
the cycle's first draw and less after. The minibatch gradient's own noise is measured
too, at a point one posterior standard deviation from the start (drawn from ``N(theta,
G)``): its variance per coordinate ``V`` (in preconditioned units) against the injected
noise gives::

    noise_ratio(eta) = eta * mean(V) / (2 * alpha * T)      (alpha = 1 for SGLD)

the variance the minibatch adds to a step relative to what the Langevin noise adds. The
kernels subtract it (the noise correction of Chen, Fox and Guestrin, 2014): coordinate
``j`` of the injected noise is scaled by ``sqrt(max(0, 1 - eta * V_j / (2 alpha T)))``,
so that the minibatch noise and the injected noise together have the variance the
dynamics needs. That is exact only where ``V`` is what was measured, so ``eta_1`` is
lowered until ``noise_ratio`` is at most ``0.5`` at the sampling stage's first step
(its largest) and no coordinate's ratio exceeds 1 there (a smaller step mixes more
slowly but does not inflate the posterior); the kernels warn, with what would help
(control variates, a larger batch), when that cuts the step tenfold.

When it fails: a posterior whose curvature changes a lot between the start and the
modes the cycles visit (the step suits the start's curvature), and strongly non-convex
potentials (a Bayesian neural network's flat directions get the floor of ``h``: at least
``1e-2`` times its median).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .mass import (
    dense_preconditioner,
    root_times,
    root_transpose_times,
    scaled_condition,
)

__all__ = [
    "exact_hessian",
    "shared_batch_hessian",
    "exact_diagonal",
    "StartReport",
    "Tuning",
    "optimize_start",
    "hessian_diagonal",
    "largest_eigenvalue",
    "batch_curvatures",
    "gradient_noise",
    "noise_per_step",
    "tune",
]

Gradient = Callable[[torch.Tensor, Sequence[torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]
NextIndices = Callable[[], list[torch.Tensor]]

NOISE_RATIO_LIMIT = 0.5
"""The largest ``noise_ratio`` the automatic step size accepts at the sampling stage's
first step (the kernels' ``first_draw_factor``)."""

STEP_SCALE = 1.0
"""``eta_1 = STEP_SCALE / lambda_max``."""

NOISE_POINTS = 4
"""Points at which the minibatch noise is measured (64 minibatches each)."""

WORST_RATIO_LIMIT = 1.0
"""The largest ``noise_ratio`` of any one coordinate at a cycle's first sampling step."""

EXACT_DIAGONAL = 256
"""Up to this many parameters the Hessian's diagonal is probed one coordinate at a time."""

DENSE_AGREEMENT = 4.0
"""A dense preconditioner is kept only where the Hessian measured again in the
coordinates it whitens has no eigenvalue above this (nor one at or below 0): the
curvature a posterior sd away is at most this many times what the first pass found.
Measured (seeds 0-2): the growth model of ``benchmarks/defaults.py`` 0.76 to 1.55;
baseball's centred hierarchy 0.32 to 60 (a funnel: its dense chains got steps of 0.002
to 0.005 and were 1.6 sds off, warned); the centred eight schools -0.96 to 129."""

BATCH_CURVATURES = 16
"""Minibatches whose curvature along the stiffest direction bounds the step (see
:func:`tune`)."""

BATCH_STABILITY = 2.0
"""``eta_1`` times the largest one-batch curvature is kept at most this: SGD's stability
limit, and about half of SGD with momentum's (``2 (2 - alpha)``)."""


@dataclass(frozen=True)
class StartReport:
    """What :func:`optimize_start` did: iterations, whether ``U~`` stopped falling at the
    last learning rate, and the mean ``U~`` of its last block.

    Example::

        >>> from pyro_csg.core.tuning import StartReport
        >>> StartReport(steps=300, converged=True, energy=12.5).steps
        300
    """

    steps: int
    converged: bool
    energy: float


CRAWL = 0.01
"""Adam's median step, in units of ``lr``, below which a stage whose potential still
falls restarts Adam's moments (:func:`optimize_start`)."""


def optimize_start(
    gradient: Gradient,
    theta: torch.Tensor,
    next_indices: NextIndices,
    *,
    lr: float = 0.05,
    block: int = 50,
    max_steps: int = 10_000,
    decays: int = 2,
) -> tuple[torch.Tensor, StartReport]:
    """Adam on ``U~`` until it stops falling (see the module docstring).

    Returns the last parameters and a :class:`StartReport`. Raises ``FloatingPointError``
    if ``U~`` or the parameters become non-finite.

    Example::

        >>> import torch
        >>> from pyro_csg.core.tuning import optimize_start
        >>> def gradient(theta, indices):  # U = 50 (theta - 3)^2, noise-free
        ...     return 50 * ((theta - 3) ** 2).sum(), 100 * (theta - 3)
        >>> theta, report = optimize_start(gradient, torch.zeros(2), lambda: [])
        >>> theta.sub(3).abs().max().item() < 0.01, report.converged
        (True, True)
    """
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m = torch.zeros_like(theta)
    v = torch.zeros_like(theta)
    step = step_offset = 0  # Adam's bias corrections count from step_offset
    previous: tuple[float, float] | None = None
    energies: list[torch.Tensor] = []
    mean = math.inf
    while step < max_steps:
        energy, grad = gradient(theta, next_indices())
        energies.append(energy)
        step += 1
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        m_hat = m / (1 - beta1 ** (step - step_offset))
        v_hat = v / (1 - beta2 ** (step - step_offset))
        theta = theta - lr * m_hat / (v_hat.sqrt() + eps)
        if len(energies) < block:
            continue
        values = torch.stack(energies).double()
        energies.clear()
        if not (torch.isfinite(values).all() and torch.isfinite(theta).all()):
            raise FloatingPointError(
                f"the potential or the parameters became non-finite after {step} iterations "
                f"of the optimisation stage (Adam, lr={lr:g})"
            )
        mean, se = float(values.mean()), float(values.std()) / math.sqrt(block)
        # Below 0.1 nats a fall means nothing to a sampler (U varies by sqrt(D / 2)).
        if previous is not None and previous[0] - mean < 2.0 * math.hypot(previous[1], se) + 0.1:
            if decays == 0:
                return theta, StartReport(step, True, mean)
            decays -= 1
            lr /= 10.0
            previous = None
            continue
        previous = (mean, se)
        if float((m_hat.abs() / (v_hat.sqrt() + eps)).median()) < CRAWL:
            # Still falling, at steps a hundred times smaller than lr: Adam's memory of
            # the start's far larger gradients (a potential that fell by orders of
            # magnitude, e.g. from 1e11 to 1e6) holds it back for thousands of
            # iterations; its moments start afresh from here.
            m.zero_()
            v.zero_()
            step_offset = step
    return theta, StartReport(step, False, mean)


def _rademacher(theta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    bits = torch.randint(0, 2, theta.shape, generator=generator, device=generator.device)
    return (2 * bits - 1).to(device=theta.device, dtype=theta.dtype)


def _hvp(gradient: Gradient, theta, direction, indices, eps: float) -> torch.Tensor:
    """``H direction`` by a central difference of the gradient on one batch."""
    _, plus = gradient(theta + eps * direction, indices)
    _, minus = gradient(theta - eps * direction, indices)
    return (plus - minus) / (2.0 * eps)


def hessian_diagonal(
    gradient: Gradient,
    theta: torch.Tensor,
    next_indices: NextIndices,
    generator: torch.Generator,
    *,
    scale: torch.Tensor | None = None,
    probes: int = 32,
    eps: float = 0.1,
) -> torch.Tensor:
    """Hutchinson's estimate of ``diag(grad^2 U)`` at ``theta`` (see the module docstring).

    ``scale`` (``s``) sets the finite-difference step per coordinate, ``eps * s``; a good
    ``s`` is the posterior's standard deviation (default ``1e-2``).

    Example::

        >>> import torch
        >>> from pyro_csg.core.tuning import hessian_diagonal
        >>> def gradient(theta, indices):  # U = 0.5 * (1 theta_0^2 + 100 theta_1^2)
        ...     return None, torch.tensor([1.0, 100.0]) * theta
        >>> hessian_diagonal(gradient, torch.zeros(2), lambda: [],
        ...                  torch.Generator().manual_seed(0), probes=4).round()
        tensor([  1., 100.])
    """
    if scale is None:
        scale = torch.full_like(theta, 1e-2)
    total = torch.zeros_like(theta)
    for _ in range(probes):
        v = _rademacher(theta, generator)
        total += v * _hvp(gradient, theta, scale * v, next_indices(), eps)
    return total / (probes * scale)


def exact_diagonal(
    gradient: Gradient,
    theta: torch.Tensor,
    next_indices: NextIndices,
    generator: torch.Generator,
    *,
    scale: torch.Tensor | None = None,
    probes: int = 32,
    eps: float = 0.1,
) -> torch.Tensor:
    """``diag(grad^2 U)`` one coordinate at a time: ``h_j`` from a central difference along
    ``e_j`` (step ``eps * s_j``), averaged over ``max(1, probes // D)`` minibatches; the
    same arguments as :func:`hessian_diagonal` (``generator`` is not used).

    Example::

        >>> import torch
        >>> from pyro_csg.core.tuning import exact_diagonal
        >>> H = torch.tensor([[1.0, 3.0], [3.0, 100.0]])  # strongly coupled
        >>> exact_diagonal(lambda t, i: (None, H @ t), torch.zeros(2), lambda: [],
        ...                torch.Generator()).round()
        tensor([  1., 100.])
    """
    hessian = exact_hessian(gradient, theta, next_indices, scale=scale, probes=probes, eps=eps)
    return hessian.diagonal().clone()


def exact_hessian(
    gradient: Gradient,
    theta: torch.Tensor,
    next_indices: NextIndices,
    *,
    scale: torch.Tensor | None = None,
    probes: int = 32,
    eps: float = 0.1,
) -> torch.Tensor:
    """``H``, column ``j`` from a central difference along ``e_j`` (step ``eps * s_j``),
    averaged over ``max(1, probes // D)`` minibatches, each difference on its own batch:
    :func:`exact_diagonal` is its diagonal, so the dense Hessian costs nothing more (not
    symmetrised).

    Example::

        >>> import torch
        >>> from pyro_csg.core.tuning import exact_hessian
        >>> H = torch.tensor([[1.0, 3.0], [3.0, 100.0]])
        >>> exact_hessian(lambda t, i: (None, H @ t), torch.zeros(2), lambda: []).round()
        tensor([[  1.,   3.],
                [  3., 100.]])
    """
    if scale is None:
        scale = torch.full_like(theta, 1e-2)
    size = theta.numel()
    repeats = max(1, probes // max(size, 1))
    columns = torch.zeros(size, size, dtype=theta.dtype, device=theta.device)
    for j in range(size):
        for _ in range(repeats):
            columns[:, j] += _column(gradient, theta, scale, j, next_indices(), eps)
    return columns / repeats


def _column(gradient: Gradient, theta, scale, j: int, indices, eps: float) -> torch.Tensor:
    """``H e_j`` on one batch, by a central difference along ``s_j e_j``."""
    direction = torch.zeros_like(theta)
    direction[j] = scale[j]
    return _hvp(gradient, theta, direction, indices, eps) / scale[j]


def largest_eigenvalue(
    gradient: Gradient,
    theta: torch.Tensor,
    next_indices: NextIndices,
    generator: torch.Generator,
    root: torch.Tensor,
    *,
    iterations: int = 20,
    eps: float = 0.1,
) -> float:
    """``lambda_max`` of ``diag(root) H diag(root)`` by power iteration (finite differences).

    Example::

        >>> import torch
        >>> from pyro_csg.core.tuning import largest_eigenvalue
        >>> H = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
        >>> round(largest_eigenvalue(lambda t, i: (None, H @ t), torch.zeros(2), lambda: [],
        ...                          torch.Generator().manual_seed(0), torch.ones(2)), 3)
        3.0
    """
    return _power_iteration(gradient, theta, next_indices, generator, root, iterations, eps)[0]


def _power_iteration(gradient, theta, next_indices, generator, root, iterations, eps):
    """``(|lambda_max|, its unit eigenvector)`` of ``diag(root) H diag(root)``."""
    v = torch.randn(theta.shape, generator=generator, device=generator.device).to(theta)
    v = v / v.norm()
    value = 0.0
    for _ in range(iterations):
        product = root_transpose_times(
            root, _hvp(gradient, theta, root_times(root, v), next_indices(), eps)
        )
        value = float(v @ product)
        norm = product.norm()
        if not torch.isfinite(norm) or norm == 0:
            break
        v = product / norm
    return abs(value), v


def batch_curvatures(
    gradient: Gradient,
    theta: torch.Tensor,
    direction: torch.Tensor,
    batches: NextIndices,
    root: torch.Tensor,
    *,
    count: int = BATCH_CURVATURES,
    eps: float = 0.1,
) -> torch.Tensor:
    """``v^T diag(root) H_b diag(root) v`` along the unit ``direction`` ``v``, for
    ``count`` minibatches ``b``: how far one batch's curvature exceeds the mean's.

    Example::

        >>> import torch
        >>> from pyro_csg.core.tuning import batch_curvatures
        >>> scales = iter([1.0, 3.0])  # two batches: curvature 1 and 3 along the axis
        >>> def gradient(theta, indices):
        ...     return None, indices[0] * theta
        >>> batch_curvatures(gradient, torch.zeros(1), torch.ones(1),
        ...                  lambda: [next(scales)], torch.ones(1), count=2)
        tensor([1., 3.])
    """
    return torch.tensor(
        [
            float(
                direction
                @ root_transpose_times(
                    root, _hvp(gradient, theta, root_times(root, direction), batches(), eps)
                )
            )
            for _ in range(count)
        ]
    )


def gradient_noise(
    gradient: Gradient,
    theta: torch.Tensor,
    next_indices: NextIndices,
    root: torch.Tensor,
    *,
    batches: int = 64,
) -> torch.Tensor:
    """The variance, across minibatches, of each coordinate of ``root * grad U~``.

    Example::

        >>> import torch
        >>> from pyro_csg.core.tuning import gradient_noise
        >>> batches = iter(range(16))
        >>> def gradient(theta, indices):  # +1 or -1: variance 16/15 (unbiased)
        ...     return None, theta + (-1.0) ** indices[0]
        >>> gradient_noise(gradient, torch.zeros(3), lambda: [next(batches)], torch.ones(3),
        ...                batches=16)
        tensor([1.0667, 1.0667, 1.0667])
    """
    if theta.numel() == 0:  # nothing to vary (torch's var() would warn)
        return torch.zeros_like(theta)
    grads = torch.stack(
        [root_transpose_times(root, gradient(theta, next_indices())[1]) for _ in range(batches)]
    )
    return grads.double().var(dim=0).to(theta.dtype)


def noise_per_step(
    variance: torch.Tensor,
    *,
    friction: float = 1.0,
    temperature: float = 1.0,
    batches_per_epoch: int | None = None,
) -> torch.Tensor:
    """``V / (2 alpha T)`` per coordinate, discounted for batches drawn without
    replacement: the minibatch noise of a step of size ``eta`` is ``eta`` times this,
    relative to the injected noise. Shared by :func:`tune` and the kernels' per-cycle
    ``noise_ratio``.

    Example::

        >>> import torch
        >>> from pyro_csg.core.tuning import noise_per_step
        >>> noise_per_step(torch.tensor([4.0]), friction=0.5, temperature=2.0)
        tensor([2.])
    """
    per_step = variance / (2.0 * friction * temperature)
    if batches_per_epoch:
        memory = 1.0 / friction
        per_step = per_step * max(1.0 - memory / batches_per_epoch, 1.0 / batches_per_epoch)
    return per_step


@dataclass(frozen=True)
class Tuning:
    """The automatic step size's choice (see the module docstring).

    ``step_size`` is ``eta_1`` (dimensionless, in preconditioned units when
    ``preconditioner`` is not ``None``), ``preconditioner`` ``G`` (its diagonal, or the
    dense root ``R`` of ``G = R R^T`` with ``full_mass``: :mod:`pyro_csg.core.mass`),
    ``lambda_max`` the stiffest preconditioned curvature, ``noise_ratio`` the ratio at
    the step where it is bounded, ``noise_limited`` whether the noise lowered the step,
    ``noise`` the per-coordinate variance ``V / (2 alpha T)`` per unit step (the noise
    correction's; ``None``: no correction), ``stable_step`` the step the curvature
    alone allows (``step_size`` before the noise bound; ``None``: not recorded),
    ``condition`` the Hessian's condition number in the diagonal's scaled coordinates
    (``None``: not measured, above :data:`EXACT_DIAGONAL` parameters).

    Example::

        >>> import torch
        >>> from pyro_csg.core.tuning import Tuning
        >>> Tuning(0.5, torch.ones(2), 2.0, 0.01, False, None).report()["step_size"]
        0.5
    """

    step_size: float
    preconditioner: torch.Tensor | None
    lambda_max: float
    noise_ratio: float
    noise_limited: bool
    noise: torch.Tensor | None = None
    stable_step: float | None = None
    condition: float | None = None

    @property
    def dense(self) -> bool:
        """Whether ``G`` is dense (``full_mass``), not diagonal."""
        return self.preconditioner is not None and self.preconditioner.dim() == 2

    def report(self) -> dict[str, float | bool]:
        """The scalars, for ``hyperparameters()`` and ArviZ ``attrs``; with the
        preconditioner, ``curvature_condition`` (the Hessian's condition number once the
        diagonal has scaled it, where measured) and ``dense_mass``."""
        report = {
            "step_size": self.step_size,
            "lambda_max": self.lambda_max,
            "noise_ratio": self.noise_ratio,
            "noise_limited": self.noise_limited,
        }
        if self.preconditioner is not None:
            report["dense_mass"] = self.dense
        if self.condition is not None:
            report["curvature_condition"] = self.condition
        return report

    def state_dict(self) -> dict:
        return {
            **self.report(),
            "preconditioner": self.preconditioner,
            "noise": self.noise,
            "stable_step": self.stable_step,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> Tuning:
        return cls(
            float(state["step_size"]),
            state["preconditioner"],
            float(state["lambda_max"]),
            float(state["noise_ratio"]),
            bool(state["noise_limited"]),
            state.get("noise"),
            state.get("stable_step"),
            state.get("curvature_condition"),
        )

    @property
    def curvature_cut(self) -> float:
        """How many times below the mean curvature's bound ``1 / lambda_max`` the step is
        (the minibatch noise and the stiffest single batch both lower it; 1: not at all).

        Example::

            >>> from pyro_csg.core.tuning import Tuning
            >>> Tuning(0.05, None, 2.0, 0.5, True).curvature_cut
            10.0
        """
        return 1.0 / max(self.step_size * self.lambda_max, 1e-300)

    @property
    def noise_cut(self) -> float:
        """How many times smaller the minibatch noise made the step than the curvature
        allows (1: not at all)."""
        if self.stable_step is None or not self.noise_limited or self.step_size <= 0:
            return 1.0
        return self.stable_step / self.step_size


def tune(
    gradient: Gradient,
    theta: torch.Tensor,
    next_indices: NextIndices,
    generator: torch.Generator,
    *,
    first_draw_factor: float,
    friction: float = 1.0,
    temperature: float = 1.0,
    precondition: bool = True,
    full_mass: bool | None = False,
    dense_condition: float = math.inf,
    batches_per_epoch: int | None = None,
    spare_batches: NextIndices | None = None,
) -> Tuning:
    """The preconditioner and ``eta_1`` at ``theta`` (see the module docstring).

    ``first_draw_factor`` is ``eta_k / eta_1`` where the noise is bounded (the kernels
    pass the sampling stage's first step, its largest);
    ``friction`` is SGHMC's ``alpha`` (1 for SGLD). ``batches_per_epoch`` (``M``) is how
    many minibatches make an epoch: batches drawn without replacement sum to the full
    gradient over an epoch, so their noise cancels over the ``1 / alpha`` steps the
    momentum remembers, and the noise is counted as ``V * max(1 - 1 / (alpha M), 1 / M)``
    (``None``: independent batches).

    ``spare_batches`` (batches that do not come from the chain's own stream) bound the
    step by the stiffest single batch: ``eta_1 <= BATCH_STABILITY / max_b c_b``, with
    ``c_b`` the curvature of batch ``b`` along the stiffest direction of the mean
    (:func:`batch_curvatures`, :data:`BATCH_CURVATURES` batches). With small batches one
    batch's curvature can be several times the mean's, and SGD with momentum, stable at
    ``eta_1 lambda_max = 1`` on the mean, then blows up in the exploration stage (a
    two-parameter regression with batches of 10: a 1-in-3 curvature of 2.5 times the
    mean). Where batches are large the bound is looser than ``1 / lambda_max`` and
    changes nothing.

    Example::

        >>> import torch
        >>> from pyro_csg.core.tuning import tune
        >>> scales = torch.tensor([1.0, 1e4])  # U = 0.5 * sum(scales * theta^2)
        >>> tuning = tune(lambda t, i: (None, scales * t), torch.zeros(2), lambda: [],
        ...               torch.Generator().manual_seed(0), first_draw_factor=0.3)
        >>> tuning.preconditioner * scales
        tensor([1., 1.])
        >>> round(tuning.step_size, 3), tuning.noise_ratio
        (1.0, 0.0)
    """
    if theta.numel() == 0:
        # No parameter to move (a potential without parameters, which Pyro's own tests
        # run): no curvature to measure, and any step is exact.
        return Tuning(1.0, torch.ones_like(theta) if precondition else None, 1.0, 0.0, False)
    if precondition:
        # Two passes: the second takes its finite-difference steps at the posterior's
        # scale, which the first pass estimated. Up to EXACT_DIAGONAL coordinates, each is
        # probed alone (Hutchinson's estimator mixes in the off-diagonal terms, which for
        # correlated parameters swamp the diagonal).
        exact = theta.numel() <= EXACT_DIAGONAL
        diagonal = exact_diagonal if exact else hessian_diagonal
        rough = diagonal(gradient, theta, next_indices, generator, probes=8, eps=1e-3)
        scale = _floored(rough).rsqrt()
        hessian = None
        if exact:  # the same differences give the whole Hessian
            hessian = exact_hessian(gradient, theta, next_indices, scale=scale)
            h = _floored(hessian.diagonal().clone())
        else:
            h = _floored(hessian_diagonal(gradient, theta, next_indices, generator, scale=scale))
        preconditioner = 1.0 / h
        root = preconditioner.sqrt()
        condition = None
        if hessian is not None:
            condition = scaled_condition(hessian, root)
            # A candidate where the diagonal leaves the soft directions too slow, or where
            # the first pass cannot tell (nan: a negative curvature, which minibatch
            # columns can fake); the second pass decides (None: no quadratic to fit).
            slow = math.isnan(condition) or condition > dense_condition
            if full_mass or (full_mass is None and slow):
                dense = _dense_mass(gradient, theta, next_indices, root)
                if dense is None and full_mass:
                    raise ValueError(
                        "full_mass=True: the Hessian at the start is no guide to the "
                        "posterior (measured again a posterior sd away, it has a negative "
                        f"curvature or one over {DENSE_AGREEMENT:g} times the first "
                        "measurement's: a saddle, or a hierarchy's funnel), so a dense "
                        "preconditioner measured there fits no part of it; leave "
                        "full_mass out (a diagonal preconditioner), or reparameterise the "
                        "hierarchy (LocScaleReparam)"
                    )
                if dense is not None:
                    preconditioner = root = dense
        elif full_mass:
            raise ValueError(
                f"full_mass=True measures the dense Hessian one coordinate at a time, for "
                f"models of at most {EXACT_DIAGONAL} unconstrained parameters; this one has "
                f"{theta.numel()}: leave full_mass out (a diagonal preconditioner)"
            )
    else:
        preconditioner, root, condition = None, torch.ones_like(theta), None
    lambda_max, top = _power_iteration(gradient, theta, next_indices, generator, root, 20, 0.1)
    if not math.isfinite(lambda_max) or lambda_max <= 0:
        raise FloatingPointError(
            f"the automatic step size found no positive curvature at the start "
            f"(lambda_max={lambda_max}): the potential is flat or non-finite there; pass "
            "step_size explicitly"
        )
    step_size = STEP_SCALE / lambda_max
    if spare_batches is not None:
        worst = float(batch_curvatures(gradient, theta, top, spare_batches, root).max())
        if math.isfinite(worst) and worst > 0:
            step_size = min(step_size, BATCH_STABILITY / worst)
    # The noise where the chain will be: one posterior standard deviation from theta, at
    # NOISE_POINTS such points (the largest coordinate's estimate decides the step, so it
    # must not be a single noisy variance).
    noise = torch.zeros_like(theta)
    for _ in range(NOISE_POINTS):
        shift = root_times(
            root,
            torch.randn(theta.shape, generator=generator, device=generator.device).to(theta),
        )
        noise += gradient_noise(gradient, theta + shift, next_indices, root)
    per_step = noise_per_step(
        noise / NOISE_POINTS,
        friction=friction,
        temperature=temperature,
        batches_per_epoch=batches_per_epoch,
    )
    mean, worst = float(per_step.mean()), float(per_step.max())
    limit = min(
        NOISE_RATIO_LIMIT / (first_draw_factor * mean) if mean > 0 else math.inf,
        WORST_RATIO_LIMIT / (first_draw_factor * worst) if worst > 0 else math.inf,
    )
    stable, limited = step_size, step_size > limit
    step_size = min(step_size, limit)
    ratio = step_size * first_draw_factor * mean
    return Tuning(
        step_size, preconditioner, lambda_max, ratio, limited, per_step, stable, condition
    )


def _dense_mass(gradient: Gradient, theta, next_indices, scale) -> torch.Tensor | None:
    """A dense ``G``'s root in two passes, each Hessian's columns on shared batches
    (:func:`shared_batch_hessian`), the first at the diagonal's scale ``scale``, the
    second in the coordinates ``z = R_1^-1 theta``, where it should be about the
    identity. ``None`` where it is not positive definite (a saddle) or has an eigenvalue
    above :data:`DENSE_AGREEMENT` (a direction much stiffer a posterior sd away than the
    first pass found: a funnel, where no constant ``G`` fits)::

        H   (columns along s_j e_j)       R_1 R_1^T = H^-1      (:func:`dense_preconditioner`)
        H_z = R_1^T H R_1   (columns along e_j in z, 0.1 sd)
        R   = R_1 R_z,  R_z R_z^T = H_z^-1,  G = R R^T   (the root is kept)

    Why twice: the first pass's differences are taken at the stiff directions' scale,
    where a soft direction's curvature (a millionth of the stiff ones' on the growth
    model of ``benchmarks/defaults.py``) is below float32's resolution of the gradient,
    and comes out as noise or the floor; in ``z`` every direction is differenced at about
    its own posterior sd, so the soft one is resolved. Why shared batches: with each
    column on its own minibatch (as the diagonal's are) the growth model's scaled
    Hessian was 13-22% asymmetric and its soft direction lost; one batch's Hessian is
    symmetric and keeps the data's null directions exact.
    """
    first = shared_batch_hessian(gradient, theta, next_indices, scale)
    root = dense_preconditioner(first, scale)  # R_1

    def whitened_gradient(z, indices):
        energy, grad = gradient(theta + root @ z, indices)
        return energy, grad @ root

    zero, ones = torch.zeros_like(theta), torch.ones_like(theta)
    inner = shared_batch_hessian(whitened_gradient, zero, next_indices, ones)
    # The first pass floors what it cannot resolve, so H_z says what it was: a soft
    # direction (about 1 in z) or a negative curvature (a funnel's neck: about -1).
    values = torch.linalg.eigvalsh(((inner + inner.T) / 2).double())
    if float(values.min()) <= 0 or float(values.max()) > DENSE_AGREEMENT:
        return None
    return root @ dense_preconditioner(inner, ones)


def shared_batch_hessian(
    gradient: Gradient, theta, next_indices: NextIndices, scale, *, batches: int = 2, eps=0.1
) -> torch.Tensor:
    """``H`` at ``theta``, column ``j`` by a central difference along ``s_j e_j``, every
    column of a batch's Hessian on that one batch, averaged over ``batches`` batches.

    Example::

        >>> import torch
        >>> from pyro_csg.core.tuning import shared_batch_hessian
        >>> H = torch.tensor([[1.0, 3.0], [3.0, 100.0]])
        >>> shared_batch_hessian(lambda t, i: (None, H @ t), torch.zeros(2), lambda: [],
        ...                      torch.ones(2)).round()
        tensor([[  1.,   3.],
                [  3., 100.]])
    """
    size = theta.numel()
    total = torch.zeros(size, size, dtype=theta.dtype, device=theta.device)
    for _ in range(batches):
        indices = next_indices()
        for j in range(size):
            total[:, j] += _column(gradient, theta, scale, j, indices, eps)
    return total / batches


def _floored(h: torch.Tensor) -> torch.Tensor:
    """Curvature estimates made positive: at least ``1e-2`` times the median of ``|h|``."""
    floor = 1e-2 * float(h.abs().median()) if h.numel() else 0.0
    floor = max(floor, torch.finfo(h.dtype).tiny ** 0.5)
    return torch.where(torch.isfinite(h), h, torch.full_like(h, floor)).clamp_min(floor)
