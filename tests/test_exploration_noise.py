"""The exploration stage's noise (``exploration_noise``): turned on once the cycles show
one mode (:func:`pyro_csg.core.sampler.choose_exploration`), kept off over several modes.

A resumed run makes the same choice: ``tests/test_checkpoint.py``'s run turns the noise
on at cycle 12 of 42 and is killed before and after it (the draws equal bit for bit)."""

import io
import warnings
from dataclasses import replace

import pyro
import pytest
import torch
from pyro.infer import MCMC
from test_drift import draws

import pyro_csg.core.noise as noise_module
from pyro_csg import CyclicalSGHMC, CyclicalSGLD
from pyro_csg.core.diffusions import sgld
from pyro_csg.core.drift import DriftCheck
from pyro_csg.core.noise import NOISE_SPACING, CycleNoise
from pyro_csg.core.sampler import SamplerConfig, choose_exploration, init_chain, skipped_cycles
from pyro_csg.core.schedules import CycleLayout
from pyro_csg.core.state import ChainState

COV = torch.tensor([[1.0, 0.99], [0.99, 1.0]])  # sds 1, one direction 199 times softer
PRECISION = torch.linalg.inv(COV)


def correlated(params):
    x = params["x"]
    return 0.5 * x @ PRECISION @ x


def run_correlated(exploration_noise, seed, kernel_class=CyclicalSGHMC, cycles=40):
    kernel = kernel_class(
        potential_fn=correlated, steps_per_cycle=100, exploration_noise=exploration_noise
    )
    pyro.set_rng_seed(seed)
    mcmc = MCMC(
        kernel,
        num_samples=4 * cycles,
        warmup_steps=0,
        initial_params={"x": torch.zeros(2)},
        disable_progbar=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc.run()
        mcmc.diagnostics()  # (the checks' warnings, which mark the run)
    return kernel, mcmc.get_samples()["x"]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_slow_direction_on_one_mode_gets_its_spread_back(seed):
    """A Gaussian with correlation 0.99, cycles of 100 steps: the paper's noise-free
    exploration pulls every cycle to the mode and the sampling stage cannot spread the
    chain along the soft direction (measured sds 0.54-0.63 over seeds 0-2, warned); with
    the noise turned on at cycle 10 (after the one-mode test's 10 cycles) the 40
    cycles' sds were 0.88-0.95, the first 10 cycles' narrow draws included."""
    kernel, x = run_correlated("auto", seed)
    assert kernel.hyperparameters()["noisy_exploration_from"] == [10]
    # Each cycle's draws spread over 0.12-0.49 of all draws' sd: never skipped.
    assert kernel.hyperparameters()["exploration_skipped_cycles"] == [0]
    sd = x.std(0)
    assert ((sd > 0.8) & (sd < 1.2)).all(), sd
    assert x.mean(0).abs().max() < 0.5  # a posterior sd of 1; about 10 effective cycles
    paper, y = run_correlated("never", seed)
    assert "noisy_exploration_from" not in paper.hyperparameters()
    assert (y.std(0) < 0.75).all()
    assert paper.hyperparameters()["sampler_warnings"]  # narrow, and said so


def test_exploration_noise_always_is_noise_from_the_first_cycle():
    kernel, x = run_correlated("always", 0, CyclicalSGLD, cycles=20)
    assert kernel.state_dict()["chains"][0]["noisy_exploration_from"] == 0
    assert ((x.std(0) > 0.8) & (x.std(0) < 1.25)).all()


def _state_after(check, draws_made, exploration_noise="auto", steps=100):
    layout = CycleLayout(steps, 0.5, 4)
    config = SamplerConfig(layout, sgld(), exploration_noise=exploration_noise)
    _, state = init_chain(lambda t, i: ((t**2).sum() / 2, t), torch.zeros(5), config, 0)
    return choose_exploration(config, replace(state, draws=draws_made), check)


def test_the_noise_comes_at_a_cycles_start_on_one_mode_only():
    one_mode = DriftCheck()
    draws(one_mode, lambda c, p: 0.0, cycles=12, dim=5)
    assert _state_after(one_mode, 48).noisy_exploration_from == 12
    assert not one_mode.exploring  # cycles that mix are no longer the test
    assert _state_after(DriftCheck(), 48).noisy_exploration_from is None  # no cycles yet
    check = DriftCheck()
    draws(check, lambda c, p: 0.0, cycles=12, dim=5)
    assert _state_after(check, 49).noisy_exploration_from is None  # mid-cycle
    assert _state_after(check, 48, "never").noisy_exploration_from is None
    assert check.exploring
    modes = torch.zeros(5)
    modes[2] = 20.0
    several = DriftCheck()
    draws(several, lambda c, p: modes * (c % 3 - 1), cycles=30, dim=5)
    assert _state_after(several, 120).noisy_exploration_from is None
    short = DriftCheck()
    draws(short, lambda c, p: 0.0, cycles=9, dim=5)  # fewer cycles than the test needs
    assert _state_after(short, 36).noisy_exploration_from is None


def test_a_cycle_whose_draws_mix_on_their_own_skips_its_exploration():
    """Independent draws (spread about 1 of the sd): skipped; within-cycle correlation
    0.95: the noisy exploration. Decided once, where the noise-free exploration stops."""
    mixing = DriftCheck()
    draws(mixing, lambda c, p: 0.0, cycles=12, dim=5, rho=0.0)
    assert mixing.report().mixes_within_cycles
    config = SamplerConfig(CycleLayout(100, 0.5, 4), sgld())
    state = _state_after(mixing, 48)
    assert (state.noisy_exploration_from, state.skipping_exploration) == (12, True)
    assert skipped_cycles(config, replace(state, draws=49)) == 1  # cycle 12 begun
    slow = DriftCheck()
    draws(slow, lambda c, p: 0.0, cycles=12, dim=5, rho=0.95)
    assert not slow.report().mixes_within_cycles
    state = _state_after(slow, 48)
    assert (state.noisy_exploration_from, state.skipping_exploration) == (12, False)
    assert skipped_cycles(config, replace(state, draws=60)) == 0
    skipping = replace(state, noisy_exploration_from=5, skipping_exploration=True, draws=52)
    later = choose_exploration(config, skipping, slow)
    assert later.skipping_exploration  # kept: not decided again on the slow draws
    assert skipped_cycles(config, replace(later, draws=56)) == 9  # cycles 5 to 13
    never = _state_after(mixing, 48, "never")
    assert never.noisy_exploration_from is None and not never.skipping_exploration


def test_the_sampling_stride_needs_draws_that_mix_with_a_margin():
    """Cycles of 1,000 steps (125 between draws): independent draws (spread about 1) skip
    with the stride of 5; draws with within-cycle correlation 0.55 (spread about 0.77)
    skip their exploration but run their whole sampling stage."""
    mixing = DriftCheck()
    draws(mixing, lambda c, p: 0.0, cycles=12, dim=5, rho=0.0)
    state = _state_after(mixing, 48, steps=1000)
    assert (state.skipping_exploration, state.sampling_stride) == (True, 5)
    marginal = DriftCheck()
    draws(marginal, lambda c, p: 0.0, cycles=200, dim=5, rho=0.55)
    report = marginal.report()
    assert 0.7 < report.spread.min() < 0.8, report.spread
    assert report.mixes_within_cycles and not report.mixes_with_margin
    state = _state_after(marginal, 800, steps=1000)
    assert (state.skipping_exploration, state.sampling_stride) == (True, 1)
    slow = DriftCheck()
    draws(slow, lambda c, p: 0.0, cycles=12, dim=5, rho=0.95)
    assert _state_after(slow, 48, steps=1000).sampling_stride == 1  # noisy exploration


def counted_gaussian():
    calls = [0]

    def potential(params):
        calls[0] += 1
        return 0.5 * (params["x"] ** 2).sum()

    return potential, calls


def test_a_cycle_that_skips_positions_spaces_its_noise_measurements_by_iterations_run():
    state = ChainState(torch.zeros(2), (), None, None, 1, 0, 0.1, (), torch.Generator().get_state())
    noise = CycleNoise(layout=CycleLayout(1000, 0.5, 4))
    assert noise.spacing(state) == NOISE_SPACING
    skipping = replace(state, noisy_exploration_from=0, skipping_exploration=True)
    # Stride 1: the 500 sampling-stage positions run; stride 5: 100 of the 1,000.
    assert noise.spacing(skipping) == NOISE_SPACING * 2
    assert noise.spacing(replace(skipping, sampling_stride=5)) == NOISE_SPACING * 10
    assert CycleNoise().spacing(replace(skipping, sampling_stride=5)) == NOISE_SPACING


@pytest.mark.parametrize("kernel_class", [CyclicalSGHMC, CyclicalSGLD])
def test_skipped_explorations_cut_the_iterations_and_keep_the_posterior(
    kernel_class, monkeypatch
):
    """A standard Gaussian in 3 coordinates, 40 cycles of 400 steps: from cycle 10 the
    cycles skip their exploration and run every 2nd sampling-stage position (50 between
    draws: stride 2), so the run evaluates the potential about 10 x 400 + 30 x 100 times
    instead of 40 x 400, and its draws are still N(0, 1). The gradient noise (a
    ``potential_fn`` may be stochastic) is measured at every cycle's first draw until
    then (400 iterations apart), and at every 4th skipping cycle's after."""
    measured = []
    original = noise_module.gradient_noise

    def counted(*args, **kwargs):
        measured.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(noise_module, "gradient_noise", counted)
    runs = {}
    for choice in ("auto", "never"):
        measured.clear()
        potential, calls = counted_gaussian()
        kernel = kernel_class(
            potential_fn=potential, steps_per_cycle=400, exploration_noise=choice
        )
        pyro.set_rng_seed(0)
        mcmc = MCMC(kernel, num_samples=160, warmup_steps=0, disable_progbar=True,
                    initial_params={"x": torch.zeros(3)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mcmc.run()
        runs[choice] = kernel, calls[0], mcmc.get_samples()["x"], len(measured)
    kernel, calls, x, measurements = runs["auto"]
    # Cycles 0-9, then every 4th cycle's (1,600 positions, 400 iterations run): 13, ..., 37.
    assert runs["never"][3] == 40 and measurements == 10 + len(range(13, 40, 4)), measurements
    hyper = kernel.hyperparameters()
    assert hyper["noisy_exploration_from"] == [10]
    assert hyper["exploration_skipped_cycles"] == [30]
    assert hyper["sampling_stride"] == [2]
    assert calls < 0.5 * runs["never"][1], (calls, runs["never"][1])
    assert ((x.std(0) > 0.8) & (x.std(0) < 1.2)).all(), x.std(0)
    assert x.mean(0).abs().max() < 0.3, x.mean(0)


def test_a_run_continued_from_its_state_dict_skips_as_the_whole_run():
    """The choice is kept in the chain's state: a kernel loaded from a state_dict (no
    draws for its drift check to see) goes on skipping where the whole run does."""

    def sampled(kernel, num_samples):
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=0, disable_progbar=True,
                    initial_params={"x": torch.zeros(3)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mcmc.run()
        return mcmc.get_samples()["x"]

    def kernel():
        # 400 steps: the skipping cycles run every 2nd sampling-stage position.
        return CyclicalSGHMC(potential_fn=counted_gaussian()[0], steps_per_cycle=400)

    pyro.set_rng_seed(0)
    whole = kernel()
    all_draws = sampled(whole, 56)
    pyro.set_rng_seed(0)
    first = kernel()
    head = sampled(first, 48)
    assert first.hyperparameters()["exploration_skipped_cycles"] == [2]  # cycles 10, 11
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    later = kernel()
    later.load_state_dict(torch.load(buffer, weights_only=True))
    tail = sampled(later, 8)
    assert torch.equal(torch.cat([head, tail]), all_draws)
    assert later.hyperparameters()["exploration_skipped_cycles"] == [4]
    assert whole.hyperparameters()["exploration_skipped_cycles"] == [4]
    assert later.hyperparameters()["sampling_stride"] == [2]


def test_a_bad_exploration_noise_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="exploration_noise must be one of 'auto', 'never'"):
        CyclicalSGLD(potential_fn=correlated, exploration_noise="sometimes")
    with pytest.raises(ValueError, match="exploration_noise"):
        SamplerConfig(CycleLayout(10, 0.5, 2), sgld(), exploration_noise=True)
