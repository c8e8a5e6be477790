"""A Bayesian neural network on scikit-learn's bundled digits, and the baselines users
compare it with.

The data: 1,797 handwritten digits as 8x8 images (64 pixel intensities, scaled to
[0, 1]), 10 classes, split once into 1,437 training and 360 test images.

The model, :class:`BayesianMLP`, is the usual Pyro BNN: a ``PyroModule`` MLP whose
weights and biases are ``PyroSample`` sites with ``N(0, prior_scale^2)`` priors, and a
data plate with ``subsample_size``. The baselines:

* SGHMC with a constant and with a decaying step (:func:`run_sghmc`), the same kernel
  as cSGHMC with another schedule;
* a MAP network trained with SGD (momentum and a cosine-annealed learning rate), whose
  weight decay is the same Gaussian prior: ``weight_decay = 1 / (N * prior_scale^2)``;
* MC dropout (Gal and Ghahramani, 2016): the same network trained with dropout, which
  stays on at test time; the prediction averages stochastic forward passes.

Learning rates are given as on a *mean* loss, as in deep-learning code; the kernels'
step size is ``lr / N`` and their ``friction`` is ``1 - momentum``.
"""

from __future__ import annotations

import functools
import inspect
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import MCMC
from pyro.infer.autoguide.initialization import init_to_uniform
from pyro.nn import PyroModule, PyroSample

from ..adapter.kernels import CyclicalSGHMC
from ..core.errors import SamplerWarning
from ..core.schedules import Constant, PolynomialDecay
from ._data import fixed_split, load_bundled

__all__ = [
    "load_digits_split",
    "BayesianMLP",
    "Budget",
    "SamplerRun",
    "run_csghmc",
    "run_sghmc",
    "predictive_probs",
    "train_sgd",
    "mc_dropout_probs",
    "MethodResult",
    "compare_methods",
    "score_table",
    "cycle_probs",
    "ensemble_curve",
]


def _one_thread(function):
    """Run ``function`` on one torch thread, restoring the setting afterwards.

    These networks are tiny (7,510 weights, batches of 64): torch's intra-op threads gain
    nothing on them, and on a machine whose cores are shared they wait on each other.
    Measured with the demo on 2 cores beside 3 busy processes: the digits part took 6 to
    11 times its unloaded time with torch's default 2 threads and about 2 times with one
    (the mixture part slowed about 2 times either way); unloaded, one thread is as fast.
    """

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return function(*args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return wrapped


def load_digits_split(
    seed: int = 0, test_size: int = 360
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x_train, y_train, x_test, y_test``: pixels scaled to [0, 1], labels as int64.

    The split is a fixed permutation drawn from ``seed``.

    Example::

        >>> from pyro_csg.examples.digits import load_digits_split
        >>> x_train, y_train, x_test, y_test = load_digits_split()
        >>> tuple(x_train.shape), tuple(x_test.shape)
        ((1437, 64), (360, 64))
    """
    images, labels = load_bundled("load_digits")
    x, y = images / 16.0, labels.long()
    train, test = fixed_split(len(y), test_size, seed)
    return x[train], y[train], x[test], y[test]


class BayesianMLP(PyroModule):
    """``logits = W2 relu(W1 x + b1) + b2`` with ``N(0, prior_scale^2)`` priors on every
    weight and bias, and ``y ~ Categorical(logits)`` in a (subsampled) data plate.

    The weights are read before the plate opens, so that Pyro samples them once per
    trace as global sites (first read inside the plate, a ``PyroSample`` would get the
    plate's batch dimension).

    Example::

        >>> import torch
        >>> from pyro_csg.examples.digits import BayesianMLP
        >>> net = BayesianMLP(in_features=4, hidden=3, classes=2)
        >>> net(torch.randn(5, 4)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self, in_features: int = 64, hidden: int = 100, classes: int = 10, prior_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.fc1 = PyroModule[torch.nn.Linear](in_features, hidden)
        self.fc2 = PyroModule[torch.nn.Linear](hidden, classes)
        for layer in (self.fc1, self.fc2):
            layer.weight = PyroSample(
                dist.Normal(0.0, prior_scale).expand(layer.weight.shape).to_event(2)
            )
            layer.bias = PyroSample(
                dist.Normal(0.0, prior_scale).expand(layer.bias.shape).to_event(1)
            )

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, subsample_size: int | None = None
    ) -> torch.Tensor:
        w1, b1, w2, b2 = self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
            logits = torch.relu(x[idx] @ w1.T + b1) @ w2.T + b2
            pyro.sample("obs", dist.Categorical(logits=logits), obs=None if y is None else y[idx])
        return logits


@dataclass(frozen=True)
class Budget:
    """The training budget every method gets: ``num_cycles * epochs_per_cycle`` epochs of
    minibatches of ``batch_size`` (``N // batch_size`` steps an epoch).

    Example::

        >>> from pyro_csg.examples.digits import Budget
        >>> budget = Budget(num_cycles=12, epochs_per_cycle=50, batch_size=64)
        >>> budget.epochs, budget.steps_per_cycle(1437)
        (600, 1100)
    """

    num_cycles: int = 12
    epochs_per_cycle: int = 50
    batch_size: int = 64
    samples_per_cycle: int = 4

    @property
    def epochs(self) -> int:
        return self.num_cycles * self.epochs_per_cycle

    def steps_per_cycle(self, n: int) -> int:
        return self.epochs_per_cycle * (n // self.batch_size)


@dataclass
class SamplerRun:
    """A run of a kernel on :class:`BayesianMLP`: the MCMC object and its wall time.

    Example::

        >>> from pyro_csg.examples.digits import Budget, load_digits_split, run_csghmc
        >>> x, y, _, _ = load_digits_split()
        >>> run = run_csghmc(x, y, Budget(num_cycles=1, epochs_per_cycle=1, samples_per_cycle=2))
        >>> run.name, run.seconds > 0
        ('cSGHMC', True)
    """

    name: str
    mcmc: MCMC
    seconds: float
    model: BayesianMLP = field(repr=False)
    # What the kernel's warnings said of the draws (its hyperparameters' mark, e.g.
    # "temperature, drift"; "" when none fired): the warnings themselves are not
    # printed, a comparison table shows this instead.
    warned: str = ""


@_one_thread
def _run_sghmc_kernel(
    name,
    x,
    y,
    budget,
    model,
    momentum,
    temperature,
    init_radius,
    warmup_steps,
    seed,
    progress,
    **schedule,
) -> SamplerRun:
    """The shared part of :func:`run_csghmc` and :func:`run_sghmc`; ``schedule`` holds the
    kernel's step-size arguments (``step_size`` or ``schedule``, ``exploration_fraction``)."""
    model = BayesianMLP() if model is None else model
    kernel = CyclicalSGHMC(
        model,
        steps_per_cycle=budget.steps_per_cycle(len(y)),
        samples_per_cycle=budget.samples_per_cycle,
        friction=1.0 - momentum,
        temperature=temperature,
        init_strategy=init_to_uniform(radius=init_radius),
        **schedule,
    )
    pyro.set_rng_seed(seed)
    mcmc = MCMC(
        kernel,
        num_samples=budget.num_cycles * budget.samples_per_cycle - warmup_steps,
        warmup_steps=warmup_steps,
        disable_progbar=not progress,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplerWarning)  # kept as the run's mark instead
        mcmc.run(x, y, subsample_size=budget.batch_size)
    seconds = time.perf_counter() - start
    mark = kernel.hyperparameters().get("sampler_warnings", "")
    warned = ", ".join(part.split(": ", 1)[1] for part in mark.split("; ") if ": " in part)
    return SamplerRun(name, mcmc, seconds, model, warned)


def run_csghmc(
    x: torch.Tensor,
    y: torch.Tensor,
    budget: Budget = Budget(),
    lr: float = 0.1,
    momentum: float = 0.9,
    exploration_fraction: float = 0.5,
    temperature: float = 1.0,
    init_radius: float = 0.1,
    seed: int = 0,
    progress: bool = False,
    model: BayesianMLP | None = None,
    control_variates: bool | None = None,
) -> SamplerRun:
    """cSGHMC on :class:`BayesianMLP`: ``budget.num_cycles`` cosine cycles with peak
    learning rate ``lr`` (step size ``lr / N``), friction ``1 - momentum``;
    ``control_variates`` as the kernel's (``None``: its default, chosen by the measured noise;
    off for this network).

    Example::

        >>> from pyro_csg.examples.digits import Budget, load_digits_split, run_csghmc
        >>> x, y, _, _ = load_digits_split()
        >>> run = run_csghmc(x, y, Budget(num_cycles=2, epochs_per_cycle=1, samples_per_cycle=2))
        >>> run.mcmc.get_samples()["fc1.weight"].shape
        torch.Size([4, 100, 64])
    """
    return _run_sghmc_kernel(
        "cSGHMC",
        x,
        y,
        budget,
        model,
        momentum,
        temperature,
        init_radius,
        0,
        seed,
        progress,
        step_size=lr / len(y),
        exploration_fraction=exploration_fraction,
        control_variates=control_variates,
    )


def run_sghmc(
    x: torch.Tensor,
    y: torch.Tensor,
    budget: Budget = Budget(),
    lr: float = 0.1,
    momentum: float = 0.9,
    decay: bool = False,
    temperature: float = 1.0,
    init_radius: float = 0.1,
    seed: int = 0,
    progress: bool = False,
    model: BayesianMLP | None = None,
) -> SamplerRun:
    """Plain SGHMC (noise on throughout), on the same budget as :func:`run_csghmc`.

    The step is constant at ``lr / (2 N)`` (the cosine schedule's average), or with
    ``decay=True`` decays as ``a * (b + k) ** -0.55`` from ``lr / N`` (the cosine
    schedule's peak) to ``lr / (10 N)`` at the last step. The first block of
    ``epochs_per_cycle`` epochs is burn-in; the draws are evenly spaced after it, as many
    per block as cSGHMC keeps per cycle.

    Example::

        >>> from pyro_csg.examples.digits import Budget, load_digits_split, run_sghmc
        >>> x, y, _, _ = load_digits_split()
        >>> budget = Budget(num_cycles=2, epochs_per_cycle=1, samples_per_cycle=2)
        >>> run_sghmc(x, y, budget, decay=True).mcmc.get_samples()["fc2.bias"].shape
        torch.Size([2, 10])
    """
    n = len(y)
    if decay:
        # a * (b + 1)^-g = lr / n and a * (b + K)^-g = lr / (10 n), with K the last step.
        last, gamma = budget.num_cycles * budget.steps_per_cycle(n), 0.55
        ratio = 10.0 ** (1.0 / gamma)
        b = max((last - ratio) / (ratio - 1.0), 0.0)
        schedule = PolynomialDecay(a=(lr / n) * (b + 1.0) ** gamma, b=b, gamma=gamma)
        name = "SGHMC (decaying step)"
    else:
        schedule = Constant(lr / (2 * n))
        name = "SGHMC (constant step)"
    warmup = budget.samples_per_cycle if budget.num_cycles > 1 else 0
    return _run_sghmc_kernel(
        name,
        x,
        y,
        budget,
        model,
        momentum,
        temperature,
        init_radius,
        warmup,
        seed,
        progress,
        schedule=schedule,
        exploration_fraction=0.0,
    )


@torch.no_grad()
@_one_thread
def predictive_probs(
    model: BayesianMLP, samples: dict[str, torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """Class probabilities of every posterior draw on ``x``: shape ``(draws, n, C)``.

    Example::

        >>> import torch
        >>> from pyro_csg.examples.digits import BayesianMLP, predictive_probs
        >>> net = BayesianMLP(in_features=4, hidden=3, classes=2)
        >>> samples = {"fc1.weight": torch.zeros(5, 3, 4), "fc1.bias": torch.zeros(5, 3),
        ...            "fc2.weight": torch.zeros(5, 2, 3), "fc2.bias": torch.zeros(5, 2)}
        >>> predictive_probs(net, samples, torch.randn(7, 4))[0, 0]
        tensor([0.5000, 0.5000])
    """
    draws = len(next(iter(samples.values())))
    probs = []
    for i in range(draws):
        conditioned = poutine.condition(model, {name: value[i] for name, value in samples.items()})
        probs.append(torch.softmax(conditioned(x), -1))
    return torch.stack(probs)


class _MLP(torch.nn.Module):
    def __init__(self, in_features: int, hidden: int, classes: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(in_features, hidden)
        self.fc2 = torch.nn.Linear(hidden, classes)
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))


@_one_thread
def train_sgd(
    x: torch.Tensor,
    y: torch.Tensor,
    budget: Budget = Budget(),
    lr: float = 0.1,
    momentum: float = 0.9,
    prior_scale: float = 1.0,
    dropout: float = 0.0,
    hidden: int = 100,
    seed: int = 0,
) -> torch.nn.Module:
    """SGD with momentum on the mean cross-entropy plus the prior as weight decay
    (``1 / (N * prior_scale^2)``), the learning rate annealed from ``lr`` to 0 by a cosine
    over ``budget.epochs`` epochs: the MAP network (``dropout=0``) or, with dropout, the
    network for :func:`mc_dropout_probs`. Returns the network in eval mode.

    Example::

        >>> from pyro_csg.examples.digits import Budget, load_digits_split, train_sgd
        >>> x, y, x_test, y_test = load_digits_split()
        >>> net = train_sgd(x, y, Budget(num_cycles=1, epochs_per_cycle=20))
        >>> bool((net(x_test).argmax(-1) == y_test).float().mean() > 0.9)
        True
    """
    torch.manual_seed(seed)
    n = len(y)
    net = _MLP(x.shape[1], hidden, int(y.max()) + 1, dropout).to(x.device)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=1.0 / (n * prior_scale**2)
    )
    steps_per_epoch = n // budget.batch_size
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, budget.epochs * steps_per_epoch
    )
    net.train()
    for _ in range(budget.epochs):
        order = torch.randperm(n, device=x.device)
        for step in range(steps_per_epoch):
            batch = order[step * budget.batch_size : (step + 1) * budget.batch_size]
            loss = torch.nn.functional.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    return net.eval()


@torch.no_grad()
@_one_thread
def mc_dropout_probs(net: torch.nn.Module, x: torch.Tensor, passes: int = 100) -> torch.Tensor:
    """MC dropout: ``passes`` forward passes with dropout on; shape ``(passes, n, C)``.

    Example::

        >>> import torch
        >>> from pyro_csg.examples.digits import mc_dropout_probs, train_sgd, Budget
        >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> net = train_sgd(x, y, Budget(num_cycles=1, epochs_per_cycle=1), dropout=0.5)
        >>> mc_dropout_probs(net, x, passes=5).shape
        torch.Size([5, 64, 3])
    """
    was_training = net.training
    net.train()  # dropout on
    try:
        return torch.stack([torch.softmax(net(x), -1) for _ in range(passes)])
    finally:
        net.train(was_training)


@dataclass
class MethodResult:
    """A method's predictive draws on the test set, ``(members, n, C)``, and its time.

    ``members`` are posterior draws (in cycle order for the samplers), MC dropout's
    forward passes, or the one MAP network.

    Example::

        >>> import torch
        >>> from pyro_csg.examples.digits import MethodResult
        >>> MethodResult("uniform guess", torch.full((1, 5, 10), 0.1), 0.0).probs.shape
        torch.Size([1, 5, 10])
    """

    name: str
    probs: torch.Tensor
    seconds: float
    run: SamplerRun | None = field(default=None, repr=False)


def compare_methods(
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    budget: Budget = Budget(),
    seed: int = 0,
    lr: float = 0.5,
    exploration_fraction: float = 0.9,
    temperature: float = 0.01,
    sgd_lr: float = 0.3,
    dropout: float = 0.2,
    include_posterior: bool = True,
    progress: bool = False,
) -> dict[str, MethodResult]:
    """Every method on the same budget and seed; returns ``{name: MethodResult}``.

    The defaults were chosen on a validation split (the last 300 training images), never
    on the test set: the samplers share ``lr`` (peak learning rate on the mean loss),
    momentum 0.9 and ``temperature``; cSGHMC spends ``exploration_fraction`` of each
    cycle exploring, as the paper's 45 of 50 epochs. With ``include_posterior``, cSGHMC
    also runs at temperature 1 (the untempered posterior).

    Example::

        >>> from pyro_csg.examples.digits import Budget, compare_methods, load_digits_split
        >>> x, y, x_test, y_test = load_digits_split()
        >>> tiny = Budget(num_cycles=2, epochs_per_cycle=1, samples_per_cycle=2)
        >>> results = compare_methods(x, y, x_test, y_test, tiny, include_posterior=False)
        >>> for name, result in results.items():
        ...     print(f"{name}: {tuple(result.probs.shape)}")
        cSGHMC: (4, 360, 10)
        SGHMC (constant step): (2, 360, 10)
        SGHMC (decaying step): (2, 360, 10)
        SGD (MAP): (1, 360, 10)
        MC dropout: (100, 360, 10)
    """
    results: dict[str, MethodResult] = {}

    def sampled(run: SamplerRun, name: str | None = None) -> None:
        start = time.perf_counter()
        probs = predictive_probs(run.model, run.mcmc.get_samples(), x_test)
        seconds = run.seconds + time.perf_counter() - start
        results[name or run.name] = MethodResult(name or run.name, probs, seconds, run)

    common = {"budget": budget, "lr": lr, "seed": seed, "progress": progress}
    sampled(
        run_csghmc(
            x, y, exploration_fraction=exploration_fraction, temperature=temperature, **common
        )
    )
    if include_posterior:
        run = run_csghmc(x, y, exploration_fraction=exploration_fraction, **common)
        sampled(run, "cSGHMC, T = 1")
    for decay in (False, True):
        sampled(run_sghmc(x, y, decay=decay, temperature=temperature, **common))
    start = time.perf_counter()
    net = train_sgd(x, y, budget, lr=sgd_lr, seed=seed)
    with torch.no_grad():
        probs = torch.softmax(net(x_test), -1).unsqueeze(0)
    results["SGD (MAP)"] = MethodResult("SGD (MAP)", probs, time.perf_counter() - start)
    start = time.perf_counter()
    net = train_sgd(x, y, budget, lr=sgd_lr, dropout=dropout, seed=seed)
    probs = mc_dropout_probs(net, x_test)
    results["MC dropout"] = MethodResult("MC dropout", probs, time.perf_counter() - start)
    return results


def compare_control_variates(
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor,
    budget: Budget = Budget(),
    seed: int = 0,
    lr: float = 0.5,
    exploration_fraction: float = 0.9,
    temperature: float = 0.01,
) -> dict[str, MethodResult]:
    """cSGHMC as :func:`compare_methods` runs it, with ``control_variates=True`` and with
    ``False`` (the same seed), each timed from the call to its test predictions; also
    the kernel's default (``None``), which chooses from the measured minibatch noise.
    Returns ``{"control_variates=True": ..., "control_variates=False": ...,
    "default (chose ...)": ...}``.

    Example::

        >>> from pyro_csg.examples.digits import Budget, compare_control_variates
        >>> from pyro_csg.examples.digits import load_digits_split
        >>> x, y, x_test, _ = load_digits_split()
        >>> tiny = Budget(num_cycles=1, epochs_per_cycle=2, samples_per_cycle=2)
        >>> list(compare_control_variates(x, y, x_test, tiny))
        ['control_variates=True', 'control_variates=False', 'default (chose False)']
    """
    results: dict[str, MethodResult] = {}
    for flag in (True, False, None):
        start = time.perf_counter()
        run = run_csghmc(
            x,
            y,
            budget,
            lr=lr,
            exploration_fraction=exploration_fraction,
            temperature=temperature,
            seed=seed,
            control_variates=flag,
        )
        probs = predictive_probs(run.model, run.mcmc.get_samples(), x_test)
        seconds = time.perf_counter() - start
        if flag is None:
            used = run.mcmc.kernel.hyperparameters()["control_variates_used"] == [1]
            name = f"default (chose {used})"
        else:
            name = f"control_variates={flag}"
        results[name] = MethodResult(name, probs, seconds, run)
    return results


def score_table(results: dict[str, MethodResult], y_test: torch.Tensor) -> Any:
    """A pandas DataFrame indexed by method: test accuracy, NLL and ECE of each method's
    averaged prediction, its number of members, seconds (training and prediction) and,
    for the samplers, what the kernel's warnings said of the draws (``SamplerRun.warned``).

    Example::

        >>> import torch
        >>> from pyro_csg.examples.digits import MethodResult, score_table
        >>> probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8]]])
        >>> score_table({"a": MethodResult("a", probs, 1.0)}, torch.tensor([0, 1]))["accuracy"]
        method
        a    1.0
        Name: accuracy, dtype: float64
    """
    import pandas as pd

    from .metrics import accuracy, expected_calibration_error, negative_log_likelihood

    rows = []
    for name, result in results.items():
        mean = result.probs.mean(0)
        rows.append(
            {
                "method": name,
                "accuracy": accuracy(mean, y_test),
                "NLL": negative_log_likelihood(mean, y_test),
                "ECE": expected_calibration_error(mean, y_test),
                "members": len(result.probs),
                "seconds": round(result.seconds, 1),
                "warnings": "" if result.run is None else result.run.warned,
            }
        )
    return pd.DataFrame(rows).set_index("method")


def cycle_probs(probs: torch.Tensor, num_cycles: int) -> torch.Tensor:
    """Average the draws of each cycle (or block): ``(draws, n, C) -> (num_cycles, n, C)``,
    the draws being in cycle order with the same number per cycle.

    Example::

        >>> import torch
        >>> from pyro_csg.examples.digits import cycle_probs
        >>> cycle_probs(torch.ones(8, 5, 3), num_cycles=4).shape
        torch.Size([4, 5, 3])
    """
    if len(probs) % num_cycles:
        raise ValueError(f"{len(probs)} draws cannot be split into {num_cycles} equal cycles")
    return probs.reshape(num_cycles, -1, *probs.shape[1:]).mean(1)


def ensemble_against_map(
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    budget: Budget,
    seeds: list[int],
    progress: bool = False,
    done: dict[str, MethodResult] | None = None,
) -> Any:
    """The demo's figure over seeds: per seed, the test NLL of cSGHMC's ensemble of its
    first ``k`` cycles and of the SGD (MAP) network, with :func:`compare_methods`'s
    settings. ``done``: :func:`compare_methods`'s results for ``seeds[0]``, reused rather
    than run again. A pandas DataFrame with the columns ``seed``, ``cycles`` and ``NLL``
    (the MAP network's rows have ``cycles = 0``).

    Example::

        >>> from pyro_csg.examples.digits import Budget, ensemble_against_map, load_digits_split
        >>> x, y, x_test, y_test = load_digits_split()
        >>> tiny = Budget(num_cycles=2, epochs_per_cycle=1, samples_per_cycle=2)
        >>> table = ensemble_against_map(x, y, x_test, y_test, tiny, seeds=[0, 1])
        >>> table.groupby("seed")["cycles"].apply(list).tolist()
        [[1, 2, 0], [1, 2, 0]]
    """
    import pandas as pd

    from .metrics import negative_log_likelihood

    defaults = inspect.signature(compare_methods).parameters
    names = ("lr", "exploration_fraction", "temperature")
    setting = {name: defaults[name].default for name in names}  # as compare_methods runs it
    rows = []
    for seed in seeds:
        if done is not None and seed == seeds[0]:
            probs, map_probs = done["cSGHMC"].probs, done["SGD (MAP)"].probs[0]
        else:
            run = run_csghmc(x, y, budget, seed=seed, progress=progress, **setting)
            probs = predictive_probs(run.model, run.mcmc.get_samples(), x_test)
            net = train_sgd(x, y, budget, lr=defaults["sgd_lr"].default, seed=seed)
            with torch.no_grad():
                map_probs = torch.softmax(net(x_test), -1)
        curve = ensemble_curve(probs, budget.num_cycles, y_test)
        for cycles, nll in zip(curve.index, curve["NLL"], strict=True):
            rows.append({"seed": seed, "cycles": cycles, "NLL": nll})
        rows.append({"seed": seed, "cycles": 0, "NLL": negative_log_likelihood(map_probs, y_test)})
    return pd.DataFrame(rows)


def ensemble_curve(probs: torch.Tensor, num_cycles: int, y_test: torch.Tensor) -> Any:
    """Test accuracy and NLL of the ensemble of the first ``k`` cycles, ``k = 1, ...``:
    a pandas DataFrame indexed by ``cycles``.

    Example::

        >>> import torch
        >>> from pyro_csg.examples.digits import ensemble_curve
        >>> probs = torch.tensor([[[0.6, 0.4]], [[0.2, 0.8]]])
        >>> ensemble_curve(probs, 2, torch.tensor([1]))["accuracy"].tolist()
        [0.0, 1.0]
    """
    import pandas as pd

    from .metrics import accuracy, negative_log_likelihood

    per_cycle = cycle_probs(probs, num_cycles)
    running = per_cycle.cumsum(0) / torch.arange(1, num_cycles + 1).reshape(-1, 1, 1)
    return pd.DataFrame(
        {
            "cycles": range(1, num_cycles + 1),
            "accuracy": [accuracy(p, y_test) for p in running],
            "NLL": [negative_log_likelihood(p, y_test) for p in running],
        }
    ).set_index("cycles")
