"""Bayesian logistic regression at large N: synthetic data, the model and a reference.

``D = 10`` weights and an intercept with ``N(0, 1)`` priors, a Bernoulli likelihood with
logits ``x @ w + b``, data drawn from the model itself (so any ``N`` can be made offline).
The reference posterior is the Laplace approximation at the MAP, found by Newton's method
in float64 on the full data: at these ``N`` the posterior is Gaussian to within a few
hundredths of a standard deviation (``benchmarks/large_n.py`` and notebook 4 measure that
against NUTS at ``N = 1e4``). Used by the benchmark and by notebook 4.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from ..adapter.potential import ModelPotential
from ..analysis.arviz_lines import arviz

__all__ = [
    "D",
    "make_data",
    "logistic",
    "laplace",
    "flat_draws",
    "accuracy",
    "GradientCounter",
]

D = 10
"""The number of weights (the intercept comes on top)."""


def make_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` rows of standard-normal features and Bernoulli labels from the model.

    The weights are ``0.5 * N(0, 1)`` draws and the intercept is ``-0.5``.

    Example::

        >>> from pyro_csg.examples.large_logistic import make_data
        >>> x, y = make_data(1000)
        >>> tuple(x.shape), sorted(set(y.tolist()))
        ((1000, 10), [0.0, 1.0])
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=generator)
    w = torch.randn(D, generator=generator) * 0.5
    y = torch.bernoulli(torch.sigmoid(x @ w - 0.5), generator=generator)
    return x, y


def logistic(x: torch.Tensor, y: torch.Tensor | None = None, subsample_size: int | None = None):
    """The model: ``w ~ N(0, I)``, ``b ~ N(0, 1)``, ``y_i ~ Bernoulli(sigmoid(x_i w + b))``.

    Example::

        >>> import torch, pyro
        >>> from pyro_csg.examples.large_logistic import logistic, make_data
        >>> x, y = make_data(100)
        >>> trace = pyro.poutine.trace(logistic).get_trace(x, y, 10)
        >>> trace.nodes["obs"]["value"].shape
        torch.Size([10])
    """
    w = pyro.sample("w", dist.Normal(torch.zeros(D), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        pyro.sample("obs", dist.Bernoulli(logits=x[idx] @ w + b), obs=None if y is None else y[idx])


def laplace(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sds of the Laplace approximation, parameters ordered ``(w_1..w_D, b)``.

    Example::

        >>> from pyro_csg.examples.large_logistic import laplace, make_data
        >>> mean, sd = laplace(*make_data(10_000))
        >>> mean.shape, bool((sd < 0.05).all())
        ((11,), True)
    """
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    target = y.double()
    theta = torch.zeros(D + 1, dtype=torch.float64)
    identity = torch.eye(D + 1, dtype=torch.float64)
    for _ in range(50):
        p = torch.sigmoid(design @ theta)
        grad = design.T @ (target - p) - theta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + identity
        step = torch.linalg.solve(hessian, grad)
        theta = theta + step
        if step.abs().max() < 1e-12:
            break
    p = torch.sigmoid(design @ theta)
    hessian = design.T @ (design * (p * (1 - p))[:, None]) + identity
    return theta.numpy(), torch.linalg.inv(hessian).diagonal().sqrt().numpy()


def flat_draws(samples: dict) -> np.ndarray:
    """``(num_draws, D + 1)`` from ``{"w": (num_draws, D), "b": (num_draws,)}``.

    Example::

        >>> import torch
        >>> from pyro_csg.examples.large_logistic import flat_draws
        >>> flat_draws({"w": torch.zeros(3, 10), "b": torch.ones(3)}).shape
        (3, 11)
    """
    w = np.asarray(samples["w"], dtype=np.float64)
    b = np.asarray(samples["b"], dtype=np.float64).reshape(-1, 1)
    return np.concatenate([w, b], axis=1)


def accuracy(draws: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> dict:
    """Max ``|mean error|`` and the range of sd ratios (in reference sds), and the least
    bulk ESS over the parameters (ArviZ; ``draws`` of shape ``(draws, D)`` as one chain,
    ``(chains, draws, D)`` as several).

    Example::

        >>> import numpy as np
        >>> from pyro_csg.examples.large_logistic import accuracy
        >>> draws = np.random.default_rng(0).normal(size=(2000, 11))
        >>> report = accuracy(draws, np.zeros(11), np.ones(11))
        >>> bool(report["error"] < 0.1), bool(0.9 < report["ratio"][0] < 1.1)
        (True, True)
        >>> bool(accuracy(draws.reshape(2, 1000, 11), np.zeros(11), np.ones(11))["ess"] > 1500)
        True
    """
    chains = draws if draws.ndim == 3 else draws[None]
    pooled = chains.reshape(-1, chains.shape[-1])
    error = np.abs(pooled.mean(0) - mean) / sd
    ratio = pooled.std(0, ddof=1) / sd
    import xarray as xr

    ess = arviz().ess(xr.Dataset({"theta": (("chain", "draw", "element"), chains)}))
    ess = ess["theta"].values
    return {
        "error": float(error.max()),
        "ratio": (float(ratio.min()), float(ratio.max())),
        "ess": float(ess.min()),
    }


def _rows(indices) -> int:
    """How many data rows a batch's indices read. ``shape[0]``, not ``len()``: the counter
    wraps the hot loop's calls, and ``Tensor.__len__`` costs several µs a call (5% of a
    run at N = 1e4 was the counting)."""
    return sum(index.shape[0] for index in indices)


class GradientCounter:
    """Counts the gradient evaluations of every :class:`~pyro_csg.adapter.potential.ModelPotential`
    while active, and the data they read: ``calls`` and ``data`` (a vectorised call of the
    full-data pass counts once, with all of its windows' data; a paired call of a
    control-variate step counts two, with its batch twice; a call without a subsampled
    plate counts the model's ``N``).

    Example::

        >>> import pyro, warnings
        >>> from pyro.infer import MCMC
        >>> from pyro_csg import CyclicalSGLD
        >>> from pyro_csg.examples.large_logistic import GradientCounter, logistic, make_data
        >>> x, y = make_data(1000)
        >>> kernel = CyclicalSGLD(logistic, steps_per_cycle=50)
        >>> with GradientCounter() as counter, warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     MCMC(kernel, num_samples=4, warmup_steps=0, disable_progbar=True).run(x, y, 100)
        >>> counter.data == 100 * counter.calls or counter.data > 100 * 50
        True
    """

    def __init__(self) -> None:
        self.calls = 0
        self.data = 0
        self._originals: dict = {}

    def __enter__(self) -> GradientCounter:
        counter = self
        for name in ("value_and_grad", "eager_value_and_grad", "lean_value_and_grad"):
            original = getattr(ModelPotential, name)
            self._originals[name] = original

            def counted(potential, flat, indices=(), *rest, _original=original, _name=name):
                # The traced path calls eager_value_and_grad only for the partial windows.
                if _name != "eager_value_and_grad" or not potential.compiled or rest:
                    counter.calls += 1
                    counter.data += _rows(indices) or int(
                        potential.model_args[0].shape[0]
                    )
                return _original(potential, flat, indices, *rest)

            setattr(ModelPotential, name, counted)
        original = ModelPotential.vectorised
        self._originals["vectorised"] = original

        def vectorised(potential, flat, windows, _original=original):
            counter.calls += 1
            counter.data += windows.numel()
            return _original(potential, flat, windows)

        ModelPotential.vectorised = vectorised
        for name in ("paired_value_and_grad", "paired_lean_value_and_grad"):
            original = getattr(ModelPotential, name)
            self._originals[name] = original

            def paired(potential, flat, other, indices=(), _original=original):
                before = counter.calls
                result = _original(potential, flat, other, indices)
                if counter.calls == before:  # one vmapped call: two gradients of the batch
                    counter.calls += 2
                    counter.data += 2 * _rows(indices)
                return result

            setattr(ModelPotential, name, paired)
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self._originals.items():
            setattr(ModelPotential, name, original)
