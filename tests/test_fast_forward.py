"""The traced graphs run by TorchScript's interpreter (``pyro_csg.adapter.graph.fast_forward``):
the same draws bit for bit as the direct forward, and the direct forward wherever
TorchScript fails or disagrees."""

import functools
import pickle
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from models import logistic_regression, logistic_regression_data
from pyro.infer import MCMC
from pyro.infer.autoguide.initialization import init_to_median

from pyro_csg import CyclicalSGHMC, CyclicalSGLD
from pyro_csg.adapter import graph as graphs
from pyro_csg.adapter.potential import ModelPotential

X, Y = logistic_regression_data(n=2_000, d=3, seed=5)


def logistic(x, y, batch=50):
    logistic_regression(x, y, subsample_size=batch)


def scale_model(y):  # not lean (a logarithm of a parameter): U~ at every step
    s = pyro.sample("s", dist.Gamma(2.0, 2.0))
    with pyro.plate("data", len(y), subsample_size=10) as idx:
        pyro.sample("y", dist.Normal(0.0, s), obs=y[idx])


def direct_only(graph, *example):
    return graphs.direct_forward(graph)


def draws(kernel, *args, samples=60):
    pyro.set_rng_seed(0)
    mcmc = MCMC(kernel, num_samples=samples, warmup_steps=0, disable_progbar=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc.run(*args)
    return mcmc.get_samples()


@pytest.mark.parametrize(
    "make, args",
    [
        (lambda: CyclicalSGHMC(logistic, steps_per_cycle=200), (X, Y)),
        (lambda: CyclicalSGLD(logistic, steps_per_cycle=200, control_variates=False), (X, Y)),
        (lambda: CyclicalSGHMC(scale_model, steps_per_cycle=200), (X[:, 0] * 2,)),
    ],
    ids=["cSGHMC-automatic", "cSGLD-plain", "not-lean"],
)
def test_the_interpreter_gives_the_same_draws(make, args, monkeypatch):
    fast = draws(make(), *args)
    monkeypatch.setattr(graphs, "fast_forward", direct_only)
    direct = draws(make(), *args)
    for site, values in direct.items():
        assert torch.equal(fast[site], values), site


def test_a_compiled_potential_runs_its_graphs_in_the_interpreter_and_still_pickles():
    potential = ModelPotential(logistic, (X, Y), {}, init_to_median)
    theta = potential.initial_theta()
    assert potential.compile(theta) is None
    assert isinstance(potential._forward, torch.ScriptMethod)
    assert isinstance(potential._lean, torch.ScriptMethod)
    indices = [torch.arange(50)]
    (_, grad), (_, other) = potential.paired_value_and_grad(theta, theta + 0.1, indices)
    assert isinstance(potential._paired, torch.ScriptMethod)
    # The pair is the graph vmapped (batched matrix products): equal up to rounding.
    assert torch.allclose(grad, potential.value_and_grad(theta, indices)[1], rtol=1e-5)
    assert torch.allclose(other, potential.value_and_grad(theta + 0.1, indices)[1], rtol=1e-5)
    copy = pickle.loads(pickle.dumps(potential))  # the graphs are dropped, and rebuilt
    assert copy._forward is None and not copy.compiled


def test_where_torchscript_fails_or_disagrees_the_direct_forward_runs(monkeypatch):
    graph = graphs.trace(lambda t: ((t**2).sum() / 2, t * 1.0), torch.ones(3))
    example = torch.tensor([0.5, -1.0, 2.0])
    assert isinstance(graphs.fast_forward(graph, example), torch.ScriptMethod)

    def fails(*args, **kwargs):
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(torch.jit, "trace", fails)
    forward = graphs.fast_forward(graph, example)
    assert isinstance(forward, functools.partial)  # the direct forward
    assert torch.equal(forward(example)[1], example)

    def off_by_one_ulp(module, example_inputs, **kwargs):
        return lambda t: tuple(value.nextafter(value + 1) for value in module(t))

    monkeypatch.setattr(torch.jit, "trace", off_by_one_ulp)
    assert isinstance(graphs.fast_forward(graph, example), functools.partial)


def test_a_graph_on_another_device_keeps_the_direct_forward():
    graph = graphs.trace(lambda t: ((t**2).sum() / 2, t * 1.0), torch.ones(3))
    meta = torch.ones(3, device="meta")
    assert isinstance(graphs.fast_forward(graph, meta), functools.partial)


def test_calls_record_no_gradient_even_where_the_data_want_one():
    # The graphs' calls skip torch.no_grad() (8 µs) where nothing would record; data made
    # with requires_grad are constants of the graph that would: there it is kept.
    def compiled(x):
        potential = ModelPotential(logistic, (x, Y), {}, init_to_median)
        theta = potential.initial_theta()
        assert potential.compile(theta) is None
        return potential, theta

    for x, records in ((X, False), (X.clone().requires_grad_(), True)):
        potential, theta = compiled(x)
        assert potential._records is records
        other, indices = theta + 0.1, [torch.arange(50)]
        results = [
            *potential.local_value_and_grad(theta, indices),
            *[t for pair in potential.paired_value_and_grad(theta, other, indices) for t in pair],
        ]
        if potential.lean:
            results.append(potential.lean_value_and_grad(theta, indices)[1])
            results += [g for _, g in potential.paired_lean_value_and_grad(theta, other, indices)]
        assert not any(t.requires_grad for t in results)
    # A point that wants a gradient gets none from the graph either.
    energy, grad = potential.local_value_and_grad(theta.clone().requires_grad_(), indices)
    assert not energy.requires_grad and not grad.requires_grad
