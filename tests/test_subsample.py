import pyro
import pyro.distributions as dist
import pytest
import torch
from models import linear_regression, linear_regression_data
from pyro.infer.autoguide.initialization import init_to_sample

from pyro_csg.adapter.potential import ModelPotential
from pyro_csg.core.subsample import EpochBatches, SubsamplePlate


def test_every_index_appears_exactly_once_per_epoch():
    torch.manual_seed(0)
    batches = EpochBatches(SubsamplePlate("data", 1000, 50, "cpu"))
    for epoch in range(3):
        seen = torch.cat([batches.next() for _ in range(20)])
        assert batches.epoch == epoch
        assert sorted(seen.tolist()) == list(range(1000))
    # A new epoch is a new permutation.
    first, second = batches.next(), batches.next()
    assert not torch.equal(first, second)


def test_batches_are_never_short_when_b_does_not_divide_n():
    torch.manual_seed(0)
    batches = EpochBatches(SubsamplePlate("data", 103, 10, "cpu"))
    for _ in range(4):
        epoch = [batches.next() for _ in range(10)]
        assert all(len(b) == 10 for b in epoch)
        seen = torch.cat(epoch).tolist()
        assert len(set(seen)) == 100  # no datum twice within an epoch


def _potential(model, args, kwargs):
    return ModelPotential(model, args, kwargs, init_to_sample)


def _epoch_average(potential, theta, steps):
    batches = [EpochBatches(plate) for plate in potential.plates]
    energies = [potential(theta, [b.next() for b in batches]) for _ in range(steps)]
    return torch.stack(energies).mean()


def test_epoch_average_of_the_minibatch_potential_is_the_full_potential():
    x, y = linear_regression_data(n=1000, d=3)
    minibatch = _potential(linear_regression, (x, y), {"subsample_size": 50})
    full = _potential(linear_regression, (x, y), {"subsample_size": None})
    assert [p.name for p in minibatch.plates] == ["data"] and full.plates == ()
    torch.manual_seed(1)
    for _ in range(3):
        theta = torch.randn(3)
        expected = full(theta)
        assert _epoch_average(minibatch, theta, 20) == pytest.approx(float(expected), rel=1e-5)
        single = minibatch(theta, [torch.arange(50)])
        assert abs(float(single - expected)) > 1e-3 * abs(float(expected))  # one batch is noisy


def two_datasets(xa, xb, subsample=(30, 40)):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    scale = pyro.sample("scale", dist.HalfNormal(2.0))
    with pyro.plate("a", xa.shape[0], subsample_size=subsample[0]) as i:
        pyro.sample("obs_a", dist.Normal(mu, scale), obs=xa[i])
    with pyro.plate("b", xb.shape[0], subsample_size=subsample[1]) as j:
        pyro.sample("obs_b", dist.Normal(-mu, scale), obs=xb[j])


def grouped(y, subsample_size=None):
    # A subsampled data plate nested inside a (full) group plate.
    loc = pyro.sample("loc", dist.Normal(torch.zeros(3, 1), 1.0).to_event(2))
    with pyro.plate("groups", y.shape[0], dim=-2):
        with pyro.plate("data", y.shape[1], subsample_size=subsample_size, dim=-1) as idx:
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=y[:, idx])


def test_several_subsampled_plates():
    torch.manual_seed(0)
    xa, xb = torch.randn(600) + 1, torch.randn(400) - 1
    minibatch = _potential(two_datasets, (xa, xb), {})
    full = _potential(two_datasets, (xa, xb), {"subsample": (None, None)})
    assert sorted(p.name for p in minibatch.plates) == ["a", "b"]
    theta = torch.tensor([0.5, 0.3])  # mu, log scale (sites sorted by name)
    # 20 steps: one epoch of plate a (600/30), two of plate b (400/40).
    average = _epoch_average(minibatch, theta, 20)
    assert average == pytest.approx(float(full(theta)), rel=1e-5)


def test_subsampled_plate_nested_in_another_plate():
    torch.manual_seed(0)
    y = torch.randn(3, 200) + torch.tensor([[1.0], [0.0], [-1.0]])
    minibatch = _potential(grouped, (y,), {"subsample_size": 20})
    full = _potential(grouped, (y,), {})
    assert [p.name for p in minibatch.plates] == ["data"]
    theta = torch.tensor([0.9, 0.1, -1.2])
    assert _epoch_average(minibatch, theta, 10) == pytest.approx(float(full(theta)), rel=1e-5)


@pytest.mark.parametrize("case", ["regression", "two_plates", "nested"])
def test_traced_potential_and_gradient_equal_the_eager_ones(case):
    torch.manual_seed(3)
    if case == "regression":
        x, y = linear_regression_data(n=500, d=3)
        potential = _potential(linear_regression, (x, y), {"subsample_size": 25})
    elif case == "two_plates":
        potential = _potential(two_datasets, (torch.randn(600), torch.randn(400)), {})
    else:
        potential = _potential(grouped, (torch.randn(3, 200),), {"subsample_size": 20})
    theta = torch.randn(potential.layout.size)
    assert potential.compile(theta) is None and potential.compiled
    for _ in range(3):
        point = theta + 0.1 * torch.randn_like(theta)
        indices = [torch.randperm(p.size)[: p.subsample_size] for p in potential.plates]
        eager_energy, eager_grad = potential.eager_value_and_grad(point, indices)
        energy, grad = potential.value_and_grad(point, indices)
        assert torch.allclose(energy, eager_energy, rtol=1e-5)
        assert torch.allclose(grad, eager_grad, rtol=1e-4, atol=1e-4)


def branching(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    scale = 1.0 if mu > 0 else 2.0  # Python control flow on a latent value
    with pyro.plate("data", y.shape[0], subsample_size=10) as idx:
        pyro.sample("obs", dist.Normal(mu, scale), obs=y[idx])


def noisy(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    jitter = 0.01 * torch.rand(())  # a stochastic potential
    with pyro.plate("data", y.shape[0], subsample_size=10) as idx:
        pyro.sample("obs", dist.Normal(mu + jitter, 1.0), obs=y[idx])


@pytest.mark.parametrize(
    "model, reason", [(branching, "tracing the model failed"), (noisy, "differs from the eager")]
)
def test_untraceable_models_stay_eager_and_say_why(model, reason):
    potential = _potential(model, (torch.randn(100),), {})
    message = potential.compile(torch.tensor([0.3]))
    assert message is not None and reason in message
    assert not potential.compiled
    energy, grad = potential.value_and_grad(torch.tensor([0.3]), [torch.arange(10)])
    assert torch.isfinite(energy) and torch.isfinite(grad).all()


SEEN: list[torch.Tensor] = []


def recording(y, subsample_size=10):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", y.shape[0], subsample_size=subsample_size) as idx:
        SEEN.append(idx.clone())
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])


def test_the_kernel_feeds_the_model_one_permutation_per_epoch(monkeypatch):
    from pyro_csg import CyclicalSGLD
    from pyro_csg.core.noise import CycleNoise

    # The noise diagnostic's extra batches (its own, not the chain's) are not recorded.
    monkeypatch.setattr(CycleNoise, "measure", lambda *args: 0.0)

    y = torch.randn(100)
    kernel = CyclicalSGLD(
        recording,
        step_size=1e-3,
        steps_per_cycle=9,
        exploration_fraction=0.0,
        samples_per_cycle=1,
        compile_potential=False,
        optimize_start=False,
        control_variates=False,  # every batch the model sees is the chain's
    )
    pyro.set_rng_seed(0)
    kernel.setup(0, y)
    SEEN.clear()
    # The gradient at the start and those of iterations 1..9: ten batches, one epoch.
    kernel.sample(kernel.initial_params)
    assert len(SEEN) == 10 and all(len(batch) == 10 for batch in SEEN)
    assert sorted(torch.cat(SEEN).tolist()) == list(range(100))
    for _ in range(3):  # 27 more batches: epochs 2 and 3, and the start of epoch 4
        kernel.sample(kernel._current.record.last_draw)
    for epoch in (1, 2):
        batches = SEEN[10 * epoch : 10 * (epoch + 1)]
        assert sorted(torch.cat(batches).tolist()) == list(range(100))
    assert not torch.equal(SEEN[0], SEEN[10])  # a fresh permutation each epoch


def test_graph_trimming_keeps_values_and_drops_most_dispatches():
    from pyro_csg.adapter import graph as graphs

    x, y = linear_regression_data(n=500, d=3)
    potential = _potential(linear_regression, (x, y), {"subsample_size": 25})
    theta, idx = torch.randn(3), torch.arange(25)

    def energy_and_grad(flat, index):
        return potential.eager_value_and_grad(flat, [index])

    graph = graphs.trace(energy_and_grad, theta, idx)
    before = graphs.count_ops(graph)
    graphs.simplify(graph)
    assert graphs.count_ops(graph) < 0.6 * before, (before, graphs.count_ops(graph))
    for point, index in ((theta, idx), (theta + 0.5, idx + 3)):
        expected = potential.eager_value_and_grad(point, [index])
        for want, have in zip(expected, graph(point, index), strict=True):
            assert torch.allclose(want, have, rtol=1e-6)
