"""A step into a NaN or infinite potential does not end a run the sampler can recover.

A proposal into a wall of the support (an infinite potential) is rejected and counted,
as NUTS rejects a divergent trajectory; a chain that blows up under the automatic step
has its draw's iterations undone and the step halved (issue 21, items 3 and 6).
"""

import math
import tempfile
import warnings

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import MCMC

from pyro_csg import CyclicalSGHMC, CyclicalSGLD, NonFiniteError, to_inference_data
from pyro_csg.core.diffusions import sgld
from pyro_csg.core.sampler import SamplerConfig, run
from pyro_csg.core.schedules import CosineCyclical, CycleLayout

# N(0.9, 0.1^2) truncated at 1: the wall is one sd from the mode.
TRUNCATED_MEAN, TRUNCATED_SD = 0.87124, 0.07935


def wall(params):
    x = params["x"]
    inside = 50.0 * (x - 0.9) ** 2
    return torch.where(x < 1.0, inside, torch.full_like(inside, math.inf)).sum()


def banana(params):
    """The issue's 2-D banana: the curvature grows along the curve."""
    x = params["x"]
    return x[0] ** 2 / 8 + 2 * (x[1] - x[0] ** 2 / 2 + 1) ** 2


def sample(kernel, start, num_samples=120, seed=0):
    pyro.set_rng_seed(seed)
    mcmc = MCMC(
        kernel,
        num_samples=num_samples,
        warmup_steps=0,
        disable_progbar=True,
        initial_params={"x": start},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc.run()
    return mcmc, [str(w.message) for w in caught]


@pytest.mark.parametrize("kernel_class", [CyclicalSGLD, CyclicalSGHMC])
def test_proposals_into_a_wall_are_rejected_and_the_run_goes_on(kernel_class):
    mcmc, _ = sample(kernel_class(potential_fn=wall, steps_per_cycle=300), torch.tensor([0.5]))
    draws = mcmc.get_samples()["x"].double()
    assert (draws < 1.0).all()
    # 30 cycles of 4 draws: the standard error of the mean is about 0.1 sd.
    assert abs(draws.mean() - TRUNCATED_MEAN) < 0.3 * TRUNCATED_SD, draws.mean()
    assert 0.7 < draws.std() / TRUNCATED_SD < 1.4, draws.std()
    stats = mcmc._diagnostics[0]
    rejected = np.array(stats["rejected"])
    assert rejected.sum() > 0 and sum(stats["backoffs"]) == 0
    assert set(np.flatnonzero(rejected)) <= set(stats["divergences"])
    idata = to_inference_data(mcmc)
    assert idata.sample_stats["rejected"].values.sum() == rejected.sum()
    assert idata.sample_stats["diverging"].values[0][rejected > 0].all()


def test_a_users_step_into_a_wall_is_rejected_too():
    kernel = CyclicalSGLD(potential_fn=wall, step_size=0.005, steps_per_cycle=300)
    mcmc, _ = sample(kernel, torch.tensor([0.5]), num_samples=40)
    assert (mcmc.get_samples()["x"] < 1.0).all()
    assert sum(mcmc._diagnostics[0]["rejected"]) > 0


def test_the_automatic_step_backs_off_where_the_banana_blew_it_up():
    """The issue's banana: cSGHMC's defaults raised NonFiniteError on 10 of 10 seeds."""
    for seed in range(3):
        kernel = CyclicalSGHMC(potential_fn=banana, steps_per_cycle=300)
        mcmc, messages = sample(kernel, torch.zeros(2), seed=seed)
        assert torch.isfinite(mcmc.get_samples()["x"]).all()
        (backoffs,) = kernel.hyperparameters()["backoffs"]
        assert sum(mcmc._diagnostics[0]["backoffs"]) == backoffs
        if backoffs:
            (message,) = [m for m in messages if "halved" in m]
            assert f"NaN or infinite {backoffs} time(s)" in message
            assert "LocScaleReparam" in message


def test_a_backed_off_chain_resumes_bit_for_bit():
    def checkpointed(num_samples, folder):
        kernel = CyclicalSGHMC(potential_fn=banana, steps_per_cycle=300, checkpoint=folder)
        return sample(kernel, torch.zeros(2), num_samples=num_samples, seed=1)[0]

    whole = sample(
        CyclicalSGHMC(potential_fn=banana, steps_per_cycle=300),
        torch.zeros(2),
        num_samples=48,
        seed=1,
    )[0]
    with tempfile.TemporaryDirectory() as folder:
        checkpointed(24, folder)
        resumed = checkpointed(48, folder)
    assert torch.equal(resumed.get_samples()["x"], whole.get_samples()["x"])


def test_a_chain_that_cannot_recover_still_raises_with_the_halvings_noted():
    # +inf everywhere but the start: no step size helps.
    def nowhere(params):
        x = params["x"]
        return torch.where(x == 0.0, x * 0.0, torch.full_like(x, math.inf)).sum()

    config = SamplerConfig(CycleLayout(20, 0.5, 2), sgld(), schedule=CosineCyclical(0.1, 20))
    with pytest.raises(NonFiniteError):  # a step the user chose: no halving
        run(lambda t, i: (nowhere({"x": t}), torch.ones_like(t)), torch.zeros(1), config, 4, seed=0)
    auto = SamplerConfig(CycleLayout(20, 0.5, 2), sgld(), preconditioner=False)
    with pytest.raises(NonFiniteError) as raised:
        run(lambda t, i: (nowhere({"x": t}), t.clone()), torch.zeros(1), auto, 4, seed=0)
    assert any("halved 12 time(s)" in note for note in raised.value.__notes__)
