"""Calibration of :func:`pyro_csg.cycle_diagnostic` on real runs of the kernels.

Each target is sampled by ``pyro.infer.MCMC`` with a pyro-csg kernel, once per seed, and
converted by ``to_inference_data``; the run *alarms* when any element does. Printed per
target: the share of seeds that alarm, the range over seeds of the largest between-cycle
R-hat (ArviZ, cycles as chains: what the diagnostic replaces), and the modes the census
counts. Targets:

* unimodal, where the alarm must stay quiet (at most 5% of seeds):
  ``notebook1`` -- notebook 1's logistic regression on the bundled breast-cancer data,
  cSGHMC with its settings (step 2/N, 20 cycles of 1000 steps, 4 draws, B = 32);
  ``readme`` -- the README's linear regression (N = 20,000, defaults, 25 cycles);
  ``gaussian`` -- a Gaussian mean (N = 5000, cSGLD defaults, 30 cycles);
* multimodal, where it must fire (at least 95% of seeds):
  ``mixture`` -- notebook 2's cSGLD on the 25 Gaussians (30 cycles of 1667 steps);
  ``bimodal`` -- two Student-t modes at -2 and 2 in 1-D, the same sampler.

Run: ``python benchmarks/cycle_diagnostic.py`` (20 seeds per target, about 25 minutes
on 2 cores) or ``--seeds 2 --targets gaussian mixture`` for a quick look.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC

import pyro_csg
from pyro_csg import CyclicalSGHMC, CyclicalSGLD, cycle_diagnostic, mode_census
from pyro_csg.examples import mixture
from pyro_csg.examples.breast_cancer import load_breast_cancer_split, logistic_regression


def _run(kernel, num_samples, args=(), initial_params=None, seed=0):
    pyro.set_rng_seed(seed)
    mcmc = MCMC(
        kernel,
        num_samples=num_samples,
        warmup_steps=0,
        disable_progbar=True,
        initial_params=initial_params,
    )
    mcmc.run(*args)
    return mcmc


def notebook1(seed: int) -> MCMC:
    x, y, _, _ = load_breast_cancer_split()
    kernel = CyclicalSGHMC(
        logistic_regression,
        step_size=2.0 / len(y),
        steps_per_cycle=1000,
        exploration_fraction=0.5,
        samples_per_cycle=4,
        friction=0.1,
    )
    return _run(kernel, 20 * 4, (x, y, 32), seed=seed)


def readme(seed: int) -> MCMC:
    torch.manual_seed(0)
    x = torch.randn(20_000, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + torch.randn(20_000)

    def model(x, y, subsample_size=None):
        w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
            pyro.sample("obs", dist.Normal(x[idx] @ w, sigma), obs=y[idx])

    return _run(CyclicalSGHMC(model), 25 * 4, (x, y, 100), seed=seed)


def gaussian(seed: int) -> MCMC:
    torch.manual_seed(0)
    y = torch.randn(5000) + 1.0

    def model(y, subsample_size=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", y.shape[0], subsample_size=subsample_size) as idx:
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])

    return _run(CyclicalSGLD(model), 30 * 4, (y, 50), seed=seed)


def _csgld(potential_fn, initial_params, seed):
    kernel = CyclicalSGLD(
        potential_fn=potential_fn,
        step_size=0.07,
        steps_per_cycle=1667,
        exploration_fraction=0.03,
        samples_per_cycle=100,
    )
    return _run(kernel, 30 * 100, initial_params=initial_params, seed=seed)


def mixture_25(seed: int) -> MCMC:
    return _csgld(mixture.noisy_potential, mixture.random_start(seed), seed)


BIMODAL_MEANS = torch.tensor([-2.0, 2.0])


def bimodal_potential(params):
    """Two Student-t(3) modes at -2 and 2, scale sqrt(0.03), with the mixture notebook's
    ``N(0, I)`` gradient noise: stiff modes, bounded gradients between them."""
    x = params["x"]
    log_t = -2.0 * torch.log1p((x.unsqueeze(-1) - BIMODAL_MEANS) ** 2 / (3 * 0.03))
    return -torch.logsumexp(log_t, -1).sum() + (x * torch.randn_like(x)).sum()


def bimodal(seed: int) -> MCMC:
    generator = torch.Generator().manual_seed(seed)
    start = {"x": 8.0 * torch.rand(1, generator=generator) - 4.0}
    return _csgld(bimodal_potential, start, seed)


TARGETS = {
    "notebook1": (notebook1, "unimodal"),
    "readme": (readme, "unimodal"),
    "gaussian": (gaussian, "unimodal"),
    "mixture": (mixture_25, "multimodal"),
    "bimodal": (bimodal, "multimodal"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    print(
        f"{'target':<10} {'kind':<10} {'seeds':>5} {'alarms':>6} {'separation (max)':>18} "
        f"{'R-hat between cycles (max)':>27} {'modes':>9} {'s/run':>6}"
    )
    for name in args.targets:
        run, kind = TARGETS[name]
        alarms, separations, rhats, modes = 0, [], [], []
        start = time.perf_counter()
        for seed in range(args.seeds):
            mcmc = run(seed)
            idata = pyro_csg.to_inference_data(mcmc, log_likelihood=False)
            table = cycle_diagnostic(idata)
            alarms += bool(table["alarm"].any())
            separations.append(float(np.nan_to_num(table["separation"]).max()))
            by_cycle = pyro_csg.to_inference_data(mcmc, log_likelihood=False, group_by="cycle")
            rhats.append(float(az.rhat(by_cycle).to_array().max()))
            modes.append(mode_census(idata).num_modes)
        seconds = (time.perf_counter() - start) / args.seeds
        print(
            f"{name:<10} {kind:<10} {args.seeds:>5} {alarms:>6} "
            f"{min(separations):>8.2f} to {max(separations):<6.2f} "
            f"{min(rhats):>15.2f} to {max(rhats):<8.2f} "
            f"{min(modes):>3} to {max(modes):<3} {seconds:>6.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
