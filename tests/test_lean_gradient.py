"""The gradient alone between checks (``pyro_csg.adapter.graph.lean``): the same draws,
the same failures caught, and only for potentials that cannot turn infinite unseen.

Most iterations need ``grad U~`` only; ``U~`` is checked every ``CHECK_EVERY``
iterations and kept at each draw. Where every op of the traced graph is finite wherever
its inputs are, the sampler runs the graph without the potential's own ops in between.
"""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC
from pyro.infer.autoguide.initialization import init_to_median

from pyro_csg import CyclicalSGHMC, CyclicalSGLD, NonFiniteError
from pyro_csg.adapter import graph as graphs
from pyro_csg.adapter.potential import ModelPotential

N = 2_000
GENERATOR = torch.Generator().manual_seed(3)
X = torch.randn(N, 3, generator=GENERATOR)
Y = torch.bernoulli(torch.sigmoid(X @ torch.tensor([1.0, -0.5, 0.25]) - 0.3), generator=GENERATOR)


def logistic(x, y, batch=50):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 2.0))
    with pyro.plate("data", x.shape[0], subsample_size=batch) as idx:
        pyro.sample("y", dist.Bernoulli(logits=x[idx] @ w + b), obs=y[idx])


def banana():
    """The 2-D banana of issue 21 as a model: the automatic step blows up on it."""
    x = pyro.sample("x", dist.Normal(0.0, 100.0).expand([2]).to_event(1))
    pyro.factor("banana", -(x[0] ** 2 / 8 + 2 * (x[1] - x[0] ** 2 / 2 + 1) ** 2))


def bounded(y):
    s = pyro.sample("s", dist.Uniform(0.0, 5.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(0.0, s), obs=y)


def gamma_scale(y):
    s = pyro.sample("s", dist.Gamma(2.0, 2.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(0.0, s), obs=y)


def compiled(model, *args):
    potential = ModelPotential(model, args, {}, init_to_median)
    assert potential.compile(potential.initial_theta()) is None
    return potential


def run(kernel, *args, samples=80, seed=0, lean=True, monkeypatch=None):
    calls = []
    if not lean:
        monkeypatch.setattr(graphs, "lean", lambda graph, finite=(): None)
    original = ModelPotential.lean_value_and_grad

    def counted(self, flat, indices=()):
        calls.append(1)
        return original(self, flat, indices)

    monkeypatch.setattr(ModelPotential, "lean_value_and_grad", counted)
    pyro.set_rng_seed(seed)
    mcmc = MCMC(kernel, num_samples=samples, warmup_steps=0, disable_progbar=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc.run(*args)
    monkeypatch.undo()
    return mcmc, len(calls)


@pytest.mark.parametrize("kernel_class", [CyclicalSGHMC, CyclicalSGLD])
@pytest.mark.parametrize("control_variates", [True, False])
def test_the_gradient_alone_gives_the_same_draws(kernel_class, control_variates, monkeypatch):
    def make():
        return kernel_class(logistic, steps_per_cycle=200, control_variates=control_variates)

    fast, calls = run(make(), X, Y, monkeypatch=monkeypatch)
    full, none = run(make(), X, Y, lean=False, monkeypatch=monkeypatch)
    # Control variates call the paired graph, not lean_value_and_grad, in the chain.
    assert none == 0 and (calls > 1000 or control_variates)
    for site, draws in full.get_samples().items():
        assert torch.equal(fast.get_samples()[site], draws), site
    for name in ("potential_energy", "step_size"):  # U~ at every draw, as it was
        kept = fast._diagnostics[0][name]
        assert len(kept) == 80 and kept == full._diagnostics[0][name], name


def test_a_blow_up_between_checks_backs_off_as_with_every_potential(monkeypatch):
    def make():
        return CyclicalSGHMC(banana, steps_per_cycle=300)

    fast, calls = run(make(), samples=60, monkeypatch=monkeypatch)
    full, _ = run(make(), samples=60, lean=False, monkeypatch=monkeypatch)
    assert calls > 1000
    assert fast.kernel.hyperparameters()["backoffs"][0] > 0
    assert torch.equal(fast.get_samples()["x"], full.get_samples()["x"])


def test_a_users_step_that_blows_up_still_raises(monkeypatch):
    kernel = CyclicalSGLD(logistic, step_size=50.0, steps_per_cycle=400)
    with pytest.raises(NonFiniteError):
        run(kernel, X, Y, monkeypatch=monkeypatch)
    assert len(kernel.get_samples()["w"]) < 80


def test_only_potentials_finite_wherever_the_iterate_is_go_lean():
    y = torch.randn(20, generator=torch.Generator().manual_seed(0))
    potential = compiled(logistic, X, Y)
    assert potential.lean
    assert graphs.count_ops(potential._lean_graph) < 0.7 * graphs.count_ops(potential._graph)
    assert compiled(banana).lean
    # Uniform's support edge (comparisons, the log of a mask) and Gamma's logarithms can
    # make U~ infinite or NaN where the gradient is finite: U~ at every step.
    assert not compiled(bounded, y).lean
    assert not compiled(gamma_scale, y).lean


def test_the_data_checked_at_the_start_are_not_read_again_for_the_lean_graph(monkeypatch):
    reads = []
    original = torch.isfinite

    def counted(value):
        reads.append(value.numel())
        return original(value)

    potential = ModelPotential(logistic, (X, Y), {}, init_to_median)
    monkeypatch.setattr(torch, "isfinite", counted)
    assert potential.compile(potential.initial_theta()) is None
    assert potential.lean
    assert X.numel() not in reads and N not in reads  # x and y: checked at __init__
    # A constant that is not the data is still read: NaN in it keeps U~ at every step.
    graph = graphs.trace(lambda t: ((t * X[0]).sum(), X[0].clone()), torch.ones(3))
    assert graphs.lean(graph, finite=[X]) is not None
    poisoned = X[0].clone()
    poisoned[1] = float("nan")
    graph = graphs.trace(lambda t: ((t * poisoned).sum(), poisoned.clone()), torch.ones(3))
    assert graphs.lean(graph, finite=[X]) is None
