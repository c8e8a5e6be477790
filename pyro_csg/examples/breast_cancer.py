"""Bayesian logistic regression on scikit-learn's bundled breast-cancer data.

569 tumours, 30 features standardised with the training set's mean and sd, split once
into training and test sets. The model declares its data plate with ``subsample_size``,
so one function serves subsampled cSGHMC (``subsample_size=32``), Pyro's NUTS on the
full data (``subsample_size=None``) and ``Predictive``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from ._data import fixed_split, load_bundled

__all__ = ["logistic_regression", "load_breast_cancer_split", "predictive_scores"]


def logistic_regression(
    x: torch.Tensor, y: torch.Tensor | None = None, subsample_size: int | None = None
) -> None:
    """Bayesian logistic regression: ``w ~ N(0, I)``, ``b ~ N(0, 5^2)``, ``y ~ Bernoulli``.

    Example::

        >>> import torch, pyro
        >>> from pyro_csg.examples.breast_cancer import logistic_regression
        >>> trace = pyro.poutine.trace(logistic_regression).get_trace(torch.randn(8, 3))
        >>> trace.nodes["obs"]["value"].shape
        torch.Size([8])
    """
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1], device=x.device), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(torch.zeros((), device=x.device), 5.0))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        # (x @ w[..., None])[..., 0] rather than x @ w: the same for one draw, and it
        # broadcasts over a batch of draws, so Predictive(parallel=True) can vectorise.
        logits = (x[idx] @ w.unsqueeze(-1)).squeeze(-1) + b
        pyro.sample("obs", dist.Bernoulli(logits=logits), obs=None if y is None else y[idx])


def load_breast_cancer_split(
    seed: int = 0, test_fraction: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x_train, y_train, x_test, y_test``: standardised features, labels as floats.

    Example::

        >>> from pyro_csg.examples.breast_cancer import load_breast_cancer_split
        >>> x_train, y_train, x_test, y_test = load_breast_cancer_split()
        >>> tuple(x_train.shape), tuple(x_test.shape)
        ((455, 30), (114, 30))
    """
    x, labels = load_bundled("load_breast_cancer")
    y = labels.float()
    train, test = fixed_split(len(y), int(round(test_fraction * len(y))), seed)
    mean, sd = x[train].mean(0), x[train].std(0)
    x = (x - mean) / sd
    return x[train], y[train], x[test], y[test]


def predictive_scores(
    samples: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> dict[str, float]:
    """Held-out accuracy and log loss of the posterior predictive ``p(y = 1 | x)``: the
    mean over draws of the Bernoulli probability, from ``Predictive``'s vectorised trace.

    Example::

        >>> import torch
        >>> from pyro_csg.examples.breast_cancer import predictive_scores
        >>> samples = {"w": torch.zeros(10, 3), "b": torch.zeros(10)}
        >>> y = torch.tensor([0.0, 1.0, 0.0, 1.0])
        >>> scores = predictive_scores(samples, torch.randn(4, 3), y)
        >>> scores["accuracy"], round(scores["log_loss"], 4)
        (0.5, 0.6931)
    """
    from pyro.infer import Predictive

    predictive = Predictive(
        logistic_regression, posterior_samples=samples, return_sites=["obs"], parallel=True
    )
    with torch.no_grad():
        trace = predictive.get_vectorized_trace(x)
    probs = trace.nodes["obs"]["fn"].probs.reshape(-1, len(y)).mean(0)
    eps = 1e-12
    log_loss = -(y * probs.clamp_min(eps).log() + (1 - y) * (1 - probs).clamp_min(eps).log())
    return {
        "accuracy": float(((probs > 0.5).float() == y).float().mean()),
        "log_loss": float(log_loss.mean()),
    }
