import math

import pyro
import pytest
import torch
from models import linear_regression, linear_regression_data
from pyro.infer import MCMC

from pyro_csg import CyclicalSGLD
from pyro_csg.core.schedules import Constant, CosineCyclical, CycleLayout, PolynomialDecay


@pytest.mark.parametrize("length", [1, 7, 10, 100])
def test_cosine_step_size_is_eq1_at_every_step_of_three_cycles(length):
    schedule = CosineCyclical(step_size=0.3, steps_per_cycle=length)
    for k in range(1, 3 * length + 1):
        expected = 0.3 / 2 * (math.cos(math.pi * ((k - 1) % length) / length) + 1)
        assert schedule(k) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # Every cycle restarts at the full step size.
    assert [schedule(c * length + 1) for c in range(3)] == [0.3, 0.3, 0.3]


@pytest.mark.parametrize(
    "length, beta", [(10, 0.0), (10, 0.6), (20, 0.95), (7, 0.5), (100, 0.8), (3, 1 / 3)]
)
def test_stage_follows_the_beta_rule(length, beta):
    layout = CycleLayout(length, beta, 1)
    for k in range(1, 3 * length + 1):
        assert layout.is_sampling(k) == (((k - 1) % length) / length >= beta)
        assert layout.cycle(k) == (k - 1) // length
    assert layout.num_exploration_steps == sum(j / length < beta for j in range(length))


@pytest.mark.parametrize(
    "length, beta, per_cycle", [(10, 0.6, 2), (10, 0.6, 4), (100, 0.8, 3), (9, 0.0, 9), (5, 0.5, 1)]
)
def test_retained_draws_are_spread_over_the_sampling_stage_ending_the_cycle(
    length, beta, per_cycle
):
    layout = CycleLayout(length, beta, per_cycle)
    positions = layout.retained_positions
    assert len(positions) == per_cycle
    assert positions[-1] == length - 1  # the last draw ends the cycle
    assert all(layout.is_sampling(p + 1) for p in positions)
    gaps = [b - a for a, b in zip(positions, positions[1:], strict=False)]
    assert all(g > 0 for g in gaps)
    # Evenly spaced: gaps differ by at most one step, and the first gap from the start of
    # the sampling stage is no larger than the others.
    sampling = layout.num_sampling_steps
    assert max(gaps, default=0) - min(gaps, default=0) <= 1
    assert positions[0] - (length - sampling) + 1 <= max(gaps, default=sampling)
    iterations = [layout.retained_iteration(n) for n in range(3 * per_cycle)]
    assert iterations == [c * length + p + 1 for c in range(3) for p in positions]


@pytest.mark.parametrize(
    "length, beta, per_cycle, stride",
    [(1000, 0.5, 4, 5), (1000, 0.5, 4, 1), (100, 0.8, 3, 2), (9, 0.0, 9, 1), (1667, 0.03, 100, 3)],
)
def test_a_strided_cycle_runs_every_retained_position_and_every_stride_th_before_it(
    length, beta, per_cycle, stride
):
    layout = CycleLayout(length, beta, per_cycle)
    idle = layout.idle_positions(stride)
    running = [p for p in range(length) if not idle[p]]
    explore = layout.num_exploration_steps
    assert set(layout.retained_positions) <= set(running)
    assert all(p >= explore for p in running)  # no exploration stage
    # Back from each retained position, every stride-th one down to the previous draw.
    bounds = (explore - 1, *layout.retained_positions)
    expected = [
        p for low, high in zip(bounds, bounds[1:], strict=False) for p in range(low + 1, high + 1)
        if (high - p) % stride == 0
    ]
    assert running == expected
    if stride == 1:
        assert running == list(range(explore, length))


@pytest.mark.parametrize("stride", [0, -1, 2.0, None])
def test_a_bad_stride_is_refused_naming_it(stride):
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        CycleLayout(100, 0.5, 4).idle_positions(stride)


def test_documented_example_layout():
    layout = CycleLayout(steps_per_cycle=10, exploration_fraction=0.6, samples_per_cycle=2)
    assert [layout.retained_iteration(n) for n in range(4)] == [8, 10, 18, 20]


def test_constant_and_polynomial_schedules():
    assert [Constant(0.1)(k) for k in (1, 10, 1000)] == [0.1, 0.1, 0.1]
    decay = PolynomialDecay(a=0.043, b=1.0, gamma=0.55)
    for k in (1, 2, 50, 5000):
        assert decay(k) == pytest.approx(0.043 * (1.0 + k) ** -0.55)
    assert decay(10) > decay(11)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: CosineCyclical(0.0, 10), "step_size"),
        (lambda: CosineCyclical(float("nan"), 10), "step_size"),
        (lambda: CosineCyclical(0.1, 0), "steps_per_cycle"),
        (lambda: Constant(-1.0), "step_size"),
        (lambda: PolynomialDecay(0.1, -1.0), "b must"),
        (lambda: PolynomialDecay(0.1, 1.0, 0.0), "gamma"),
        (lambda: CycleLayout(10, 1.0, 1), "exploration_fraction"),
        (lambda: CycleLayout(10, -0.1, 1), "exploration_fraction"),
        (lambda: CycleLayout(10, 0.8, 3), "samples_per_cycle must be at most .*2"),
        (lambda: CycleLayout(10, 0.5, 0), "samples_per_cycle"),
        (lambda: Constant(0.1)(0), "counted from 1"),
    ],
)
def test_invalid_schedule_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_kernel_reports_the_documented_iterations_and_step_sizes():
    x, y = linear_regression_data(n=200, d=2)
    pyro.set_rng_seed(0)
    kernel = CyclicalSGLD(
        linear_regression,
        step_size=1e-4,
        steps_per_cycle=20,
        exploration_fraction=0.7,
        samples_per_cycle=3,
    )
    mcmc = MCMC(kernel, num_samples=3 * 3, warmup_steps=2 * 3, disable_progbar=True)
    mcmc.run(x, y, subsample_size=20)
    diagnostics = mcmc.diagnostics()
    layout = CycleLayout(20, 0.7, 3)
    expected = [layout.retained_iteration(n) for n in range(6, 15)]  # two cycles discarded
    assert diagnostics["iteration"]["chain 0"] == expected
    assert diagnostics["cycle"]["chain 0"] == [2, 2, 2, 3, 3, 3, 4, 4, 4]
    schedule = CosineCyclical(1e-4, 20)
    assert diagnostics["step_size"]["chain 0"] == [schedule(k) for k in expected]
    assert all(math.isfinite(u) for u in diagnostics["potential_energy"]["chain 0"])
    assert torch.isfinite(mcmc.get_samples()["w"]).all()
