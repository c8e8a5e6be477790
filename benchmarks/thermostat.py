"""What cSGNHT's thermostat buys: gradient noise that the noise model cannot see.

A 3-D Gaussian (scales 1, 2 and 0.5) whose gradient carries N(0, s^2) noise drawn afresh
at every call, so that the same minibatch gives another gradient: the automatic step
size's Hessian probes and noise measurement (which difference gradients on one batch) do
not see it. Each kernel runs through the Pyro-free core (``pyro_csg.core.sampler.run``)
with its defaults (automatic step size and preconditioner), 500 cycles of 400 steps, 4
draws a cycle; the table gives the posterior sd ratios (draws / exact) per coordinate.

Run: ``python benchmarks/thermostat.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import platform

import torch

from pyro_csg.core.diffusions import sghmc, sgld, sgnht
from pyro_csg.core.sampler import SamplerConfig, run
from pyro_csg.core.schedules import CycleLayout

SCALES = torch.tensor([1.0, 2.0, 0.5])


def noisy_gaussian(noise: float, seed: int):
    generator = torch.Generator().manual_seed(seed)

    def value_and_grad(theta, indices):
        exact = theta / SCALES**2
        return ((theta / SCALES) ** 2).sum() / 2, exact + noise * torch.randn(
            3, generator=generator
        )

    return value_and_grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 3.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    print(f"{'noise sd':>8}  {'sampler':<8} sd ratios (exact = 1)")
    for noise in args.noise:
        for name, diffusion in (("cSGLD", sgld()), ("cSGHMC", sghmc(0.1)), ("cSGNHT", sgnht(0.1))):
            config = SamplerConfig(CycleLayout(400, 0.5, 4), diffusion)
            draws = run(noisy_gaussian(noise, 5), torch.zeros(3), config, args.draws, seed=1).draws
            ratios = (draws.std(0) / SCALES).tolist()
            print(f"{noise:8.1f}  {name:<8} " + "  ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    main()
