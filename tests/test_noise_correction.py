"""The noise correction follows the minibatch noise measured at the draws
(``CycleNoise.corrected``), on a schedule a resumed run keeps.

The automatic step measures ``V`` at a few points near the start; a control variate's
noise grows with the distance from its centre, so from the switch on each scheduled
measurement at a cycle's first draw moves ``V`` towards what the chain meets.
"""

import warnings
from dataclasses import replace

import pyro
import pytest
import torch
from pyro.infer import MCMC
from test_lean_gradient import X, Y, logistic

from pyro_csg import CyclicalSGHMC
from pyro_csg.core.noise import NOISE_WEIGHT, CycleNoise
from pyro_csg.core.schedules import CycleLayout
from pyro_csg.core.state import ChainState
from pyro_csg.core.tuning import Tuning
from pyro_csg.services.resume import ChainRecord

LAYOUT = CycleLayout(100, 0.5, 4)
PROFILE = torch.tensor([1.0, 3.0])  # V per coordinate: mean 2


def state_at(cycle, draw=0, switched_at=10):
    tuning = Tuning(0.1, None, 2.0, 0.3, False, PROFILE.clone(), 0.1)
    iteration = LAYOUT.retained_iteration(4 * cycle + draw)
    return ChainState(
        torch.zeros(2), (), None, None, iteration, 4 * cycle + draw + 1, 0.1, (),
        torch.Generator().get_state(), tuning=tuning, noisy_exploration_from=switched_at,
    )  # fmt: skip


def measured(noise, state, cycle, value):
    noise.last = (cycle, value, state.iteration)  # as measure() leaves it


def test_each_scheduled_measurement_moves_v_towards_it():
    noise, state = CycleNoise(layout=LAYOUT), state_at(12)
    measured(noise, state, 12, 4.0)  # twice what V assumes
    moved = noise.corrected(state, 12)
    assert torch.allclose(moved.tuning.noise, PROFILE * (1 - NOISE_WEIGHT + NOISE_WEIGHT * 2))
    for _ in range(60):  # measurement after measurement of 4: V's mean goes to 4
        moved = noise.corrected(moved, 12)
    assert torch.allclose(moved.tuning.noise, 2 * PROFILE, rtol=1e-4)


@pytest.mark.parametrize(
    "why", ["before the switch", "not the cycle's first draw", "stale", "off the schedule"]
)
def test_v_stays_where_the_measurement_does_not_count(why):
    noise, cycle = CycleNoise(layout=LAYOUT), 12
    state = state_at(cycle, switched_at=13 if why == "before the switch" else 10)
    if why == "not the cycle's first draw":
        state = state_at(cycle, draw=1)
    if why == "off the schedule":  # skipping cycles measure every 8th (50 of 100 run)
        state = replace(state, skipping_exploration=True)
    measured(noise, state, cycle, 4.0)
    if why == "stale":
        state = replace(state, iteration=state.iteration + 1)
    assert noise.corrected(state, cycle) is state


def run(folder, interrupt_at=None, monkeypatch=None):
    pyro.set_rng_seed(0)
    kernel = CyclicalSGHMC(logistic, steps_per_cycle=100, checkpoint=folder)
    mcmc = MCMC(kernel, num_samples=160, warmup_steps=0, disable_progbar=True)
    if interrupt_at is not None:
        real, commits = ChainRecord.commit, [0]

        def commit(self, state, draw, per_cycle):
            commits[0] += 1
            if commits[0] == interrupt_at:
                raise KeyboardInterrupt
            real(self, state, draw, per_cycle)

        monkeypatch.setattr(ChainRecord, "commit", commit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc.run(X, Y)
    return mcmc


def test_a_run_resumed_between_measurements_corrects_as_the_whole_run(tmp_path, monkeypatch):
    whole = run(tmp_path / "whole")
    chain = whole.kernel.state_dict()["chains"][0]
    hyper = whole.kernel.hyperparameters()
    assert hyper["noisy_exploration_from"] == [10] and hyper["exploration_skipped_cycles"]
    assert not torch.equal(chain["tuning"]["noise"], first_tuning_noise(whole))
    with pytest.raises(KeyboardInterrupt):  # in cycle 29, off the schedule (24, 32, ...)
        run(tmp_path / "resumed", interrupt_at=4 * 29 + 3, monkeypatch=monkeypatch)
    monkeypatch.undo()
    resumed = run(tmp_path / "resumed")
    assert torch.equal(resumed.get_samples()["w"], whole.get_samples()["w"])
    assert torch.equal(resumed.kernel.state_dict()["chains"][0]["tuning"]["noise"],
                       chain["tuning"]["noise"])  # fmt: skip


def first_tuning_noise(mcmc):
    """``V`` as the start measured it: a run of one cycle from the same seed."""
    pyro.set_rng_seed(0)
    kernel = CyclicalSGHMC(logistic, steps_per_cycle=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MCMC(kernel, num_samples=4, warmup_steps=0, disable_progbar=True).run(X, Y)
    return kernel.state_dict()["chains"][0]["tuning"]["noise"]
