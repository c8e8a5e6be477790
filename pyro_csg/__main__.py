"""Command line: ``python -m pyro_csg demo`` (or ``pyro-csg demo``).

The demo fits a Bayesian logistic regression to scikit-learn's bundled breast-cancer data
(569 tumours, 30 standardised features) with subsampled cSGHMC inside ``pyro.infer.MCMC``,
prints Pyro's posterior summary, and scores held-out tumours with ``Predictive``.
"""

from __future__ import annotations

import argparse
import sys
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, Predictive

from . import __version__
from .kernels import CyclicalSGHMC


def logistic_regression(
    x: torch.Tensor, y: torch.Tensor | None = None, subsample_size: int | None = None
) -> None:
    """Bayesian logistic regression: ``w ~ N(0, I)``, ``b ~ N(0, 5^2)``, ``y ~ Bernoulli``.

    Example::

        >>> import torch, pyro
        >>> from pyro_csg.__main__ import logistic_regression
        >>> trace = pyro.poutine.trace(logistic_regression).get_trace(torch.randn(8, 3))
        >>> trace.nodes["obs"]["value"].shape
        torch.Size([8])
    """
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        pyro.sample("obs", dist.Bernoulli(logits=x[idx] @ w + b), obs=None if y is None else y[idx])


def load_breast_cancer_split(seed: int = 0, test_fraction: float = 0.2):
    """Standardised breast-cancer features and labels, split into train and test tensors."""
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as error:  # pragma: no cover - depends on the install
        raise SystemExit(
            "the demo needs scikit-learn (for its bundled data): pip install 'pyro-csg[demo]'"
        ) from error
    features, labels = load_breast_cancer(return_X_y=True)
    x = torch.tensor(features, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.float32)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    mean, sd = x[train].mean(0), x[train].std(0)
    x = (x - mean) / sd
    return x[train], y[train], x[test], y[test]


def demo(
    cycles: int = 20,
    steps_per_cycle: int = 1000,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Run the demo; print the summary and return the headline figures."""
    x_train, y_train, x_test, y_test = load_breast_cancer_split(seed)
    n = len(y_train)
    print(
        f"pyro-csg {__version__}: Bayesian logistic regression, breast-cancer data "
        f"({n} train / {len(y_test)} test tumours, {x_train.shape[1]} features)"
    )
    print(
        f"cSGHMC: {cycles} cycles x {steps_per_cycle} steps, minibatches of {batch_size}, "
        f"4 draws per cycle, seed {seed}"
    )
    pyro.set_rng_seed(seed)
    kernel = CyclicalSGHMC(
        logistic_regression,
        step_size=2.0 / n,  # a learning rate of 2 on the mean loss
        steps_per_cycle=steps_per_cycle,
        exploration_fraction=0.5,
        samples_per_cycle=4,
        friction=0.1,
    )
    mcmc = MCMC(kernel, num_samples=cycles * 4, warmup_steps=0, disable_progbar=not progress)
    start = time.perf_counter()
    mcmc.run(x_train, y_train, subsample_size=batch_size)
    seconds = time.perf_counter() - start
    mcmc.summary(prob=0.9)
    samples = mcmc.get_samples()
    probabilities = Predictive(
        logistic_regression, posterior_samples=samples, return_sites=["obs"]
    )(x_test)["obs"].mean(0)
    accuracy = float(((probabilities > 0.5).float() == y_test).float().mean())
    eps = 1e-6
    nll = float(
        -(
            y_test * probabilities.clamp_min(eps).log()
            + (1 - y_test) * (1 - probabilities).clamp_min(eps).log()
        ).mean()
    )
    print(
        f"sampling time {seconds:.1f} s; held-out accuracy {accuracy:.3f}, "
        f"held-out log loss {nll:.3f} (posterior predictive over {len(samples['b'])} draws)"
    )
    return {"accuracy": accuracy, "nll": nll, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m pyro_csg`` and the ``pyro-csg`` script."""
    parser = argparse.ArgumentParser(prog="pyro-csg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="subsampled Bayesian logistic regression")
    run_demo.add_argument("--cycles", type=int, default=20)
    run_demo.add_argument("--steps-per-cycle", type=int, default=1000)
    run_demo.add_argument("--batch-size", type=int, default=32)
    run_demo.add_argument("--seed", type=int, default=0)
    run_demo.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(
            args.cycles,
            args.steps_per_cycle,
            args.batch_size,
            args.seed,
            progress=not args.no_progress,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
