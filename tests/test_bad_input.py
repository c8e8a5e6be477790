"""Issue 10's cases: every bad or awkward input either works or is refused early with a
message that names the argument or the site; none gives a silent wrong answer."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from arviz_line import az, elpd, group_names
from models import linear_regression, linear_regression_data, linear_regression_posterior
from pyro.infer import MCMC
from pyro.infer.mcmc.api import StreamingMCMC

from pyro_csg import CyclicalSGHMC, CyclicalSGLD, ModelError, SamplerWarning, to_inference_data

N, B = 400, 20
SETTINGS = dict(step_size=1e-3, steps_per_cycle=40, samples_per_cycle=2)


def run(model, *args, kernel_class=CyclicalSGLD, num_samples=4, runner=MCMC, **settings):
    kernel = kernel_class(model, **{**SETTINGS, **settings})
    mcmc = runner(kernel, num_samples=num_samples, warmup_steps=0, disable_progbar=True)
    mcmc.run(*args)
    return mcmc


@pytest.fixture(scope="module")
def data():
    return linear_regression_data(n=N, d=2)


# -- plates ---------------------------------------------------------------------------------
def fixed_rows(x, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0], subsample=torch.arange(B)) as idx:
        pyro.sample("obs", dist.Normal(x[idx] @ w, 1.0), obs=y[idx])


def test_a_plate_given_fixed_subsample_indices_is_refused(data):
    """Pyro scales such a plate by N / B but nothing feeds it: the sampler would fit B
    rows weighted as N (posterior mean 5.01 where the full data says 0.47)."""
    with pytest.raises(ModelError, match=r"plate 'data' is given subsample= \(20 fixed indices"):
        run(fixed_rows, *data)


@pytest.mark.parametrize("size", [0, -1, N + 1])
def test_a_subsample_size_outside_one_to_n_names_the_plate(data, size):
    with pytest.raises(ModelError, match=rf"plate 'data' has subsample_size={size}: .* 1 to"):
        run(linear_regression, *data, size)


# -- sites that are not data ------------------------------------------------------------------
def with_deterministic_and_factors(x, y, subsample_size=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    pyro.deterministic("w_norm", w.norm())
    pyro.factor("shrink", -0.5 * (w**2).sum())  # outside the data plate: the prior
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        mean = pyro.deterministic("mean", x[idx] @ w)  # inside the subsampled plate
        pyro.sample("obs", dist.Normal(mean, 1.0), obs=y[idx])


def factor_likelihood(x, y, subsample_size=None):
    """A hand-written likelihood: pyro.factor inside the data plate."""
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        pyro.factor("loglik", dist.Normal(x[idx] @ w, 1.0).log_prob(y[idx]))


def test_deterministic_sites_are_never_data_and_a_prior_factor_is_not_likelihood(data):
    mcmc = run(with_deterministic_and_factors, *data, B, num_samples=32)  # 25+ for PSIS
    idata = to_inference_data(mcmc)
    assert list(idata.observed_data.data_vars) == ["obs"]
    assert list(idata.log_likelihood.data_vars) == ["obs"]
    assert idata.observed_data["obs"].shape == (N,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k of a tiny run
        assert np.isfinite(elpd(az.loo(idata)))  # no "several log likelihood arrays"
    assert "observed_data" in group_names(to_inference_data(mcmc, log_likelihood=False))


def test_a_factor_inside_the_data_plate_is_the_likelihood(data):
    x, y = data
    mcmc = run(factor_likelihood, x, y, B, num_samples=32)
    idata = to_inference_data(mcmc)
    assert "observed_data" not in group_names(idata)  # a factor has no data to show
    assert list(idata.log_likelihood.data_vars) == ["loglik"]
    w = mcmc.get_samples()["w"]
    expected = dist.Normal(w @ x.T, 1.0).log_prob(y).numpy()
    np.testing.assert_allclose(idata.log_likelihood["loglik"].values[0], expected, rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(elpd(az.loo(idata)))


def test_log_likelihood_true_on_a_model_that_observes_nothing_says_so():
    def prior_only():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    mcmc = run(prior_only)
    with pytest.raises(ValueError, match="log_likelihood=True, but the model observes nothing"):
        to_inference_data(mcmc, log_likelihood=True)
    assert "log_likelihood" not in group_names(to_inference_data(mcmc))


# -- data, parameters and arguments ---------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_data_names_the_argument_before_any_step(data, bad):
    x, y = data
    y = y.clone()
    y[17] = bad
    with pytest.raises(ModelError, match=r"argument 'y' has 1 NaN or infinite .* index \[17\]"):
        run(linear_regression, x, y, B)
    x = x.clone()
    x[3, 1] = bad
    with pytest.raises(ModelError, match=r"argument 'x' has 1 NaN .* index \[3, 1\]"):
        run(linear_regression, x, data[1], B)


def test_finite_data_whose_sum_overflows_is_not_refused():
    # The check sums the data first: an overflowing sum must lead to the element-wise
    # look, not to a refusal, and a NaN beside the overflow is still named.
    from pyro_csg.adapter.potential import _check_finite_data

    def model(y):
        pass

    y = torch.full((8,), 6e4, dtype=torch.float16)
    assert torch.isinf(y.sum())
    _check_finite_data(model, (y,), {})
    y[5] = float("nan")
    with pytest.raises(ModelError, match=r"argument 'y' has 1 NaN or infinite .* index \[5\]"):
        _check_finite_data(model, (y,), {})


def test_data_on_the_meta_device_is_refused_naming_the_argument(data):
    x, y = data
    with pytest.raises(ModelError, match=r"argument 'x' is on the 'meta' device"):
        run(linear_regression, x.to("meta"), y, B)


def test_a_pyro_param_is_said_to_stay_fixed(data):
    def with_param(x, y, subsample_size=None):
        w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        scale = pyro.param("noise", torch.tensor(1.0))
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
            pyro.sample("obs", dist.Normal(x[idx] @ w, scale), obs=y[idx])

    pyro.clear_param_store()
    with pytest.warns(UserWarning, match=r"pyro.param site\(s\) \['noise'\] will stay fixed"):
        run(with_param, *data, B)


def test_integer_and_python_number_initial_params_mean_floats(data):
    mcmc = MCMC(
        CyclicalSGLD(linear_regression, **SETTINGS),
        num_samples=2,
        warmup_steps=0,
        disable_progbar=True,
        initial_params={"w": torch.tensor([0, 1])},  # integers
    )
    mcmc.run(*data, B)
    assert mcmc.get_samples()["w"].dtype == torch.float32
    kernel = CyclicalSGLD(linear_regression, **SETTINGS)
    kernel.initial_params = {"w": [0.5, 1]}  # Python numbers, set on the kernel
    assert kernel.initial_params["w"].dtype == torch.float32
    with pytest.raises(TypeError, match="initial_params must be a dict"):
        kernel.initial_params = [0.5, 1.0]
    potential = CyclicalSGLD(potential_fn=lambda p: (p["z"] ** 2).sum() / 2, **SETTINGS)
    mcmc = MCMC(potential, num_samples=2, warmup_steps=0, disable_progbar=True,
                initial_params={"z": torch.tensor([1, 2])})  # fmt: skip
    mcmc.run()
    assert torch.isfinite(mcmc.get_samples()["z"]).all()


def test_numpy_scalars_are_accepted_as_hyperparameters(data, tmp_path):
    kernel = CyclicalSGHMC(
        linear_regression,
        step_size=np.float32(1e-3),
        steps_per_cycle=np.int64(40),
        exploration_fraction=np.float32(0.5),
        samples_per_cycle=np.int32(2),
        temperature=np.float64(1.0),
        friction=np.float32(0.2),
        checkpoint=tmp_path / "run",  # the settings are written as JSON
    )
    mcmc = MCMC(kernel, num_samples=np.int64(4), warmup_steps=np.int64(0), disable_progbar=True)
    mcmc.run(*data, B)
    assert mcmc.get_samples()["w"].shape == (4, 2)
    settings = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]
    assert settings["steps_per_cycle"] == 40 and settings["samples_per_cycle"] == 2


def test_num_samples_zero_is_refused_before_the_run(data):
    calls = []

    def counted(*args):
        calls.append(1)
        return linear_regression(*args)

    with pytest.raises(ValueError, match=r"MCMC\(num_samples=0\) keeps no draw"):
        run(counted, *data, B, num_samples=0)
    assert not calls  # refused before the model ran once


def test_a_schedule_returning_none_is_named(data):
    with pytest.raises(ValueError, match="gave step size None at iteration 1"):
        run(linear_regression, *data, B, step_size=None, schedule=lambda k: None)


# -- runs and conversions ----------------------------------------------------------------
def test_to_inference_data_on_a_streaming_run_points_to_checkpoint(data, tmp_path):
    mcmc = run(linear_regression, *data, B, runner=StreamingMCMC)
    with pytest.raises(TypeError, match="StreamingMCMC run keeps no draws .* checkpoint="):
        to_inference_data(mcmc)
    mcmc = run(linear_regression, *data, B, runner=StreamingMCMC, checkpoint=tmp_path / "run")
    with pytest.raises(TypeError, match=f"to_inference_data\\('{tmp_path / 'run'}'"):
        to_inference_data(mcmc)
    assert to_inference_data(str(tmp_path / "run")).posterior["w"].shape == (1, 4, 2)


def test_a_failed_second_run_does_not_pair_old_draws_with_new_data(data):
    x, y = data
    kernel = CyclicalSGLD(linear_regression, **SETTINGS)
    mcmc = MCMC(kernel, num_samples=4, warmup_steps=0, disable_progbar=True)
    mcmc.run(x, y, B)
    assert to_inference_data(mcmc).observed_data["obs"].shape == (N,)
    with pytest.raises(ModelError):
        mcmc.run(x[:100], y[:100], 0)  # fails at set-up
    with pytest.raises(ValueError, match="the last mcmc.run.* stopped before its end"):
        to_inference_data(mcmc)
    mcmc.run(x[:100], y[:100], B)  # a finished run pairs again
    assert to_inference_data(mcmc).observed_data["obs"].shape == (100,)


def test_the_conjugate_posterior_is_unchanged_by_the_checks(data):
    """The checks refuse or convert inputs; a sound run samples as before."""
    x, y = linear_regression_data(n=2000, d=2)
    mean, sd = linear_regression_posterior(x, y)
    pyro.set_rng_seed(0)
    mcmc = run(linear_regression, x, y, 100, kernel_class=CyclicalSGHMC, step_size=None,
               steps_per_cycle=200, samples_per_cycle=4, num_samples=80)  # fmt: skip
    w = mcmc.get_samples()["w"].double()
    assert (((w.mean(0) - mean) / sd).abs() < 0.5).all()


# -- the demo's arguments ---------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "-1"], "--seed must be an integer from 0 to 2**32 - 1, got -1"),
        (["--out", "FILE"], "exists and is not a folder"),
        (["--out", "/proc/no/such/place"], "cannot write there"),
    ],
)
def test_the_demo_refuses_bad_arguments_in_one_line_before_any_work(args, message, tmp_path):
    file = tmp_path / "a-file"
    file.write_text("")
    args = [str(file) if arg == "FILE" else arg for arg in args]
    result = subprocess.run(
        [sys.executable, "-m", "pyro_csg", "demo", *args], capture_output=True, text=True
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert message in lines[-1] and "Traceback" not in result.stderr
    assert "==" not in result.stdout  # no part of the demo started


# -- a NUTS habit: a large data plate without subsample_size --------------------------------
def test_a_large_plate_without_subsample_size_is_named_with_what_a_minibatch_reads():
    x, y = linear_regression_data(n=20_000, d=2)
    small_step = dict(step_size=2e-5)  # about 0.4 / N
    with pytest.warns(UserWarning, match=r"plate 'data' has 20,000 rows and no subsample_size"):
        run(linear_regression, x, y, None, **small_step)
    with warnings.catch_warnings(record=True) as caught:  # a subsampled or small plate
        warnings.simplefilter("always")
        run(linear_regression, x, y, 100, **small_step)
        run(linear_regression, x[:400], y[:400], None)
    assert not [w for w in caught if "no subsample_size" in str(w.message)]


def scale_up_to_twice_the_data(y):
    s = pyro.sample("s", dist.Uniform(0.0, 2 * y.abs().max()))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(0.0, s), obs=y)


def test_a_second_run_whose_data_changes_a_support_warns_about_pyros_transforms():
    """Pyro's MCMC keeps its first run's transforms (NUTS too): the kernel says so."""
    kernel = CyclicalSGLD(scale_up_to_twice_the_data, steps_per_cycle=50)
    mcmc = MCMC(kernel, num_samples=4, warmup_steps=0, disable_progbar=True)
    mcmc.run(torch.tensor([1.0, -1.0, 0.5]))
    with pytest.warns(SamplerWarning, match=r"support of site\(s\) \['s'\] changed"):
        mcmc.run(torch.tensor([10.0, -10.0, 5.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplerWarning)
        mcmc.transforms = None  # as the warning says: the new support is used
        mcmc.run(torch.tensor([10.0, -10.0, 6.0]))
    assert float(mcmc.get_samples()["s"].max()) > 2.0


def test_step_scale_is_checked_and_scales_only_the_automatic_step():
    with pytest.raises(ValueError, match="step_scale"):
        CyclicalSGLD(scale_up_to_twice_the_data, step_scale=0.0)
    with pytest.raises(ValueError, match="step_scale=0.5 scales the automatic step size"):
        CyclicalSGLD(scale_up_to_twice_the_data, step_size=1e-3, step_scale=0.5)
    steps = []
    for scale in (1.0, 0.25):
        pyro.set_rng_seed(0)
        kernel = CyclicalSGLD(scale_up_to_twice_the_data, steps_per_cycle=20, step_scale=scale)
        MCMC(kernel, num_samples=4, warmup_steps=0, disable_progbar=True).run(torch.ones(3))
        steps.append(kernel.hyperparameters()["tuned_step_size"][0])
    assert steps[1] == pytest.approx(steps[0] / 4)
    assert kernel.hyperparameters()["step_scale"] == 0.25
