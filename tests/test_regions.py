"""A few cycles that sampled where the others never went are reported (issue 21).

Cyclical SG-MCMC gives a region the share of cycles whose exploration ended there, not
its mass: stop 38's latent time series, started at its MAP as a ``potential_fn``, put
one cycle of 50 where NUTS never goes, silently. :mod:`pyro_csg.core.regions` finds such
cycles (a gap of ``REGION_GAP`` between them and the others) and says when their level
means they hold less mass than their share of cycles.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from pyro.infer import MCMC

from pyro_csg import CyclicalSGLD, SamplerWarning
from pyro_csg.core.drift import DriftCheck
from pyro_csg.core.regions import MIN_REGION_CYCLES, REGION_GAP, regions_apart, regions_message


def cycles_of(rng, cycles=50, dim=20, per_cycle=4, rho=0.5):
    """Per cycle, the mean and sd of ``per_cycle`` AR(1) draws of N(0, 1) (correlation
    ``rho``) and a level: a stationary run of one region."""
    means, sds = np.empty((cycles, dim)), np.empty((cycles, dim))
    for c in range(cycles):
        x = rng.normal(size=dim)
        draws = [x]
        for _ in range(per_cycle - 1):
            x = rho * x + math.sqrt(1 - rho**2) * rng.normal(size=dim)
            draws.append(x)
        draws = np.array(draws)
        means[c], sds[c] = draws.mean(0), draws.std(0, ddof=1)
    levels = rng.normal(size=cycles) * math.sqrt(dim / 2)
    return means, sds, levels


def test_one_region_is_never_split():
    """200 stationary runs of 50 cycles in 20 dimensions: no region apart. Cycle means
    with Student-t tails of 10 degrees of freedom: in at most 8 of 200 runs (1 and 4 on two
    random streams; heavier tails open such gaps often, as the module says)."""
    rng = np.random.default_rng(0)
    for seed in range(200):
        means, sds, levels = cycles_of(rng)
        assert not regions_apart(range(50), means, sds, levels), seed
    heavy = 0
    for _ in range(200):
        means, sds, levels = cycles_of(rng)
        means = rng.standard_t(10, size=means.shape) * 0.7
        heavy += bool(regions_apart(range(50), means, sds, levels))
    assert heavy <= 8


def test_a_cycle_apart_and_higher_is_reported_lower_is_not():
    rng = np.random.default_rng(1)
    means, sds, levels = cycles_of(rng)
    means[7, 3] += 12.0  # cycle 7 sampled elsewhere along coordinate 3
    levels[:] = 0.0
    levels[7] = 15.0  # 15 nats above the others: at equal volume e^-15 of their mass
    (region,) = regions_apart(range(50), means, sds, levels)
    assert region.cycles == [7] and region.coordinate == 3 and region.gap >= REGION_GAP
    assert region.share == 1 / 50 and region.excess == 15.0 and region.over_weighted
    labels = [f"x[{i}]" for i in range(20)]
    message = regions_message("CyclicalSGHMC: chain 0", [region], labels)
    assert "cycle(s) [7] of 50 along x[3]" in message and "exp(-15)" in message
    # Below log(49) = 3.9 nats above, the region may hold its share: found, not reported.
    levels[7] = 3.0
    (region,) = regions_apart(range(50), means, sds, levels)
    assert not region.over_weighted
    assert regions_message("chain 0", [region], labels) == ""


def test_two_cycles_apart_are_one_region_and_halves_are_none():
    rng = np.random.default_rng(2)
    means, sds, levels = cycles_of(rng)
    means[[4, 30], 0] -= 10.0
    levels[[4, 30]] += 20.0
    (region,) = regions_apart(range(50), means, sds, levels)
    assert region.cycles == [4, 30] and region.location < region.others[0]
    # Two modes holding half the cycles each: cycles in different modes, not a few apart.
    means[:25, 0] += 10.0
    assert regions_apart(range(50), means, sds, levels) == []


def test_too_few_cycles_or_no_spread_give_nothing():
    rng = np.random.default_rng(3)
    means, sds, levels = cycles_of(rng, cycles=MIN_REGION_CYCLES - 1)
    means[0, 0] += 50.0
    assert regions_apart(range(len(means)), means, sds, levels) == []
    means, sds, levels = cycles_of(rng)
    means[:, 1], sds[:, 1] = 0.0, 0.0  # a coordinate that never moves
    assert regions_apart(range(50), means, sds, levels) == []
    levels[0] = math.nan
    assert regions_apart(range(50), means, sds, levels) == []


def test_drift_check_keeps_each_cycle_with_its_number():
    check = DriftCheck()
    for cycle in (3, 4, 5):
        for i in range(4):
            check.add(cycle, torch.tensor([cycle + 0.0, float(i)]))
    cycles, means, sds = check.cycle_summaries()
    assert cycles == [3, 4, 5]
    assert torch.allclose(
        means, torch.tensor([[3.0, 1.5], [4.0, 1.5], [5.0, 1.5]], dtype=means.dtype)
    )
    assert torch.allclose(sds[:, 1], torch.full((3,), float(np.std([0, 1, 2, 3], ddof=1))).double())


def gaussian(params):
    return 0.5 * (params["x"] ** 2).sum()


@pytest.fixture(scope="module")
def gaussian_run():
    kernel = CyclicalSGLD(potential_fn=gaussian, steps_per_cycle=100, samples_per_cycle=4)
    kernel.initial_params = {"x": torch.zeros(3)}
    torch.manual_seed(0)
    mcmc = MCMC(kernel, num_samples=80, warmup_steps=0, disable_progbar=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplerWarning)  # nothing to say of a Gaussian
        mcmc.run()
    return kernel


def test_a_run_on_one_region_reports_none(gaussian_run):
    assert gaussian_run.hyperparameters()["region_check_flagged"] == ""


def test_the_kernel_reports_a_region_apart(gaussian_run):
    """The wiring, from the chain's cycles to the warning, the mark and the attrs: the run
    above with cycle 5's draws moved 40 sds away along x[0] and 8 nats up (above
    log(19), below the runaway check's 12 times sqrt(3 / 2)), as the time series' lone
    cycle was (the drift check rebuilt from the moved draws)."""
    run = gaussian_run._chains[0]
    stats = run.record.stats
    draws = run.record.flat.flatten
    cycles, energies = list(stats["cycle"]), list(stats["potential_energy"])
    check = DriftCheck(run.drift.exploring)
    samples = gaussian_run.get_samples()["x"]
    for i, cycle in enumerate(cycles):
        moved = samples[i] + torch.tensor([40.0 if cycle == 5 else 0.0, 0.0, 0.0])
        check.add(cycle, draws({"x": moved}))
        if cycle == 5:
            energies[i] += 8.0
    run.drift, stats["potential_energy"] = check, energies
    assert "cycles [5] along x[0]" in gaussian_run.hyperparameters()["region_check_flagged"]
    with pytest.warns(SamplerWarning, match=r"a region apart: cycle\(s\) \[5\] of 20"):
        run.report({key: list(values) for key, values in stats.items()}, gaussian_run)
    assert "region" in gaussian_run.hyperparameters()["sampler_warnings"]
