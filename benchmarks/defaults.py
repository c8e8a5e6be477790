"""The defaults on models they were not tuned on: right, or never silent.

Every model runs with ``CyclicalSGHMC(model)`` and ``CyclicalSGLD(model)``, no settings
but ``warmup_steps=0`` and the number of draws, over several seeds, and is compared with
Pyro's NUTS on the same model (500 warm-up steps, 1,000 draws; its divergences are
counted). A run is

* ``right``: every scalar element's mean within 0.3 NUTS sds and its sd within
  [0.7, 1.4] times NUTS's (elements of the constrained posterior);
* ``warned``: not right, but a :class:`~pyro_csg.SamplerWarning` fired (which ones is
  printed: ``temperature``, ``runaway``, ``noise``, ``backoff``, ``start``, ``drift``,
  ``ess``, ``region``) and the run is marked (``hyperparameters()["sampler_warnings"]``,
  which the InferenceData's attrs carry);
* ``silent``: not right and no warning -- the outcome this script exists to find;
* ``error``: an exception (``NonFiniteError`` included).

The models (none used to tune the defaults):

``hier_logistic``  hierarchical logistic regression, 8 group intercepts, tau ~ HalfNormal(1),
                   3 weights, N = 6,000, B = 64;
``eight_centred`` / ``eight_noncentred``  Pyro's eight schools, both parameterisations;
``banana``         ``potential_fn``, U = x0^2/8 + 2 (x1 - x0^2/2 + 1)^2 (exact reference);
``ar_gaussian``    ``potential_fn``, 20-D Gaussian, AR(1) correlation 0.95, scales 0.1-10
                   (exact reference);
``gamma_normal``   Pyro's test model: precision ~ Gamma(2, 2) (its ``test_mcmc_api``);
``lkj``            LKJ prior on a 3x3 correlation, the full data (Pyro's LKJ test);
``regression``     a ``PyroModule`` Bayesian linear regression with a learned sigma
                   (the Bayesian regression tutorial's shape, synthetic data);
``deterministic``  a linear model with ``pyro.deterministic`` sites (the predictive tutorial);
``baseball_pooled`` / ``baseball_unpooled`` / ``baseball_partial``  Pyro's baseball example
                   on Efron and Morris's 18 players (45 at-bats each), the third the
                   centred ``partially_pooled_with_logit``;
``time_series``    a latent AR(1) process, 100 steps, the full-data gradient;
``many_groups``    hierarchical regression, 60 group effects, the observation plate
                   subsampled (B = 100 of 3,000);
``survival``       a censored Weibull survival model with two covariates;
``sir``            an SIR epidemic in small (Pyro's SIR example's traits): a ``pyro.factor``
                   wall where the potential is +inf and a masked Poisson likelihood
                   (exact reference: quadrature on a grid; NUTS takes over 10 minutes);
``growth``         logistic growth curves, 6 groups x 60 times, nested plates with the time
                   plate subsampled (B = 20), a level and group offsets identified only in
                   their sums (the logistic-growth tutorial's prior-pinned direction).

Run: ``python benchmarks/defaults.py`` (3 seeds, 50 cycles, about 40 minutes on 2 cores)
or ``--models eight_noncentred banana --seeds 1`` for a quick look. NUTS's references are
stored in ``benchmarks/defaults_reference.json`` (delete a model's entry to rerun it).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS
from pyro.nn import PyroModule, PyroSample

import pyro_csg
from pyro_csg import CyclicalSGHMC, CyclicalSGLD, SamplerWarning

CACHE = Path(__file__).with_name("defaults_reference.json")


def _data(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the models --------------------------------------------------------------------------
def hier_logistic_data():
    g = _data(1)
    n, groups = 6000, 8
    x = torch.randn(n, 3, generator=g)
    group = torch.randint(0, groups, (n,), generator=g)
    alpha = 0.7 * torch.randn(groups, generator=g)
    logits = alpha[group] + x @ torch.tensor([1.0, -0.5, 0.25])
    y = torch.bernoulli(torch.sigmoid(logits), generator=g)
    return (x, group, y), {}


def hier_logistic(x, group, y, subsample_size=64):
    tau = pyro.sample("tau", dist.HalfNormal(1.0))
    with pyro.plate("groups", 8):
        alpha = pyro.sample("alpha", dist.Normal(0.0, tau))
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pyro.plate("data", len(y), subsample_size=subsample_size) as i:
        pyro.sample("y", dist.Bernoulli(logits=alpha[group[i]] + x[i] @ w), obs=y[i])


EIGHT_Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_centred(y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def eight_noncentred(y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)


def banana(params):
    x = params["x"]
    return x[0] ** 2 / 8 + 2 * (x[1] - x[0] ** 2 / 2 + 1) ** 2


def banana_exact(n=200_000):
    g = _data(2)
    x0 = 2 * torch.randn(n, generator=g, dtype=torch.float64)
    x1 = x0**2 / 2 - 1 + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    return {"x": torch.stack([x0, x1], -1)}


AR_SCALES = torch.logspace(-1, 1, 20)
AR_CORR = 0.95 ** (torch.arange(20)[:, None] - torch.arange(20)[None, :]).abs().double()
AR_COV = AR_CORR * AR_SCALES.double()[:, None] * AR_SCALES.double()[None, :]
AR_PRECISION = torch.linalg.inv(AR_COV).float()


def ar_gaussian(params):
    x = params["x"]
    return x @ AR_PRECISION @ x / 2


def ar_exact():
    return {"x": (torch.zeros(20, dtype=torch.float64), AR_COV.diagonal().sqrt())}


def gamma_normal_data():
    return (torch.randn(2000, generator=_data(3)) / 2.0,), {}


def gamma_normal(data):
    precision = pyro.sample("precision", dist.Gamma(2.0, 2.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(0.0, precision.rsqrt()), obs=data)


def lkj_data():
    g = _data(4)
    corr = torch.tensor([[1.0, 0.5, -0.3], [0.5, 1.0, 0.2], [-0.3, 0.2, 1.0]])
    chol = torch.linalg.cholesky(corr)
    return ((torch.randn(300, 3, generator=g) @ chol.T),), {}


def lkj(y):
    chol = pyro.sample("corr_chol", dist.LKJCholesky(3, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.MultivariateNormal(torch.zeros(3), scale_tril=chol), obs=y)


class Regression(PyroModule):
    def __init__(self):
        super().__init__()
        self.linear = PyroModule[torch.nn.Linear](3, 1)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 3]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([1]).to_event(1))

    def forward(self, x, y=None):
        sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)
        return mean


def regression_data():
    g = _data(5)
    x = torch.randn(170, 3, generator=g)
    y = 9.2 + x @ torch.tensor([-1.9, -0.2, 0.4]) + 0.95 * torch.randn(170, generator=g)
    return (x, y), {}


def deterministic(x, y=None):
    a = pyro.sample("a", dist.Normal(0.0, 10.0))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    mean = pyro.deterministic("mean", a + b * x)
    pyro.deterministic("b_squared", b**2)
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(mean, sigma), obs=y)


def deterministic_data():
    g = _data(6)
    x = torch.randn(100, generator=g)
    return (x, 1.0 + 0.5 * x + 0.3 * torch.randn(100, generator=g)), {}


BASEBALL_HITS = torch.tensor(
    [18, 17, 16, 15, 14, 14, 13, 12, 11, 11, 10, 10, 10, 10, 10, 9, 8, 7], dtype=torch.float32
)
AT_BATS = torch.full((18,), 45.0)


def baseball_pooled(at_bats, hits):
    phi = pyro.sample("phi", dist.Uniform(0.0, 1.0))
    with pyro.plate("players", 18):
        pyro.sample("obs", dist.Binomial(at_bats, phi), obs=hits)


def baseball_unpooled(at_bats, hits):
    with pyro.plate("players", 18):
        phi = pyro.sample("phi", dist.Uniform(0.0, 1.0))
        pyro.sample("obs", dist.Binomial(at_bats, phi), obs=hits)


def baseball_partial(at_bats, hits):
    loc = pyro.sample("loc", dist.Normal(-1.0, 1.0))
    scale = pyro.sample("scale", dist.HalfCauchy(1.0))
    with pyro.plate("players", 18):
        alpha = pyro.sample("alpha", dist.Normal(loc, scale))
        pyro.sample("obs", dist.Binomial(at_bats, logits=alpha), obs=hits)


def time_series_data():
    g = _data(7)
    z, zs = 0.0, []
    for _ in range(100):
        z = 0.8 * z + 0.56 * float(torch.randn((), generator=g))
        zs.append(z)
    return (torch.tensor(zs) + 0.5 * torch.randn(100, generator=g),), {}


def time_series(y):
    rho = pyro.sample("rho", dist.Uniform(-1.0, 1.0))
    scale = pyro.sample("scale", dist.HalfNormal(1.0))
    noise = pyro.sample("noise", dist.Normal(torch.zeros(len(y)), 1.0).to_event(1))
    z, zs = torch.zeros(()), []
    for t in range(len(y)):  # the latent process, non-centred innovations
        z = rho * z + scale * noise[t]
        zs.append(z)
    with pyro.plate("time", len(y)):
        pyro.sample("obs", dist.Normal(torch.stack(zs), 0.5), obs=y)


def many_groups_data():
    g = _data(8)
    n, groups = 3000, 60
    group = torch.randint(0, groups, (n,), generator=g)
    x = torch.randn(n, generator=g)
    effect = 0.5 * torch.randn(groups, generator=g)
    y = effect[group] + 0.8 * x + torch.randn(n, generator=g)
    return (x, group, y), {}


def many_groups(x, group, y, subsample_size=100):
    tau = pyro.sample("tau", dist.HalfNormal(1.0))
    with pyro.plate("groups", 60):
        effect = pyro.sample("effect", dist.Normal(0.0, 1.0)) * tau  # non-centred
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    with pyro.plate("data", len(y), subsample_size=subsample_size) as i:
        pyro.sample("y", dist.Normal(effect[group[i]] + beta * x[i], sigma), obs=y[i])


def survival_data():
    g = _data(9)
    n = 400
    x = torch.randn(n, 2, generator=g)
    scale = torch.exp(1.0 + x @ torch.tensor([0.5, -0.3]))
    times = scale * (-torch.log(torch.rand(n, generator=g))) ** (1 / 1.5)  # Weibull(scale, 1.5)
    censor = 3.0 * torch.rand(n, generator=g) + 1.0
    observed = (times <= censor).float()
    return (x, torch.minimum(times, censor), observed), {}


def survival(x, t, observed):
    b0 = pyro.sample("b0", dist.Normal(0.0, 2.0))
    b = pyro.sample("b", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    k = pyro.sample("shape", dist.Gamma(2.0, 1.0))
    scale = torch.exp(b0 + x @ b)
    with pyro.plate("data", len(t)):
        weibull = dist.Weibull(scale, k)
        # Observed times: the density; censored ones: the survival function.
        log_survival = -((t / scale) ** k)
        pyro.factor("censored", (1 - observed) * log_survival)
        pyro.sample("obs", weibull.mask(observed.bool()), obs=t)


SIR_POPULATION, SIR_DAYS = 1000.0, 40


def sir_curve(r0, recovery, days=SIR_DAYS, infected=5.0):
    """A deterministic SIR epidemic, one Euler step a day: the new infections per day
    and the lowest susceptible count (negative where the step overshoots)."""
    susceptible, infectious = SIR_POPULATION - infected, torch.as_tensor(infected)
    new, lowest = [], susceptible
    for _ in range(days):
        infections = r0 * recovery * susceptible * infectious / SIR_POPULATION
        susceptible = susceptible - infections
        infectious = infectious + infections - recovery * infectious
        new.append(infections)
        lowest = torch.minimum(torch.as_tensor(lowest), susceptible)
    return torch.stack(new), lowest


def sir_data():
    new, _ = sir_curve(torch.tensor(2.2), torch.tensor(0.3))
    return (torch.poisson(0.6 * new, generator=_data(10)),), {}


def sir(cases):
    """Pyro's SIR example in small: a ``pyro.factor`` wall (the potential is +inf where
    the epidemic would infect more people than there are) and a masked likelihood."""
    r0 = pyro.sample("R0", dist.Uniform(0.5, 6.0))
    recovery = pyro.sample("recovery", dist.Uniform(0.05, 1.0))
    rho = pyro.sample("rho", dist.Beta(5.0, 5.0))
    new, lowest = sir_curve(r0, recovery)
    possible = lowest >= 0
    pyro.factor("wall", torch.where(possible, 0.0, -math.inf))
    with pyro.plate("days", SIR_DAYS):
        # Where the Euler steps overshoot, ``new`` can overflow to inf or NaN: those
        # points are behind the wall, so their rate is a placeholder.
        rate = torch.where(possible, (rho * new).clamp_min(1e-3), torch.ones(()))
        pyro.sample("obs", dist.Poisson(rate).mask(possible), obs=cases)


def sir_exact(n=120):
    """The SIR posterior's moments by quadrature: the likelihood and prior on a grid,
    first over the prior's box, then (``n`` points a side) over the box where the log
    density is within 30 of its peak. On this data the moments agree with a 200-point
    grid to 1e-3 sds."""
    (cases,), _ = sir_data()
    cases = cases.double()

    def log_density(low, high, points):
        axes = [
            torch.linspace(a, b, points, dtype=torch.float64)
            for a, b in zip(low, high, strict=True)
        ]
        r0, recovery = (v.reshape(-1) for v in torch.meshgrid(axes[0], axes[1], indexing="ij"))
        new, lowest = sir_curve(r0, recovery)  # (days, points ** 2)
        rho = axes[2]
        rate = (rho * new[..., None]).clamp_min(1e-3).nan_to_num(1.0, posinf=1.0)
        log_p = dist.Poisson(rate, validate_args=False).log_prob(cases[:, None, None]).sum(0)
        log_p = log_p + dist.Beta(5.0, 5.0).log_prob(rho)
        log_p = torch.where((lowest >= 0)[:, None], log_p, -math.inf)
        return axes, log_p.reshape(points, points, points)

    axes, log_p = log_density([0.5, 0.05, 1e-4], [6.0, 1.0, 1 - 1e-4], 80)
    kept = (log_p > log_p.max() - 30).nonzero()
    low = [float(axes[k][max(int(kept[:, k].min()) - 2, 0)]) for k in range(3)]
    high = [float(axes[k][min(int(kept[:, k].max()) + 2, 79)]) for k in range(3)]
    axes, log_p = log_density(low, high, n)
    weight = (log_p - log_p.max()).exp()
    weight = weight / weight.sum()
    out = {}
    for k, site in enumerate(["R0", "recovery", "rho"]):
        marginal = weight.sum([j for j in range(3) if j != k])
        mean = (marginal * axes[k]).sum()
        sd = (marginal * (axes[k] - mean) ** 2).sum().sqrt()
        out[site] = (mean.reshape(1), sd.reshape(1))
    return out


GROWTH_GROUPS, GROWTH_TIMES = 6, 60


def growth_data():
    g = _data(11)
    t = torch.linspace(0.0, 10.0, GROWTH_TIMES)
    level = 2.0 + 0.5 * torch.randn(GROWTH_GROUPS, 1, generator=g)
    rate = 1.0 + 0.2 * torch.randn(GROWTH_GROUPS, 1, generator=g)
    curve = torch.exp(level) / (1 + torch.exp(-rate * (t - 5.0)))
    return (t, curve + 0.3 * torch.randn(GROWTH_GROUPS, GROWTH_TIMES, generator=g)), {}


def growth(t, y, subsample_size=20):
    """Logistic growth curves of several groups (nested plates, the time plate
    subsampled), with an overall level and group offsets of which only the sums are
    identified: the direction that moves the level one way and every offset the other
    is pinned by the priors alone (as in an over-parameterised growth model)."""
    base = pyro.sample("base", dist.Normal(0.0, 3.0))
    with pyro.plate("groups", GROWTH_GROUPS, dim=-2):
        offset = pyro.sample("offset", dist.Normal(0.0, 3.0))
        log_rate = pyro.sample("log_rate", dist.Normal(0.0, 1.0))
        with pyro.plate("time", GROWTH_TIMES, subsample_size=subsample_size, dim=-1) as i:
            curve = torch.exp(base + offset) / (1 + torch.exp(-log_rate.exp() * (t[i] - 5.0)))
            pyro.sample("obs", dist.Normal(curve, 0.3), obs=y[:, i])


MODELS = {
    "hier_logistic": (hier_logistic, hier_logistic_data),
    "eight_centred": (eight_centred, lambda: ((EIGHT_Y, EIGHT_SIGMA), {})),
    "eight_noncentred": (eight_noncentred, lambda: ((EIGHT_Y, EIGHT_SIGMA), {})),
    "banana": (banana, None),
    "ar_gaussian": (ar_gaussian, None),
    "gamma_normal": (gamma_normal, gamma_normal_data),
    "lkj": (lkj, lkj_data),
    "regression": (Regression, regression_data),
    "deterministic": (deterministic, deterministic_data),
    "baseball_pooled": (baseball_pooled, lambda: ((AT_BATS, BASEBALL_HITS), {})),
    "baseball_unpooled": (baseball_unpooled, lambda: ((AT_BATS, BASEBALL_HITS), {})),
    "baseball_partial": (baseball_partial, lambda: ((AT_BATS, BASEBALL_HITS), {})),
    "time_series": (time_series, time_series_data),
    "many_groups": (many_groups, many_groups_data),
    "survival": (survival, survival_data),
    "sir": (sir, sir_data),
    "growth": (growth, growth_data),
}
POTENTIALS = {"banana": (2, banana_exact), "ar_gaussian": (20, ar_exact)}
# Models whose reference is computed, not NUTS's: the potentials' and the SIR model's.
EXACT = {"sir": sir_exact, **{name: exact for name, (_, exact) in POTENTIALS.items()}}
# NUTS's settings where the defaults would take hours: the growth model's sums direction
# (a condition number near 1e5) needs a dense mass matrix, else every draw is a 1,023-step
# tree.
NUTS_OPTIONS = {"growth": {"full_mass": True}}


def moments(samples: dict) -> dict:
    """Per site: (mean, sd) over draws, float64."""
    out = {}
    for name, value in samples.items():
        if isinstance(value, tuple):
            out[name] = value
            continue
        value = value.double().reshape(value.shape[0], -1)
        out[name] = (value.mean(0), value.std(0))
    return out


def _load_references() -> dict:
    if not CACHE.exists():
        return {}
    stored = json.loads(CACHE.read_text())
    for entry in stored.values():
        entry["moments"] = {
            site: tuple(torch.tensor(v, dtype=torch.float64) for v in pair)
            for site, pair in entry["moments"].items()
        }
    return stored


def _save_references(cache: dict) -> None:
    stored = {
        name: {
            **entry,
            "moments": {
                site: [v.reshape(-1).tolist() for v in pair]
                for site, pair in entry["moments"].items()
            },
        }
        for name, entry in sorted(cache.items())
    }
    CACHE.write_text(json.dumps(stored, indent=1) + "\n")


def reference(name: str) -> dict:
    """The model's reference moments (NUTS's, or the exact ones), from the stored file
    when it has them, else run and stored."""
    cache = _load_references()
    if name in cache:
        return cache[name]
    if name in EXACT:
        result = {"moments": moments(EXACT[name]()), "divergences": 0, "seconds": 0.0}
    else:
        model, data = MODELS[name]
        model = model() if isinstance(model, type) else model
        args, kwargs = data()
        if "subsample_size" in inspect.signature(model).parameters:
            kwargs = {**kwargs, "subsample_size": None}  # NUTS: the full data
        pyro.set_rng_seed(0)
        start = time.perf_counter()
        nuts = NUTS(model, **NUTS_OPTIONS.get(name, {}))
        mcmc = MCMC(nuts, num_samples=1000, warmup_steps=500, disable_progbar=True)
        mcmc.run(*args, **kwargs)
        divergences = len(mcmc.diagnostics()["divergences"]["chain 0"])
        result = {
            "moments": moments(mcmc.get_samples()),
            "divergences": divergences,
            "seconds": time.perf_counter() - start,
        }
    cache[name] = result
    _save_references(cache)
    return _load_references()[name]  # as a later read gives it (flat, float64)


WARNING_KINDS = {
    "temperature": "not at the posterior's temperature",
    "runaway": "above the chain's typical level",
    "noise": "gradient's noise",
    "backoff": "became NaN or infinite",
    "start": "optimisation stage",
    "drift": "have not reached the posterior",
    "ess": "few effective draws",
    "region": "a region apart",
}


def run_defaults(name: str, kernel_class, seed: int, cycles: int, dump: Path | None = None) -> dict:
    model, data = MODELS[name]
    if name in POTENTIALS:
        kernel = kernel_class(potential_fn=model)
        kernel.initial_params = {"x": torch.zeros(POTENTIALS[name][0])}
        args, kwargs = (), {}
    else:
        kernel = kernel_class(model() if isinstance(model, type) else model)
        args, kwargs = data()
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc = MCMC(kernel, num_samples=4 * cycles, warmup_steps=0, disable_progbar=True)
        try:
            mcmc.run(*args, **kwargs)
            mcmc.diagnostics()
            error = None
        except Exception as exc:  # noqa: BLE001 - the outcome is what is measured
            error = f"{type(exc).__name__}: {str(exc)[:80]}"
    seconds = time.perf_counter() - start
    messages = [str(w.message) for w in caught if issubclass(w.category, SamplerWarning)]
    kinds = sorted({kind for kind, text in WARNING_KINDS.items() for m in messages if text in m})
    if error is not None:
        return {"verdict": "error", "error": error, "warnings": kinds, "seconds": seconds}
    samples = mcmc.get_samples()
    if name in POTENTIALS:
        samples = {"x": kernel.get_samples()["x"]}
    hyper = kernel.hyperparameters()
    if dump is not None:
        _dump(dump / f"{name}-{kernel_class.__name__}-{seed}.npz", mcmc, samples)
    # Where the noise-free exploration stopped, how many cycles skipped the stage, their stride.
    exploration = (
        hyper.get("noisy_exploration_from"),
        hyper.get("exploration_skipped_cycles"),
        hyper.get("sampling_stride"),
    )
    return {
        "samples": moments(samples),
        "warnings": kinds,
        "marked": hyper.get("sampler_warnings", ""),
        "seconds": seconds,
        "exploration": exploration,
    }


def _dump(path: Path, mcmc, samples: dict) -> None:
    """Save a run's draws, unconstrained and flattened (sites in name order), with each
    draw's cycle and potential, to study the checks on them without rerunning."""
    stats = mcmc._diagnostics[0]
    transforms = mcmc.transforms or {}
    flat = [
        transforms.get(site, lambda x: x)(samples[site]).reshape(len(samples[site]), -1)
        for site in sorted(samples)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        draws=torch.cat(flat, 1).double().numpy(),
        cycle=np.asarray(stats["cycle"]),
        potential=np.asarray(stats["potential_energy"]),
    )


def judge(result: dict, ref: dict) -> dict:
    if result.get("verdict") == "error":
        return result
    worst_error, low, high = 0.0, math.inf, 0.0
    for site, (mean, sd) in ref["moments"].items():
        got_mean, got_sd = result["samples"][site]
        sd, mean = sd.reshape(-1), mean.reshape(-1)
        varies = sd > 1e-6 * (1 + mean.abs())  # an LKJ factor's [0, 0] is always 1
        sd, mean, got_mean, got_sd = sd[varies], mean[varies], got_mean[varies], got_sd[varies]
        if not len(sd):
            continue
        worst_error = max(worst_error, float(((got_mean - mean).abs() / sd).max()))
        ratio = got_sd / sd
        low, high = min(low, float(ratio.min())), max(high, float(ratio.max()))
    right = worst_error <= 0.3 and 0.7 <= low and high <= 1.4
    # Warned: a warning fired and the run's results carry the mark (the InferenceData's
    # attrs["sampler_warnings"]), so a run in doubt cannot pass as a right one later.
    warned = bool(result["warnings"]) and bool(result.get("marked"))
    verdict = "right" if right else ("warned" if warned else "silent")
    return {**result, "verdict": verdict, "error_sd": worst_error, "sd_ratio": (low, high)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--kernels", nargs="*", default=["CyclicalSGHMC", "CyclicalSGLD"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument(
        "--dump", type=Path, help="save each run's unconstrained draws, cycles, potentials"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"pyro-csg {pyro_csg.__version__}, torch {torch.__version__}, pyro {pyro.__version__}, "
        f"{platform.machine()}, one thread; {args.cycles} cycles of the defaults"
    )
    counts: dict[str, int] = {}
    for name in args.models:
        ref = reference(name)
        nuts = f"NUTS {ref['seconds']:.1f} s, {ref['divergences']} divergences"
        print(f"\n{name} ({'exact' if name in EXACT else nuts})")
        for kernel_name in args.kernels:
            kernel_class = {"CyclicalSGHMC": CyclicalSGHMC, "CyclicalSGLD": CyclicalSGLD}[
                kernel_name
            ]
            for seed in range(args.seeds):
                outcome = judge(run_defaults(name, kernel_class, seed, args.cycles, args.dump), ref)
                counts[outcome["verdict"]] = counts.get(outcome["verdict"], 0) + 1
                detail = outcome.get("error") or (
                    f"max mean error {outcome['error_sd']:.2f} sd, sd ratios "
                    f"{outcome['sd_ratio'][0]:.2f}-{outcome['sd_ratio'][1]:.2f}"
                )
                switched, skipped, stride = outcome.get("exploration", (None, None, None))
                exploration = (
                    f"; exploration noise-free until cycle {switched[0]}, {skipped[0]} skipped"
                    if switched and switched[0] >= 0
                    else ""
                )
                if exploration and skipped[0]:
                    exploration += f" (sampling stride {stride[0]})"
                print(
                    f"  {kernel_name:14s} seed {seed}: {outcome['verdict']:6s} {detail}; "
                    f"warnings {outcome['warnings'] or '-'}; {outcome['seconds']:.1f} s"
                    f"{exploration}"
                )
    print("\n" + ", ".join(f"{verdict}: {n}" for verdict, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
