"""ArviZ conversion: full data, chunked log-likelihood, cycle grouping, diagnostics, plots."""

import logging
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from arviz_line import ARVIZ_1, az, elpd, group, group_names
from log_likelihood import PeakTensorBytes  # benchmarks/: the benchmark's own instrument
from models import (
    bimodal,
    logistic_regression,
    logistic_regression_data,
    standard_normal,
)
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_sample

from pyro_csg import (
    CyclicalSGHMC,
    CyclicalSGLD,
    cycle_summary,
    merge_runs,
    plot_cycles,
    plot_schedule,
    to_inference_data,
)
from pyro_csg.adapter.likelihood import FullData
from pyro_csg.analysis.arviz import ess_per_cycle

N, D, B = 300, 3, 30
CYCLES, PER_CYCLE = 5, 4

logging.getLogger("arviz").setLevel(logging.ERROR)  # shape warnings on short chains


@pytest.fixture(scope="module")
def data():
    return logistic_regression_data(n=N, d=D)


def make_kernel(**overrides):
    settings = dict(
        step_size=0.5 / N,
        steps_per_cycle=100,
        samples_per_cycle=PER_CYCLE,
        friction=0.5,
    )
    settings.update(overrides)
    return CyclicalSGHMC(logistic_regression, **settings)


def run(data, num_chains=1, kernel=None, num_samples=CYCLES * PER_CYCLE, **kwargs):
    pyro.set_rng_seed(0)
    mcmc = MCMC(
        kernel or make_kernel(),
        num_samples=num_samples,
        warmup_steps=kwargs.pop("warmup_steps", 0),
        num_chains=num_chains,
        disable_progbar=True,
        **kwargs,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Chains will be drawn sequentially" on 2 cores
        mcmc.run(*data, subsample_size=B)
    return mcmc


@pytest.fixture(scope="module")
def mcmc(data):
    return run(data)


@pytest.fixture(scope="module")
def idata(mcmc):
    return to_inference_data(mcmc)


def full_data_log_likelihood(x, y, w, b):
    """log p(y_i | w, b) for every i, straight from the formula."""
    logits = x.double() @ w.double() + b.double()
    return (y.double() * logits - torch.nn.functional.softplus(logits)).numpy()


# -- the groups -----------------------------------------------------------------------------
def test_groups_and_shapes(idata):
    groups = {"posterior", "sample_stats", "log_likelihood", "observed_data"}
    assert set(group_names(idata)) == groups
    assert idata.posterior["w"].shape == (1, CYCLES * PER_CYCLE, D)
    assert idata.posterior["b"].shape == (1, CYCLES * PER_CYCLE)
    assert idata.log_likelihood["y"].shape == (1, CYCLES * PER_CYCLE, N)


def test_observed_data_is_the_full_data_not_a_minibatch(idata, data):
    _, y = data
    observed = idata.observed_data["y"].values
    assert observed.shape == (N,)
    np.testing.assert_array_equal(observed, y.numpy())


def test_log_likelihood_matches_an_independent_full_data_computation(idata, mcmc, data):
    x, y = data
    samples = mcmc.get_samples()
    for draw in (0, 7, CYCLES * PER_CYCLE - 1):
        expected = full_data_log_likelihood(x, y, samples["w"][draw], samples["b"][draw])
        got = idata.log_likelihood["y"].values[0, draw]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_posterior_draws_are_the_constrained_samples(idata, mcmc):
    np.testing.assert_array_equal(idata.posterior["w"].values[0], mcmc.get_samples()["w"].numpy())


def test_sample_stats_per_draw(idata, mcmc):
    stats = idata.sample_stats
    kernel = mcmc.kernel
    cycles = np.repeat(np.arange(CYCLES), PER_CYCLE)
    np.testing.assert_array_equal(stats["cycle"].values[0], cycles)
    expected_iterations = [kernel.layout.retained_iteration(n) for n in range(CYCLES * PER_CYCLE)]
    np.testing.assert_array_equal(stats["iteration"].values[0], expected_iterations)
    np.testing.assert_allclose(
        stats["step_size"].values[0], [kernel.schedule(k) for k in expected_iterations]
    )
    energies = mcmc.diagnostics()["potential_energy"]["chain 0"]
    np.testing.assert_allclose(stats["lp"].values[0], -np.asarray(energies))
    assert (stats["temperature"].values == 1.0).all()
    assert stats["diverging"].dtype == bool and not stats["diverging"].values.any()
    # The per-draw coordinates on the posterior.
    np.testing.assert_array_equal(idata.posterior["cycle"].values, cycles)
    np.testing.assert_array_equal(idata.posterior["iteration"].values, expected_iterations)


def test_attrs_name_the_sampler_and_versions(idata):
    attrs = idata.posterior.attrs
    assert attrs["sampler"] == "CyclicalSGHMC"
    assert attrs["steps_per_cycle"] == 100 and attrs["samples_per_cycle"] == PER_CYCLE
    assert attrs["exploration_fraction"] == 0.5 and attrs["friction"] == 0.5
    assert attrs["temperature"] == 1.0 and attrs["step_size"] == pytest.approx(0.5 / N)
    assert attrs["schedule"].startswith("CosineCyclical(")
    assert attrs["pyro_csg_version"] and attrs["torch_version"] == torch.__version__
    assert attrs["inference_library_version"] == pyro.__version__
    assert attrs["group_by"] == "chain"


def test_arviz_functions_run_and_loo_is_finite(idata, two_chains):
    summary = az.summary(idata)
    assert {"w[0]", "w[1]", "w[2]", "b"} <= set(summary.index)
    assert np.isfinite(az.ess(idata)["b"].values)
    assert np.isfinite(az.rhat(to_inference_data(two_chains))["b"].values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k warnings on 20 draws
        # two chains: ArviZ 1.x's PSIS needs at least 25 draws (a tail of 5)
        loo = az.loo(to_inference_data(two_chains))
        if not ARVIZ_1:  # 1.x has no WAIC
            assert np.isfinite(az.waic(idata).elpd_waic)
    assert np.isfinite(elpd(loo))
    assert loo.n_data_points == N
    # About N * (mean log-likelihood of a fitted logistic regression): far from 0.
    assert -0.8 * N < elpd(loo) < -0.2 * N


def test_netcdf_round_trip(idata, tmp_path):
    path = tmp_path / "run.nc"
    idata.to_netcdf(str(path))
    loaded = az.from_netcdf(str(path))
    assert set(group_names(loaded)) == set(group_names(idata))
    for name in group_names(idata):
        original, reloaded = group(idata, name), group(loaded, name)
        assert set(original.data_vars) == set(reloaded.data_vars)
        for name in original.data_vars:
            np.testing.assert_array_equal(reloaded[name].values, original[name].values)
        for name in original.coords:
            np.testing.assert_array_equal(reloaded[name].values, original[name].values)
        assert set(reloaded.attrs) == set(original.attrs)
        for key, value in original.attrs.items():  # netCDF gives lists back as arrays
            np.testing.assert_array_equal(reloaded.attrs[key], value)


def test_coords_and_dims_are_honoured(mcmc):
    idata = to_inference_data(
        mcmc,
        coords={"feature": ["age", "dose", "weight"], "patient": np.arange(N)},
        dims={"w": ["feature"], "y": ["patient"]},
    )
    assert idata.posterior["w"].dims == ("chain", "draw", "feature")
    assert list(idata.posterior["feature"].values) == ["age", "dose", "weight"]
    assert idata.observed_data["y"].dims == ("patient",)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "patient")


def test_log_likelihood_false_skips_the_group(mcmc):
    idata = to_inference_data(mcmc, log_likelihood=False)
    assert "log_likelihood" not in group_names(idata)
    assert "observed_data" in group_names(idata)


# -- chains and cycles ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_chains(data):
    return run(data, num_chains=2)


def test_two_chains_convert_with_the_right_shapes(two_chains):
    idata = to_inference_data(two_chains)
    assert idata.posterior["w"].shape == (2, CYCLES * PER_CYCLE, D)
    assert idata.sample_stats["lp"].shape == (2, CYCLES * PER_CYCLE)
    assert idata.log_likelihood["y"].shape == (2, CYCLES * PER_CYCLE, N)
    samples = two_chains.get_samples(group_by_chain=True)
    np.testing.assert_array_equal(idata.posterior["w"].values, samples["w"].numpy())
    assert not np.array_equal(idata.posterior["w"].values[0], idata.posterior["w"].values[1])


def test_group_by_cycle_regroups_the_same_draws(two_chains):
    by_chain = to_inference_data(two_chains)
    by_cycle = to_inference_data(two_chains, group_by="cycle")
    w = by_cycle.posterior["w"]
    assert w.shape == (2 * CYCLES, PER_CYCLE, D)
    np.testing.assert_array_equal(
        w.values, by_chain.posterior["w"].values.reshape(2 * CYCLES, PER_CYCLE, D)
    )
    np.testing.assert_array_equal(by_cycle.posterior["cycle"].values, np.tile(range(CYCLES), 2))
    np.testing.assert_array_equal(
        by_cycle.posterior["mcmc_chain"].values, np.repeat([0, 1], CYCLES)
    )
    np.testing.assert_array_equal(
        by_cycle.log_likelihood["y"].values,
        by_chain.log_likelihood["y"].values.reshape(2 * CYCLES, PER_CYCLE, N),
    )
    stats_cycles = by_cycle.sample_stats["cycle"].values
    assert (stats_cycles == stats_cycles[:, :1]).all()  # one cycle per ArviZ chain
    assert by_cycle.posterior.attrs["group_by"] == "cycle"


def test_group_by_cycle_leaves_out_incomplete_cycles(data):
    # 2 warm-up draws: the first kept cycle has only 2 of its 4 draws.
    mcmc = run(data, num_samples=10, warmup_steps=2)
    with pytest.warns(UserWarning, match=r"cycle\(s\) \[0\] have fewer"):
        idata = to_inference_data(mcmc, group_by="cycle")
    assert idata.posterior["b"].shape == (2, PER_CYCLE)
    np.testing.assert_array_equal(idata.posterior["cycle"].values, [1, 2])


def run_cycles(model, seed, **settings):
    pyro.set_rng_seed(seed)
    kernel = CyclicalSGLD(model, init_strategy=init_to_sample, **settings)
    mcmc = MCMC(
        kernel, num_samples=30 * settings["samples_per_cycle"], warmup_steps=0, disable_progbar=True
    )
    mcmc.run()
    return to_inference_data(mcmc, group_by="cycle")


def test_between_cycle_rhat_is_large_when_cycles_find_different_modes():
    # Noise on throughout (exploration_fraction 0.25 of noiseless steps only): the large
    # early steps hop between the modes, the small late ones settle in one. Seeds 0-5
    # gave R-hat 1.41 to 1.65 and 37% to 67% of the cycles at the positive mode.
    idata = run_cycles(
        bimodal,
        0,
        step_size=0.45,
        steps_per_cycle=400,
        exploration_fraction=0.25,
        samples_per_cycle=8,
    )
    cycle_means = idata.posterior["x"].mean("draw").values
    assert (cycle_means > 1).any() and (cycle_means < -1).any()  # both modes visited
    assert float(az.rhat(idata)["x"]) > 1.3
    table = cycle_summary(idata)
    assert table["r_hat_between"].iloc[0] == pytest.approx(float(az.rhat(idata)["x"]))


def test_between_cycle_rhat_is_small_on_a_unimodal_target_with_long_cycles():
    # Seeds 0-5 gave at most 1.061. ArviZ's R-hat of 30 iid chains of 10 draws exceeds
    # 1.07 in 1% of cases, so 1.1 leaves room for sampling noise, not for a bias.
    idata = run_cycles(
        standard_normal,
        0,
        step_size=1.5,
        steps_per_cycle=2000,
        exploration_fraction=0.5,
        samples_per_cycle=10,
    )
    assert (az.rhat(idata)["x"].values < 1.1).all()


def test_cycle_summary_rows_and_values(two_chains):
    idata = to_inference_data(two_chains)
    table = cycle_summary(idata, var_names=["w"])
    assert list(table.columns) == [
        "mean",
        "sd",
        "ess",
        "r_hat_between",
        "noise_ratio",
        "separation",
        "alarm",
    ]
    assert len(table) == D * 2 * CYCLES
    row = table.loc[("w[1]", 1, 3)]
    draws = idata.posterior["w"].values[1, 3 * PER_CYCLE : 4 * PER_CYCLE, 1]
    assert row["mean"] == pytest.approx(draws.mean())
    assert row["sd"] == pytest.approx(draws.std(ddof=1))
    cycles_of_w1 = idata.posterior["w"].values[:, :, 1].reshape(2 * CYCLES, PER_CYCLE)
    assert row["ess"] == pytest.approx(ess_per_cycle(cycles_of_w1))
    assert 1.0 <= row["ess"] <= PER_CYCLE
    rhat = az.rhat(to_inference_data(two_chains, group_by="cycle"))["w"].values[1]
    np.testing.assert_allclose(table.xs("w[1]")["r_hat_between"], rhat)
    ratios = idata.sample_stats["noise_ratio"].values[1, 3 * PER_CYCLE : 4 * PER_CYCLE]
    assert row["noise_ratio"] == pytest.approx(ratios.max()) and ratios.max() > 0
    # Both groupings give the same table.
    other = cycle_summary(to_inference_data(two_chains, group_by="cycle"), var_names=["w"])
    np.testing.assert_allclose(other.astype(float).values, table.astype(float).values)
    with pytest.raises(ValueError, match="not in the posterior"):
        cycle_summary(idata, var_names=["nope"])


# -- chunked log-likelihood and its memory --------------------------------------------------
def wide_model(x, y):
    """A likelihood that keeps a (B, D, D) intermediate per minibatch: 4 * D**2 bytes a datum."""
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", x.shape[0], subsample_size=50) as idx:
        hidden = torch.tanh(x[idx].unsqueeze(-1) * w)
        pyro.sample("obs", dist.Bernoulli(logits=hidden.sum((-1, -2))), obs=y[idx])


def test_chunked_log_likelihood_equals_unchunked_and_bounds_memory():
    n, d, num_draws = 5010, 8, 100  # 5010: the last window overlaps its neighbour
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=generator)
    y = torch.bernoulli(torch.full((n,), 0.5), generator=generator)
    draws = {"w": torch.randn(num_draws, d, generator=generator)}
    full = FullData(wide_model, (x, y), {})
    full.log_likelihood({"w": draws["w"][:2]})  # trace once, outside the measurement
    assert full.vectorized_reason is None

    peaks, results = {}, {}
    for chunk_size in (num_draws * n, 5_000):
        mode = PeakTensorBytes()
        with mode:
            results[chunk_size] = full.log_likelihood(draws, chunk_size=chunk_size)["obs"]
        peaks[chunk_size] = mode.peak
    np.testing.assert_allclose(results[5_000], results[num_draws * n], rtol=1e-6, atol=1e-6)
    expected = np.stack(
        [
            torch.distributions.Bernoulli(logits=torch.tanh(x.unsqueeze(-1) * w).sum((-1, -2)))
            .log_prob(y)
            .numpy()
            for w in draws["w"]
        ]
    )
    np.testing.assert_allclose(results[5_000], expected, rtol=1e-5, atol=1e-5)
    # All pairs at once: 501,000 pairs * 256 bytes = 128 MB of (B, D, D) intermediate.
    # In chunks of 5,000 pairs that intermediate is 1.3 MB; measured peak 2.6 MB, bound 4x.
    per_pair = 4 * d * d
    assert peaks[num_draws * n] > 0.9 * num_draws * n * per_pair
    assert peaks[5_000] < 4 * 5_000 * per_pair


def test_eager_log_likelihood_for_models_that_cannot_be_traced(data):
    x, y = data

    def untraceable(x, y=None, subsample_size=None):
        w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        if float(b) > 100.0:  # Python control flow on a latent
            b = b * 0
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
            pyro.sample("y", dist.Bernoulli(logits=x[idx] @ w + b), obs=y[idx])

    full = FullData(untraceable, (x, y), {"subsample_size": B})
    draws = {"w": torch.randn(3, D), "b": torch.randn(3)}
    with pytest.warns(UserWarning, match="one draw and one minibatch at a time"):
        got = full.log_likelihood(draws)["y"]
    assert full.vectorized_reason.startswith("tracing the model failed")
    for i in range(3):
        expected = full_data_log_likelihood(x, y, draws["w"][i], draws["b"][i])
        np.testing.assert_allclose(got[i], expected, rtol=1e-5, atol=1e-5)


def test_masked_and_global_observed_sites():
    y = torch.arange(10.0)
    mask = torch.arange(10) % 3 != 0

    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        pyro.sample("anchor", dist.Normal(mu, 1.0), obs=torch.tensor(2.0))
        with pyro.plate("data", len(y), subsample_size=4) as idx:
            with pyro.poutine.mask(mask=mask[idx]):
                pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])

    full = FullData(model, (y,), {})
    mu = torch.tensor([0.0, 1.5])
    result = full.log_likelihood({"mu": mu})
    expected = dist.Normal(mu[:, None], 1.0).log_prob(y) * mask
    np.testing.assert_allclose(result["obs"], expected.numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        result["anchor"], dist.Normal(mu, 1.0).log_prob(torch.tensor(2.0)).numpy()
    )
    observed = full.observed_data({"mu": torch.tensor(0.0)})
    np.testing.assert_array_equal(observed["obs"], y.numpy())
    assert float(observed["anchor"]) == 2.0


# -- errors and az.from_pyro ----------------------------------------------------------------
@pytest.mark.skipif(ARVIZ_1, reason="ArviZ 1.x has no from_pyro")
def test_az_from_pyro_fails_with_a_pointer_to_to_inference_data(mcmc):
    with pytest.raises(TypeError, match=r"pyro_csg.to_inference_data\(mcmc\)"):
        az.from_pyro(mcmc)


def test_mcmc_summary_still_works(mcmc, capsys):
    mcmc.summary()
    assert "Number of divergences: 0" in capsys.readouterr().out


def test_errors_name_what_is_wrong(data, mcmc):
    x, y = data
    with pytest.raises(ValueError, match="group_by must be 'chain' or 'cycle'"):
        to_inference_data(mcmc, group_by="draw")
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        to_inference_data(mcmc, chunk_size=0)
    with pytest.raises(ValueError, match="call mcmc.run"):
        to_inference_data(MCMC(make_kernel(), num_samples=4))
    nuts = MCMC(NUTS(logistic_regression), num_samples=2, warmup_steps=2, disable_progbar=True)
    nuts.run(x, y)
    with pytest.raises(TypeError, match="CyclicalSGLD or CyclicalSGHMC kernel.*NUTS"):
        to_inference_data(nuts)


def test_potential_fn_runs_convert_without_log_likelihood():
    kernel = CyclicalSGLD(
        potential_fn=lambda p: 0.5 * (p["z"] ** 2).sum(), step_size=0.1, steps_per_cycle=20
    )
    mcmc = MCMC(
        kernel,
        num_samples=8,
        warmup_steps=0,
        disable_progbar=True,
        initial_params={"z": torch.zeros(2)},
    )
    mcmc.run()
    with pytest.raises(ValueError, match="pass log_likelihood=False"):
        to_inference_data(mcmc, log_likelihood=True)
    idata = to_inference_data(mcmc)  # by default: the log-likelihood when there is a model
    assert set(group_names(idata)) == {"posterior", "sample_stats"}
    assert idata.posterior["z"].shape == (1, 8, 2)


# -- plots -----------------------------------------------------------------------------------
def test_plot_schedule_draws_stages_and_retained_draws():
    from matplotlib.collections import PathCollection
    from matplotlib.patches import Rectangle

    kernel = make_kernel(steps_per_cycle=60, exploration_fraction=0.5, samples_per_cycle=3)
    ax = plot_schedule(kernel, num_cycles=5)
    shaded = [patch for patch in ax.patches if isinstance(patch, Rectangle)]
    assert len(shaded) == 2 * 5  # an exploration and a sampling span per cycle
    markers = [c for c in ax.collections if isinstance(c, PathCollection)]
    offsets = markers[0].get_offsets()
    assert len(offsets) == 5 * 3
    expected = [kernel.layout.retained_iteration(n) for n in range(15)]
    np.testing.assert_array_equal(offsets[:, 0], expected)
    # Ticks in a strip along the bottom (axes coordinates), under the curve, not on it;
    # the legend sits below the axes, off the data.
    heights = markers[0].get_offset_transform().transform(offsets)[:, 1]
    bottom, top = ax.transAxes.transform([[0, 0], [0, 0.1]])[:, 1]
    assert ((heights > bottom) & (heights < top)).all()
    legend_box = ax.get_legend().get_window_extent(ax.figure.canvas.get_renderer())
    assert legend_box.y1 <= ax.get_window_extent().y0
    (line,) = ax.lines
    assert len(line.get_xdata()) == 5 * 60
    # Spans cover the stages: the first sampling span starts after 30 exploration steps.
    spans = sorted((p.get_x(), p.get_x() + p.get_width()) for p in shaded)
    assert spans[0] == pytest.approx((0.5, 30.5)) and spans[1] == pytest.approx((30.5, 60.5))


def test_plot_schedule_of_a_bare_schedule_and_bad_input():
    from pyro_csg.core.schedules import CosineCyclical, CycleLayout, PolynomialDecay

    ax = plot_schedule(CosineCyclical(0.1, 50), num_cycles=3)
    assert len(ax.patches) == 0 and len(ax.lines[0].get_xdata()) == 150
    ax = plot_schedule(PolynomialDecay(0.1), num_cycles=2, layout=CycleLayout(100, 0.0, 2))
    assert len(ax.patches) == 2  # sampling stages only: no exploration stage
    with pytest.raises(ValueError, match="needs the cycle length"):
        plot_schedule(PolynomialDecay(0.1), num_cycles=2)
    with pytest.raises(ValueError, match="num_cycles must be an integer >= 1"):
        plot_schedule(CosineCyclical(0.1, 50), num_cycles=0)


def test_plot_cycles_colours_draws_by_cycle(two_chains):
    for group_by in ("chain", "cycle"):
        idata = to_inference_data(two_chains, group_by=group_by, log_likelihood=False)
        axes = plot_cycles(idata, var_names=["w", "b"])
        assert [ax.get_title() for ax in axes] == ["w[0]", "w[1]", "w[2]", "b"]
        for ax in axes:
            points = sum(len(c.get_offsets()) for c in ax.collections)
            assert points == 2 * CYCLES * PER_CYCLE
            colours = np.concatenate([c.get_array() for c in ax.collections])
            np.testing.assert_array_equal(
                np.sort(colours), np.sort(np.tile(np.repeat(np.arange(CYCLES), PER_CYCLE), 2))
            )
        import matplotlib.pyplot as plt

        plt.close("all")


def test_arviz_plots_run_on_both_groupings(two_chains):
    import matplotlib.pyplot as plt

    for group_by in ("chain", "cycle"):
        idata = to_inference_data(two_chains, group_by=group_by)
        figure = az.plot_trace(idata, var_names=["b"])
        if ARVIZ_1:  # arviz_plots: a PlotCollection, one trace line per chain
            assert figure.viz["trace"]["b"].sizes["chain"] == idata.posterior.sizes["chain"]
        else:
            assert figure.shape == (1, 2)
        az.plot_rank(idata, var_names=["b"])
        summary = az.summary(idata, var_names=["b"])
        assert np.isfinite(summary.loc["b", "r_hat"])
        plt.close("all")


# -- the shapes users' models have ----------------------------------------------------------
def test_pyromodule_classifier_log_likelihood_is_vectorised_and_exact():
    from models import make_bnn

    torch.manual_seed(0)
    n, d, c = 130, 5, 3
    x, y = torch.randn(n, d), torch.randint(0, c, (n,))
    net = make_bnn(d=d, h=8, c=c)
    kernel = CyclicalSGHMC(net, step_size=0.1 / n, steps_per_cycle=40, samples_per_cycle=4)
    pyro.set_rng_seed(0)
    mcmc = MCMC(kernel, num_samples=8, warmup_steps=0, disable_progbar=True)
    mcmc.run(x, y, subsample_size=20)
    idata = to_inference_data(mcmc)
    np.testing.assert_array_equal(idata.observed_data["obs"].values, y.numpy())
    samples = mcmc.get_samples()
    for draw in (0, 7):
        hidden = torch.tanh(x @ samples["fc1.weight"][draw].T + samples["fc1.bias"][draw])
        logits = hidden @ samples["fc2.weight"][draw].T + samples["fc2.bias"][draw]
        expected = torch.log_softmax(logits, -1)[torch.arange(n), y]
        np.testing.assert_allclose(
            idata.log_likelihood["obs"].values[0, draw], expected.numpy(), rtol=1e-5, atol=1e-5
        )


def test_event_dims_and_an_inner_plate():
    """An observed vector per datum, and a (data, feature) grid with the data plate at -2."""
    n, k = 23, 3
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(n, k, generator=generator)
    grid = torch.randn(n, k, generator=generator)

    def model(vectors, grid):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(k), 1.0).to_event(1))
        with pyro.plate("data", n, subsample_size=5, dim=-2) as idx:
            pyro.sample(
                "vector",
                dist.MultivariateNormal(mu, torch.eye(k)).expand([5, 1]),
                obs=vectors[idx].unsqueeze(-2),
            )
            with pyro.plate("features", k, dim=-1):
                pyro.sample("cell", dist.Normal(mu, 1.0), obs=grid[idx])

    full = FullData(model, (vectors, grid), {})
    mu = torch.randn(4, k, generator=generator)
    result = full.log_likelihood({"mu": mu})
    observed = full.observed_data({"mu": mu[0]})
    assert full.vectorized_reason is None
    np.testing.assert_array_equal(observed["cell"], grid.numpy())
    np.testing.assert_array_equal(observed["vector"][:, 0], vectors.numpy())
    assert result["cell"].shape == (4, n, k) and result["vector"].shape == (4, n, 1)
    expected_cell = dist.Normal(mu[:, None, :], 1.0).log_prob(grid)
    np.testing.assert_allclose(result["cell"], expected_cell.numpy(), rtol=1e-5, atol=1e-6)
    expected_vector = dist.MultivariateNormal(mu[:, None, :], torch.eye(k)).log_prob(vectors)
    np.testing.assert_allclose(result["vector"][..., 0], expected_vector.numpy(), rtol=1e-5)


def test_save_params_subset_refuses_the_log_likelihood(data):
    # Without b's draws, the model would sample b from its prior: a silently wrong answer.
    mcmc = run(data, num_samples=8, save_params=["w"])
    with pytest.raises(ValueError, match=r"latent site\(s\) \[.b.\].*log_likelihood=False"):
        to_inference_data(mcmc)
    idata = to_inference_data(mcmc, log_likelihood=False)
    assert list(idata.posterior.data_vars) == ["w"]
    np.testing.assert_array_equal(idata.observed_data["y"].values, data[1].numpy())


def test_vectorize_false_and_a_new_draw_layout_give_the_same_numbers(data):
    x, y = data
    draws = {"w": torch.randn(5, D), "b": torch.randn(5)}
    vectorised = FullData(logistic_regression, (x, y), {"subsample_size": B})
    eager = FullData(logistic_regression, (x, y), {"subsample_size": B}, vectorize=False)
    first = vectorised.log_likelihood(draws)["y"]
    assert vectorised.vectorized_reason is None and eager.vectorized_reason == "vectorize=False"
    np.testing.assert_allclose(eager.log_likelihood(draws)["y"], first, rtol=1e-5, atol=1e-6)
    # Another set of names (an extra, unused entry) changes the flat layout: traced anew.
    again = vectorised.log_likelihood({**draws, "extra": torch.zeros(5, 2)})["y"]
    np.testing.assert_allclose(again, first, rtol=1e-6)


def test_a_model_without_a_subsampled_plate_is_vectorised_over_draws(data):
    # A full-gradient run: no minibatch index to map over, only the draws.
    x, y = data
    draws = {"w": torch.randn(7, D), "b": torch.randn(7)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the eager fallback would warn
        vectorised = FullData(logistic_regression, (x, y), {})
        fast = vectorised.log_likelihood(draws, chunk_size=3 * N)["y"]
    assert vectorised.vectorized_reason is None and fast.shape == (7, N)
    eager = FullData(logistic_regression, (x, y), {}, vectorize=False).log_likelihood(draws)["y"]
    np.testing.assert_allclose(fast, eager, rtol=1e-5, atol=1e-6)
    # Through a run and to_inference_data, without a warning either.
    kernel = CyclicalSGLD(logistic_regression, step_size=1e-3, steps_per_cycle=20)
    mcmc = MCMC(kernel, num_samples=8, warmup_steps=0, disable_progbar=True)
    mcmc.run(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        idata = to_inference_data(mcmc)
    assert idata.log_likelihood["y"].shape == (1, 8, N)


# -- merge_runs: chains from separate runs (processes, jobs, machines) ---------------------
def seeded_run(data, seed, num_samples=CYCLES * PER_CYCLE, **overrides):
    pyro.set_rng_seed(seed)
    mcmc = MCMC(
        make_kernel(**overrides), num_samples=num_samples, warmup_steps=0, disable_progbar=True
    )
    mcmc.run(*data, subsample_size=B)
    return mcmc


@pytest.fixture(scope="module")
def separate_runs(data, tmp_path_factory):
    """Seed 0 in memory, seed 1 to a run folder (as another process would write it)."""
    folder = tmp_path_factory.mktemp("merge") / "seed1"
    return seeded_run(data, 0), seeded_run(data, 1, checkpoint=str(folder)), folder


def test_merge_runs_makes_the_runs_chains_of_one_inference_data(separate_runs, data):
    first, second, folder = separate_runs
    idata = merge_runs(
        [first, folder],
        model=logistic_regression,
        model_args=data,
        model_kwargs={"subsample_size": B},
    )
    assert idata.posterior["w"].shape == (2, CYCLES * PER_CYCLE, D)
    np.testing.assert_array_equal(idata.posterior["w"].values[0], first.get_samples()["w"])
    np.testing.assert_allclose(idata.posterior["w"].values[1], second.get_samples()["w"])
    alone = to_inference_data(second)
    np.testing.assert_allclose(
        idata.log_likelihood["y"].values[1], alone.log_likelihood["y"].values[0], rtol=1e-5
    )
    np.testing.assert_array_equal(
        idata.sample_stats["cycle"].values[1], alone.sample_stats["cycle"].values[0]
    )
    assert idata.posterior.attrs["merged_runs"] == 2
    assert np.isfinite(elpd(az.loo(idata)))
    assert az.rhat(idata)["w"].shape == (D,)
    by_cycle = merge_runs([first, second], group_by="cycle")
    assert by_cycle.posterior["w"].shape == (2 * CYCLES, PER_CYCLE, D)
    assert by_cycle.posterior["mcmc_chain"].values.tolist() == [0] * CYCLES + [1] * CYCLES


def test_merge_runs_refuses_runs_of_other_settings_or_data(separate_runs, data):
    first, _, _ = separate_runs
    other_schedule = seeded_run(data, 2, num_samples=PER_CYCLE, steps_per_cycle=50)
    with pytest.raises(ValueError, match=r"runs\[1\].*steps_per_cycle 50.*runs\[0\] has 100"):
        merge_runs([first, other_schedule])
    x, y = data
    other_data = seeded_run((x, 1 - y), 3, num_samples=PER_CYCLE)
    with pytest.raises(ValueError, match=r"runs\[1\].*has data"):
        merge_runs([first, other_data])
    with pytest.raises(TypeError, match="runs must be a non-empty list"):
        merge_runs(first)


def test_merge_runs_cuts_runs_to_the_shortest_with_a_warning(separate_runs, data):
    first, _, _ = separate_runs
    short = seeded_run(data, 4, num_samples=2 * PER_CYCLE)
    with pytest.warns(UserWarning, match=r"\[20, 8\] draws per chain.*shortest, 8"):
        idata = merge_runs([first, short], log_likelihood=False)
    assert idata.posterior["w"].shape == (2, 2 * PER_CYCLE, D)


def test_plot_cycle_diagnostics_draws_cycle_means_and_the_noise(two_chains):
    import matplotlib

    matplotlib.use("Agg")
    from pyro_csg import plot_cycle_diagnostics

    for group_by in ("chain", "cycle"):
        idata = to_inference_data(two_chains, group_by=group_by, log_likelihood=False)
        axes = plot_cycle_diagnostics(idata)
        titles = ["b", *(f"w[{i}]" for i in range(D)), "noise_ratio"]
        assert [ax.get_title().split(":")[0] for ax in axes] == titles
        assert all(ax.get_title().endswith("(no alarm)") for ax in axes[:-1])
        first = axes[1]
        means = [line for line in first.containers]  # one error-bar container per chain
        assert len(means) == 2
        assert len(means[0].lines[0].get_xdata()) == CYCLES
        noise = axes[-1]
        assert noise.get_title() == "noise_ratio" and len(noise.collections[0].get_offsets())


def test_the_analysis_given_the_mcmc_itself_says_how_to_convert(mcmc):
    from pyro_csg import cycle_diagnostic, mode_census, plot_cycle_diagnostics

    for analysis in (
        cycle_diagnostic,
        cycle_summary,
        mode_census,
        plot_cycles,
        plot_cycle_diagnostics,
    ):
        with pytest.raises(TypeError, match=r"got the MCMC itself.*to_inference_data\(mcmc\)"):
            analysis(mcmc)
