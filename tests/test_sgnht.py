"""cSGNHT: the thermostat's update rules, and the 25-Gaussian mixture's modes.

(The exact conjugate posteriors are in tests/test_posterior.py, with the other kernels.)
"""

import math
import warnings

import pyro
import pytest
import torch
from pyro.infer import MCMC

from pyro_csg import CyclicalSGNHT
from pyro_csg.core.diffusions import (
    SGNHTState,
    preconditioned,
    sgnht,
    sgnht_init,
    sgnht_rescale,
    sgnht_update,
)
from pyro_csg.examples.mixture import modes_visited, noisy_potential, random_start


def test_the_thermostat_heats_and_cools_towards_the_temperature():
    theta = torch.zeros(4)
    hot = SGNHTState(torch.full((4,), 1.0), torch.tensor(0.1))
    _, after = sgnht_update(theta, hot, torch.zeros(4), 0.01, torch.zeros(4), diffusion=0.1)
    # v' = 0.9 v, mean(v'^2) = 0.81 > eta T = 0.01: more friction
    assert after.thermostat == pytest.approx(0.1 + 0.81 - 0.01)
    cold = SGNHTState(torch.zeros(4), torch.tensor(0.1))
    _, after = sgnht_update(theta, cold, torch.zeros(4), 0.01, torch.zeros(4), diffusion=0.1)
    assert after.thermostat == pytest.approx(0.09)  # v' = 0: less friction
    # The friction stays in [0, 1]; the exploration stage (xi None) holds it.
    _, after = sgnht_update(theta, hot, torch.zeros(4), 0.01, None, diffusion=0.1)
    assert after.thermostat == 0.1
    very_hot = SGNHTState(torch.full((4,), 10.0), torch.tensor(0.5))
    _, after = sgnht_update(theta, very_hot, torch.zeros(4), 0.01, torch.zeros(4), diffusion=0.1)
    assert after.thermostat == 1.0


def test_the_update_is_sghmc_at_the_thermostats_friction():
    theta, v, grad, xi = (
        torch.tensor([1.0]),
        torch.tensor([0.5]),
        torch.tensor([2.0]),
        torch.ones(1),
    )
    new_theta, state = sgnht_update(
        theta, SGNHTState(v, torch.tensor(0.2)), grad, 0.1, xi, diffusion=0.3, temperature=2.0
    )
    momentum = 0.8 * 0.5 - 0.1 * 2.0 + math.sqrt(2 * 0.3 * 0.1 * 2.0) * 1.0
    assert state.momentum.item() == pytest.approx(momentum)
    assert new_theta.item() == pytest.approx(1.0 + momentum)
    assert state.thermostat.item() == pytest.approx(0.2 + momentum**2 - 0.1 * 2.0)


def test_rescale_keeps_the_physical_momentum_and_the_friction_per_step():
    state = sgnht_rescale(SGNHTState(torch.tensor([2.0]), torch.tensor(0.4)), 0.25)
    assert state.momentum.item() == 1.0 and state.thermostat.item() == pytest.approx(0.4)


def test_preconditioned_thermostat_reads_the_kinetic_energy_in_whitened_units():
    mass = torch.tensor([4.0, 0.25])
    update = preconditioned(sgnht(0.1), mass).update
    state = SGNHTState(torch.tensor([2.0, 0.5]), torch.tensor(0.0))  # v / sqrt(G) = (1, 1)
    _, after = update(torch.zeros(2), state, torch.zeros(2), 0.5, torch.zeros(2))
    # v' = v (no friction, no gradient, no noise): mean(v'^2 / G) = 1, less eta T = 0.5
    assert after.thermostat.item() == pytest.approx(0.5)
    assert sgnht_init(torch.zeros(3), diffusion=0.2).thermostat.item() == pytest.approx(0.2)


def test_the_kernel_reports_its_diffusion_and_refuses_a_bad_one():
    assert CyclicalSGNHT(lambda: None, diffusion=0.2).hyperparameters()["diffusion"] == 0.2
    for bad in (0.0, 1.5, "0.1", True):
        with pytest.raises(ValueError, match="diffusion must be a number in"):
            CyclicalSGNHT(lambda: None, diffusion=bad)


def test_csgnht_finds_the_25_gaussians_modes():
    """Notebook 2's budget (30 cycles of 1667 steps, 3% exploring, 100 draws a cycle) on
    the noisy potential: cSGLD visits 14 to 21 of the 25 modes there; the thermostat
    absorbs the N(0, 1) gradient noise and cSGNHT at the same peak step visits as many."""
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    kernel = CyclicalSGNHT(
        potential_fn=noisy_potential,
        step_size=0.07,
        steps_per_cycle=1667,
        exploration_fraction=0.03,
        samples_per_cycle=100,
    )
    mcmc = MCMC(
        kernel,
        num_samples=3000,
        warmup_steps=0,
        initial_params=random_start(0),
        disable_progbar=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the noise warning: this potential is all noise
        mcmc.run()
    draws = mcmc.get_samples()["x"]
    assert torch.isfinite(draws).all()
    assert int(modes_visited(draws).sum()) >= 12
