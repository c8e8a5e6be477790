"""Models and exact posteriors shared by the tests (importable, so chains can be spawned)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch


def linear_regression_data(n=5000, d=3, sigma=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator)
    w_true = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0][:d])
    y = x @ w_true + sigma * torch.randn(n, generator=generator)
    return x, y


def linear_regression(x, y, subsample_size=None, sigma=1.0, prior_scale=1.0):
    """y ~ N(x @ w, sigma^2), w ~ N(0, prior_scale^2 I): a conjugate model."""
    d = x.shape[1]
    w = pyro.sample("w", dist.Normal(torch.zeros(d), prior_scale).to_event(1))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        pyro.sample("obs", dist.Normal(x[idx] @ w, sigma), obs=None if y is None else y[idx])


def linear_regression_posterior(x, y, sigma=1.0, prior_scale=1.0):
    """Exact posterior mean and standard deviations of ``w`` (float64)."""
    x64, y64 = x.double(), y.double()
    precision = x64.T @ x64 / sigma**2 + torch.eye(x.shape[1], dtype=torch.float64) / prior_scale**2
    covariance = torch.linalg.inv(precision)
    mean = covariance @ (x64.T @ y64) / sigma**2
    return mean, covariance.diagonal().sqrt()


def gamma_normal_data(n=2000, precision=4.0, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=generator) / math.sqrt(precision)


def gamma_normal(y, subsample_size=None, a=2.0, b=2.0):
    """y ~ N(0, 1 / tau), tau ~ Gamma(a, b): a positive site with a conjugate posterior."""
    tau = pyro.sample("tau", dist.Gamma(a, b))
    with pyro.plate("data", y.shape[0], subsample_size=subsample_size) as idx:
        pyro.sample("obs", dist.Normal(0.0, tau.rsqrt()), obs=y[idx])


def gamma_normal_posterior(y, a=2.0, b=2.0):
    """Posterior of tau: Gamma(a + n/2, b + sum(y^2)/2); returns (mean, sd)."""
    shape = a + y.shape[0] / 2
    rate = b + float((y.double() ** 2).sum()) / 2
    return shape / rate, math.sqrt(shape) / rate


def make_bnn(d=5, h=8, c=3, read_weights_first=True):
    """A Bayesian MLP as a PyroModule with PyroSample priors (the usual Pyro BNN)."""
    from pyro.nn import PyroModule, PyroSample

    class BNN(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc1 = PyroModule[torch.nn.Linear](d, h)
            self.fc1.weight = PyroSample(dist.Normal(0.0, 1.0).expand([h, d]).to_event(2))
            self.fc1.bias = PyroSample(dist.Normal(0.0, 1.0).expand([h]).to_event(1))
            self.fc2 = PyroModule[torch.nn.Linear](h, c)
            self.fc2.weight = PyroSample(dist.Normal(0.0, 1.0).expand([c, h]).to_event(2))
            self.fc2.bias = PyroSample(dist.Normal(0.0, 1.0).expand([c]).to_event(1))

        def forward(self, x, y=None, subsample_size=None):
            if read_weights_first:
                for layer in (self.fc1, self.fc2):
                    _ = (layer.weight, layer.bias)  # sampled once, as globals, outside the plate
            with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
                logits = self.fc2(torch.tanh(self.fc1(x[idx])))
                pyro.sample(
                    "obs", dist.Categorical(logits=logits), obs=None if y is None else y[idx]
                )
            return logits

    return BNN()


def logistic_regression_data(n=300, d=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator)
    logits = x @ torch.tensor([1.5, -1.0, 0.5, 2.0][:d]) - 0.5
    y = torch.bernoulli(torch.sigmoid(logits), generator=generator)
    return x, y


def logistic_regression(x, y=None, subsample_size=None):
    """y ~ Bernoulli(sigmoid(x @ w + b)), w ~ N(0, I), b ~ N(0, 1)."""
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        pyro.sample("y", dist.Bernoulli(logits=x[idx] @ w + b), obs=None if y is None else y[idx])


def bimodal():
    """x ~ 0.5 N(-2, 0.5^2) + 0.5 N(2, 0.5^2): two well separated modes."""
    components = dist.Normal(torch.tensor([-2.0, 2.0]), 0.5)
    pyro.sample("x", dist.MixtureSameFamily(dist.Categorical(torch.ones(2)), components))


def standard_normal(d=2):
    pyro.sample("x", dist.Normal(0.0, 1.0).expand([d]).to_event(1))


def regression_with_noise_scale(x, y, subsample_size=None):
    """y ~ N(x @ w, sigma^2) with w ~ N(0, I) and sigma ~ HalfNormal(2): one site on the
    real line, one constrained (stored unconstrained too by a checkpointed run)."""
    d = x.shape[1]
    w = pyro.sample("w", dist.Normal(torch.zeros(d), 1.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        pyro.sample("obs", dist.Normal(x[idx] @ w, sigma), obs=None if y is None else y[idx])
