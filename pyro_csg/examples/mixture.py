"""The cSG-MCMC paper's synthetic study: a mixture of 25 Gaussians in 2-D.

Zhang et al. (2020), Section 5.1: 25 equally weighted Gaussians with means on the grid
``{-4, -2, 0, 2, 4}^2`` and covariance ``0.03 I``; the samplers start uniformly in
``[-10, 10]^2`` and their gradients get ``N(0, I)`` noise, standing in for minibatch
noise. A mode counts as *visited* when at least 1% of a run's draws lie within 3
standard deviations of its mean.

The samplers here are used as a user would: :class:`~pyro_csg.CyclicalSGLD` with a
``potential_fn`` (the cosine schedule, or :class:`~pyro_csg.PolynomialDecay` for plain
SGLD), and Pyro's :class:`~pyro.infer.NUTS` on the exact potential, all on the same
budget of gradient evaluations.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro.infer import MCMC, NUTS

from ..adapter.kernels import CyclicalSGLD
from ..core.schedules import PolynomialDecay

__all__ = [
    "MODE_MEANS",
    "MODE_VARIANCE",
    "log_density",
    "noisy_potential",
    "modes_visited",
    "random_start",
    "MixtureRun",
    "run_csgld",
    "run_sgld",
    "run_nuts",
    "plot_draws",
]

_GRID = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
MODE_MEANS = torch.cartesian_prod(_GRID, _GRID)
"""The 25 mode means, shape ``(25, 2)``."""
MODE_VARIANCE = 0.03
"""Each component's variance (its covariance is ``MODE_VARIANCE * I``)."""


def log_density(x: torch.Tensor) -> torch.Tensor:
    """Log density of the 25-Gaussian mixture at points ``x`` of shape ``(..., 2)``.

    Example::

        >>> import torch
        >>> from pyro_csg.examples.mixture import log_density
        >>> bool(log_density(torch.zeros(2)) > log_density(torch.ones(2)))
        True
    """
    squared = ((x.unsqueeze(-2) - MODE_MEANS.to(x)) ** 2).sum(-1)
    log_normal = -0.5 * squared / MODE_VARIANCE - math.log(2 * math.pi * MODE_VARIANCE)
    return torch.logsumexp(log_normal, -1) - math.log(len(MODE_MEANS))


def exact_potential(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """``U(x) = -log p(x)``, for NUTS (``params = {"x": tensor of shape (2,)}``).

    Example::

        >>> import torch
        >>> from pyro_csg.examples.mixture import exact_potential, log_density
        >>> x = torch.tensor([2.0, -4.0])
        >>> bool(exact_potential({"x": x}) == -log_density(x))
        True
    """
    return -log_density(params["x"])


def noisy_potential(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """``U(x) + xi . x`` with a fresh ``xi ~ N(0, I)`` per call: the gradient is
    ``grad U(x) + xi``, the paper's stand-in for a minibatch gradient.

    Example::

        >>> import torch
        >>> from pyro_csg.examples.mixture import noisy_potential
        >>> x = torch.zeros(2, requires_grad=True)
        >>> noisy_potential({"x": x}).shape
        torch.Size([])
    """
    x = params["x"]
    return -log_density(x) + (x * torch.randn_like(x)).sum()


def random_start(seed: int) -> dict[str, torch.Tensor]:
    """The paper's start, ``x0 ~ U[-10, 10]^2``, drawn from its own seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return {"x": 20.0 * torch.rand(2, generator=generator) - 10.0}


def modes_visited(
    draws: torch.Tensor, min_fraction: float = 0.01, radius_sds: float = 3.0
) -> torch.Tensor:
    """Which of the 25 modes the draws ``(n, 2)`` visited: a bool tensor of shape (25,).

    A mode is visited when at least ``min_fraction`` of the draws lie within
    ``radius_sds`` standard deviations (Euclidean distance ``radius_sds *
    sqrt(MODE_VARIANCE)``) of its mean.

    Example::

        >>> from pyro_csg.examples.mixture import MODE_MEANS, modes_visited
        >>> int(modes_visited(MODE_MEANS[:3].repeat(10, 1)).sum())
        3
    """
    draws = torch.as_tensor(draws)
    if draws.ndim != 2 or draws.shape[1] != 2:
        raise ValueError(f"draws must have shape (n, 2), got {tuple(draws.shape)}")
    distance = torch.cdist(draws.to(MODE_MEANS), MODE_MEANS)
    near = distance <= radius_sds * math.sqrt(MODE_VARIANCE)
    return near.float().mean(0) >= min_fraction


@dataclass
class MixtureRun:
    """One sampler's run: its draws ``(n, 2)``, gradient evaluations and wall time.

    Example::

        >>> import torch
        >>> from pyro_csg.examples.mixture import MODE_MEANS, MixtureRun
        >>> MixtureRun("by hand", MODE_MEANS[:2].repeat(5, 1), 0, 0.0).visited
        2
    """

    name: str
    draws: torch.Tensor
    gradient_evaluations: int
    seconds: float
    mcmc: MCMC | None = field(default=None, repr=False)

    @property
    def visited(self) -> int:
        """How many of the 25 modes the draws visited."""
        return int(modes_visited(self.draws).sum())


def _run_sg(name, kernel, num_samples, seed, progress) -> MixtureRun:
    pyro.set_rng_seed(seed)
    mcmc = MCMC(
        kernel,
        num_samples=num_samples,
        warmup_steps=0,
        initial_params=random_start(seed),
        disable_progbar=not progress,
    )
    start = time.perf_counter()
    mcmc.run()
    seconds = time.perf_counter() - start
    steps = kernel.steps_per_cycle * num_samples // kernel.samples_per_cycle
    return MixtureRun(name, mcmc.get_samples()["x"], steps, seconds, mcmc)


def run_csgld(
    num_cycles: int = 30,
    steps_per_cycle: int = 1667,
    step_size: float = 0.07,
    samples_per_cycle: int = 100,
    exploration_fraction: float = 0.03,
    seed: int = 0,
    progress: bool = False,
) -> MixtureRun:
    """cSGLD on the noisy potential: ``num_cycles * steps_per_cycle`` gradient evaluations.

    The defaults are the paper's: 30 cycles over about 50,000 steps, peak step 0.07, and
    the first 50 steps of each cycle (3%) not kept (here: noise-free exploration).

    Example::

        >>> from pyro_csg.examples.mixture import run_csgld
        >>> run = run_csgld(num_cycles=2, steps_per_cycle=100, samples_per_cycle=10)
        >>> run.draws.shape, run.gradient_evaluations
        (torch.Size([20, 2]), 200)
    """
    kernel = CyclicalSGLD(
        potential_fn=noisy_potential,
        # The paper's runs start at a random point, as NUTS's does here: no optimisation
        # stage, which would put every chain in a mode before its first cycle.
        optimize_start=False,
        step_size=step_size,
        steps_per_cycle=steps_per_cycle,
        exploration_fraction=exploration_fraction,
        samples_per_cycle=samples_per_cycle,
    )
    return _run_sg("cSGLD", kernel, num_cycles * samples_per_cycle, seed, progress)


def sgld_schedule(first_step: float = 0.043, b: float = 500.0) -> PolynomialDecay:
    """``eta_k = a * (b + k) ** -0.55`` with ``a`` set so that ``eta_0 = first_step``.

    Example::

        >>> from pyro_csg.examples.mixture import sgld_schedule
        >>> schedule = sgld_schedule()
        >>> round(schedule(1), 4), round(schedule(50_000), 4)
        (0.043, 0.0034)
    """
    return PolynomialDecay(a=first_step * b**0.55, b=b, gamma=0.55)


def run_sgld(
    num_steps: int = 50_010,
    first_step: float = 0.043,
    b: float = 500.0,
    thinning: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> MixtureRun:
    """SGLD with the decaying step ``a * (b + k) ** -0.55``, one draw every ``thinning``
    steps, on the noisy potential.

    Example::

        >>> from pyro_csg.examples.mixture import run_sgld
        >>> run_sgld(num_steps=200, thinning=10).draws.shape
        torch.Size([20, 2])
    """
    if num_steps % thinning:
        raise ValueError(f"num_steps ({num_steps}) must be a multiple of thinning ({thinning})")
    kernel = CyclicalSGLD(
        potential_fn=noisy_potential,
        optimize_start=False,  # from the random start, as cSGLD and NUTS
        schedule=sgld_schedule(first_step, b),
        steps_per_cycle=thinning,
        exploration_fraction=0.0,
        samples_per_cycle=1,
    )
    return _run_sg("SGLD", kernel, num_steps // thinning, seed, progress)


def run_nuts(
    budget: int = 50_010, warmup_steps: int = 500, seed: int = 0, progress: bool = False
) -> MixtureRun:
    """Pyro's NUTS on the exact potential until it has used ``budget`` gradient evaluations
    (warm-up included); the draws after warm-up are kept.

    The kernel is driven directly (``setup`` then ``sample``), as ``MCMC`` does, so the run
    can stop at the budget.

    Example::

        >>> from pyro_csg.examples.mixture import run_nuts
        >>> run = run_nuts(budget=300, warmup_steps=20)
        >>> run.gradient_evaluations >= 300
        True
    """
    evaluations = 0

    def counted_potential(params):
        nonlocal evaluations
        evaluations += 1
        return exact_potential(params)

    pyro.set_rng_seed(seed)
    kernel = NUTS(potential_fn=counted_potential, adapt_step_size=True)
    kernel.initial_params = random_start(seed)
    start = time.perf_counter()
    kernel.setup(warmup_steps)
    params = kernel.initial_params
    draws, iteration = [], 0
    while evaluations < budget:
        params = kernel.sample(params)
        iteration += 1
        if iteration > warmup_steps:
            draws.append(params["x"].detach().clone())
        if progress and iteration % 500 == 0:
            print(f"NUTS: {iteration} iterations, {evaluations} gradient evaluations")
    kernel.cleanup()
    seconds = time.perf_counter() - start
    return MixtureRun(
        "NUTS", torch.stack(draws) if draws else torch.empty(0, 2), evaluations, seconds
    )


def plot_draws(runs: list[MixtureRun], axes=None, max_points: int = 2000) -> Any:
    """Scatter each run's draws over the mixture's density, one panel per run.

    :returns: the Axes (a NumPy array, one per run).

    Example::

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from pyro_csg.examples.mixture import run_sgld, plot_draws
        >>> axes = plot_draws([run_sgld(num_steps=100)])
        >>> len(axes)
        1
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if axes is None:
        _, axes = plt.subplots(
            1, len(runs), figsize=(4 * len(runs), 4), layout="constrained", squeeze=False
        )
        axes = axes[0]
    axes = np.asarray(axes).reshape(-1)
    grid = torch.linspace(-6, 6, 240)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    density = log_density(torch.stack([xx, yy], -1)).exp()
    for ax, run in zip(axes, runs, strict=False):
        ax.contourf(xx.numpy(), yy.numpy(), density.numpy(), levels=20, cmap="Greys")
        draws = run.draws
        if len(draws) > max_points:
            draws = draws[torch.linspace(0, len(draws) - 1, max_points).long()]
        shown = (
            f"{len(draws):,} of {len(run.draws):,} draws"
            if len(draws) < len(run.draws)
            else "draws"
        )
        ax.scatter(draws[:, 0], draws[:, 1], s=3, color="tab:red", alpha=0.5, label=shown)
        ax.set(
            xlim=(-6, 6),
            ylim=(-6, 6),
            aspect="equal",
            xlabel="x[0]",
            ylabel="x[1]",
            title=f"{run.name}: {run.visited} of 25 modes visited",
        )
    # One legend for the figure: what the grey and the red are.
    from matplotlib.patches import Patch

    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(Patch(color="0.3", label="target density (25 Gaussians)"))
    axes[0].legend(handles=handles, loc="lower left", fontsize="small", framealpha=0.9)
    return axes


def visits_table(runs: list[MixtureRun]) -> Any:
    """A pandas DataFrame, one row per run: modes visited, draws, gradient evaluations and
    wall time.

    Example::

        >>> from pyro_csg.examples.mixture import run_sgld, visits_table
        >>> list(visits_table([run_sgld(num_steps=100)]).columns)
        ['method', 'modes visited (of 25)', 'draws', 'gradient evaluations', 'seconds']
    """
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "method": run.name,
                "modes visited (of 25)": run.visited,
                "draws": len(run.draws),
                "gradient evaluations": run.gradient_evaluations,
                "seconds": round(run.seconds, 1),
            }
            for run in runs
        ]
    )
