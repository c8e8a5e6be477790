"""The examples' pieces that the notebooks' numbers rest on: metrics, the mixture target,
the mode count, the budgets and schedules of the baselines."""

import math

import pyro
import pytest
import torch

from pyro_csg.examples import digits, metrics, mixture


# -- metrics ---------------------------------------------------------------------------------
def test_expected_calibration_error_by_hand():
    # Bin (0.6, 0.667]: confidence 0.65 twice, one right -> |0.5 - 0.65| = 0.15, weight 1/2.
    # Bin (0.933, 1]: confidence 0.95 twice, both right -> |1 - 0.95| = 0.05, weight 1/2.
    probs = torch.tensor([[0.65, 0.35], [0.65, 0.35], [0.95, 0.05], [0.05, 0.95]])
    labels = torch.tensor([0, 1, 0, 1])
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.10, abs=1e-6)


def test_confidently_wrong_predictions_have_large_ece_and_finite_nll():
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([1, 1])
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(1.0)
    nll = metrics.negative_log_likelihood(probs, labels)
    assert math.isfinite(nll) and nll > 20
    assert metrics.accuracy(probs, labels) == 0.0


def test_metrics_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match=r"probs must be \(n, C\)"):
        metrics.accuracy(torch.ones(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="members, n"):
        metrics.disagreement(torch.zeros(3))


# -- the mixture -----------------------------------------------------------------------------
def test_mixture_density_integrates_to_one():
    grid = torch.linspace(-7, 7, 701, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    density = mixture.log_density(torch.stack([xx, yy], -1)).exp()
    cell = (grid[1] - grid[0]) ** 2
    assert float(density.sum() * cell) == pytest.approx(1.0, abs=1e-3)


def test_noisy_potential_gradient_is_exact_gradient_plus_unit_noise():
    torch.manual_seed(0)
    x = torch.tensor([0.3, -1.7])
    exact = torch.func.grad(lambda z: mixture.exact_potential({"x": z}))(x)
    grads = torch.stack(
        [torch.func.grad(lambda z: mixture.noisy_potential({"x": z}))(x) for _ in range(4000)]
    )
    noise = grads - exact
    # Mean 0 and sd 1 per coordinate: 4000 draws give the mean a standard error of 0.016.
    assert noise.mean(0).abs().max() < 0.06
    assert noise.std(0).sub(1).abs().max() < 0.05


def test_modes_visited_uses_one_percent_and_three_sds():
    radius = 3 * math.sqrt(mixture.MODE_VARIANCE)
    mode_a, mode_b = mixture.MODE_MEANS[0], mixture.MODE_MEANS[1]
    draws = torch.cat([mode_a.repeat(99, 1), (mode_b + torch.tensor([0.99 * radius, 0]))[None]])
    assert mixture.modes_visited(draws).nonzero().flatten().tolist() == [0, 1]
    outside = torch.cat([mode_a.repeat(99, 1), (mode_b + torch.tensor([1.01 * radius, 0]))[None]])
    assert mixture.modes_visited(outside).nonzero().flatten().tolist() == [0]
    rare = torch.cat([mode_a.repeat(201, 1), mode_b[None]])  # 1 in 202 < 1%
    assert mixture.modes_visited(rare).nonzero().flatten().tolist() == [0]


def test_mixture_helpers_refuse_bad_input():
    with pytest.raises(ValueError, match=r"draws must have shape \(n, 2\), got \(4, 3\)"):
        mixture.modes_visited(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"num_steps \(105\) must be a multiple of thinning"):
        mixture.run_sgld(num_steps=105, thinning=10)


def test_sgld_schedule_starts_at_the_papers_step_and_decays_with_power_055():
    schedule = mixture.sgld_schedule()
    assert schedule(1) == pytest.approx(0.043, rel=2e-3)
    assert schedule(2001) / schedule(1001) == pytest.approx((2501 / 1501) ** -0.55)


def test_every_mixture_sampler_gets_the_same_budget():
    budget = 600
    runs = [
        mixture.run_csgld(num_cycles=3, steps_per_cycle=200, samples_per_cycle=10),
        mixture.run_sgld(num_steps=budget),
        mixture.run_nuts(budget=budget, warmup_steps=50),
    ]
    assert [run.gradient_evaluations for run in runs[:2]] == [budget, budget]
    # NUTS stops at the first iteration that reaches the budget: at most one tree over.
    assert budget <= runs[2].gradient_evaluations < budget + 1024
    assert all(torch.isfinite(run.draws).all() for run in runs)


def test_the_start_is_seeded_and_uniform_on_the_square():
    assert torch.equal(mixture.random_start(3)["x"], mixture.random_start(3)["x"])
    starts = torch.stack([mixture.random_start(seed)["x"] for seed in range(2000)])
    assert starts.abs().max() <= 10
    assert starts.mean(0).abs().max() < 0.5  # U[-10, 10]: mean 0, sd 5.8, se 0.13
    assert starts.std(0).sub(20 / math.sqrt(12)).abs().max() < 0.3


# -- the digits ------------------------------------------------------------------------------
def test_budget_counts_whole_epochs():
    budget = digits.Budget(num_cycles=3, epochs_per_cycle=5, batch_size=64)
    assert budget.epochs == 15
    assert budget.steps_per_cycle(1437) == 5 * 22


def test_decaying_sghmc_schedule_runs_from_peak_to_a_tenth():
    x, y, _, _ = digits.load_digits_split()
    budget = digits.Budget(num_cycles=2, epochs_per_cycle=2, samples_per_cycle=2)
    run = digits.run_sghmc(x, y, budget, lr=0.5, decay=True)
    schedule, n = run.mcmc.kernel.schedule, len(y)
    last = budget.num_cycles * budget.steps_per_cycle(n)
    assert schedule(1) == pytest.approx(0.5 / n)
    assert schedule(last) == pytest.approx(0.05 / n, rel=1e-6)
    constant = digits.run_sghmc(x, y, budget, lr=0.5).mcmc.kernel.schedule
    assert constant(1) == constant(last) == pytest.approx(0.25 / n)


def test_bayesian_mlp_weights_are_global_sites_and_predictions_match_by_hand():
    net = digits.BayesianMLP(in_features=4, hidden=3, classes=2)
    x = torch.randn(10, 4)
    trace = pyro.poutine.trace(net).get_trace(x, subsample_size=5)
    assert trace.nodes["fc1.weight"]["value"].shape == (3, 4)
    assert trace.nodes["obs"]["value"].shape == (5,)
    samples = {
        name: torch.randn(2, *trace.nodes[name]["value"].shape)
        for name in ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    }
    probs = digits.predictive_probs(net, samples, x)
    hidden = torch.relu(x @ samples["fc1.weight"][1].T + samples["fc1.bias"][1])
    expected = torch.softmax(hidden @ samples["fc2.weight"][1].T + samples["fc2.bias"][1], -1)
    assert torch.allclose(probs[1], expected, atol=1e-6)


def test_ensemble_curve_and_cycle_probs():
    probs = torch.tensor([[[0.9, 0.1]], [[0.7, 0.3]], [[0.2, 0.8]], [[0.4, 0.6]]])
    per_cycle = digits.cycle_probs(probs, 2)
    assert torch.allclose(per_cycle, torch.tensor([[[0.8, 0.2]], [[0.3, 0.7]]]))
    curve = digits.ensemble_curve(probs, 2, torch.tensor([1]))
    assert curve["NLL"].tolist() == pytest.approx([-math.log(0.2), -math.log(0.45)])
    with pytest.raises(ValueError, match="equal cycles"):
        digits.cycle_probs(probs, 3)
