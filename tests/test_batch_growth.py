"""Larger batches where the minibatch noise cuts the automatic step tenfold or more
(``core.subsample.grown_batch``, ``max_batch_size``).

The model: a regression with 40 non-centred group effects (``tau`` and ``sigma``
known, so the posterior of ``(z, beta)`` is Gaussian and exact), 2,000 rows, batches
of 20 (half a row per group a batch): the noise cuts the step several hundredfold, and
on the plate's own batches the chain barely moves in its cycles. Not a model the
defaults were tuned on.
"""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC

from pyro_csg import CyclicalSGHMC, CyclicalSGLD
from pyro_csg.core.subsample import MAX_GROWTH, SubsamplePlate, grown_batch

N, GROUPS, B, TAU, SIGMA = 2000, 40, 20, 0.5, 1.0


def data():
    generator = torch.Generator().manual_seed(3)
    group = torch.arange(N) % GROUPS
    x = torch.randn(N, generator=generator)
    effect = TAU * torch.randn(GROUPS, generator=generator)
    y = effect[group] + 0.8 * x + SIGMA * torch.randn(N, generator=generator)
    return x, group, y


def groups(x, group, y, subsample_size=B):
    z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([GROUPS]).to_event(1))
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(y), subsample_size=subsample_size) as i:
        pyro.sample("y", dist.Normal(TAU * z[group[i]] + beta * x[i], SIGMA), obs=y[i])


def exact_posterior(x, group, y):
    """Mean and sd of ``(z, beta)``: precision ``I + A^T A / sigma^2``."""
    design = torch.cat([TAU * torch.nn.functional.one_hot(group, GROUPS), x[:, None]], 1)
    design = design.double()
    precision = torch.eye(GROUPS + 1, dtype=torch.float64) + design.T @ design / SIGMA**2
    covariance = torch.linalg.inv(precision)
    mean = covariance @ (design.T @ y.double()) / SIGMA**2
    return mean, covariance.diagonal().sqrt()


def run(kernel_class=CyclicalSGHMC, cycles=20, seed=0, **options):
    x, group, y = data()
    pyro.set_rng_seed(seed)
    kernel = kernel_class(groups, **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc = MCMC(kernel, num_samples=4 * cycles, warmup_steps=0, disable_progbar=True)
        mcmc.run(x, group, y)
    samples = mcmc.get_samples()
    draws = torch.cat([samples["z"], samples["beta"][:, None]], 1).double()
    return kernel, draws, [str(w.message) for w in caught]


@pytest.mark.parametrize("kernel_class", [CyclicalSGHMC, CyclicalSGLD])
def test_a_noise_limited_chain_grows_its_batch_and_is_right(kernel_class):
    # 80 draws of 41 coordinates: a mean's standard error is about 0.1-0.15 sd at the
    # draws' autocorrelation, so 0.5 is over three of those for the largest of 41; an sd
    # estimate's about 10%, so [0.6, 1.5] for the extremes of 41. On the plate's own
    # batches of 20 (max_batch_size=20) the same runs are 2 to 20 sds off.
    kernel, draws, messages = run(kernel_class)
    report = kernel.hyperparameters()
    assert report["subsample_size"][0] > 10 * B, report["subsample_size"]
    assert not any("noise limited" in m for m in messages), messages
    mean, sd = exact_posterior(*data())
    error = ((draws.mean(0) - mean).abs() / sd).max()
    ratio = draws.std(0) / sd
    assert error < 0.5, (float(error), ratio)
    assert 0.6 < ratio.min() and ratio.max() < 1.5, ratio


def test_on_the_plates_own_batches_the_chain_warns_and_is_too_narrow():
    # Seeds 0-2 (cSGHMC): the least sd ratio 0.37 to 0.55; on the grown batches 0.78 to 0.84.
    kernel, draws, messages = run(max_batch_size=B)
    assert kernel.hyperparameters()["subsample_size"] == [B]
    assert any("noise limited the automatic step size" in m for m in messages), messages
    _, sd = exact_posterior(*data())
    assert (draws.std(0) / sd).min() < 0.6


def test_a_capped_batch_says_how_far_it_grew():
    kernel, _, messages = run(cycles=2, max_batch_size=2 * B)
    assert kernel.hyperparameters()["subsample_size"] == [2 * B]
    assert any(f"already runs batches of {2 * B} indices" in m for m in messages), messages


def test_an_explicit_step_keeps_the_plates_batch():
    kernel, _, _ = run(cycles=2, step_size=1e-5)
    assert kernel.hyperparameters().get("subsample_size") is None  # not tuned: not reported
    (chain,) = kernel._chains.values()
    assert chain.state.batch_size is None and chain.chain.batches[0].plate.subsample_size == B


def test_a_resumed_grown_chain_continues_bit_for_bit():
    x, group, y = data()

    def kernel():
        return CyclicalSGHMC(groups, steps_per_cycle=100)

    pyro.set_rng_seed(1)
    whole = kernel()
    MCMC(whole, num_samples=24, warmup_steps=0, disable_progbar=True).run(x, group, y)
    pyro.set_rng_seed(1)
    first = kernel()
    MCMC(first, num_samples=12, warmup_steps=0, disable_progbar=True).run(x, group, y)
    saved = first.state_dict()
    assert saved["chains"][0]["batch_size"] == whole.hyperparameters()["subsample_size"][0]
    later = kernel()
    later.load_state_dict(saved)
    mcmc = MCMC(later, num_samples=12, warmup_steps=0, disable_progbar=True)
    mcmc.run(x, group, y)
    assert torch.equal(mcmc.get_samples()["z"], whole.get_samples()["z"][12:])
    assert later.hyperparameters()["subsample_size"] == whole.hyperparameters()["subsample_size"]


@pytest.mark.parametrize("bad", [0, -5, 2.5, "all", True])
def test_max_batch_size_must_be_a_whole_number(bad):
    with pytest.raises(ValueError, match="max_batch_size must be a whole number"):
        CyclicalSGHMC(groups, max_batch_size=bad)


def test_the_rule_grows_to_the_curvatures_batch_within_its_bounds():
    plate = SubsamplePlate("data", size=10**6, subsample_size=100, device="cpu")
    assert grown_batch(plate, 1.9) == 100  # the noise did not halve the step
    assert grown_batch(plate, 10.0) == 4000  # four times the curvature's batch
    assert grown_batch(plate, 1e4) == MAX_GROWTH * 100
    assert grown_batch(plate, 1e4, most=50) == 100  # never below the plate's own
    assert grown_batch(plate, 15.0, most=150) == 100  # nor by less than twice
    assert grown_batch(plate, 1e4, dim=7510) == 100  # a network: its arithmetic sets its cost
    assert grown_batch(plate, 1e4, dim=7510, most=10**6) == 10**6  # asked for
    assert grown_batch(plate, float("nan")) == 100


def test_a_smaller_step_scale_is_not_read_as_noise():
    # A logistic regression whose step the curvature bounds (cut 1.0): step_scale=0.3 puts
    # the step 3.3 times below the curvature's bound, but by the user's choice.
    from pyro_csg.examples.large_logistic import logistic, make_data

    x, y = make_data(2000)
    pyro.set_rng_seed(0)
    kernel = CyclicalSGHMC(logistic, steps_per_cycle=50, step_scale=0.3)
    MCMC(kernel, num_samples=4, warmup_steps=0, disable_progbar=True).run(x, y, 100)
    assert kernel.hyperparameters()["subsample_size"] == [100]
