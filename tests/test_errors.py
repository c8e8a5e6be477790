"""Bad input gets a clear error, raised early, naming the argument or the site."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from models import linear_regression, linear_regression_data
from pyro.infer import MCMC

from pyro_csg import CyclicalSGHMC, CyclicalSGLD, ModelError, NonFiniteError
from pyro_csg.core.schedules import Constant, CosineCyclical

VALID = dict(step_size=1e-3, steps_per_cycle=20, exploration_fraction=0.5, samples_per_cycle=2)


def with_(**changes):
    return {**VALID, **changes}


@pytest.mark.parametrize("kernel_class", [CyclicalSGLD, CyclicalSGHMC])
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (with_(control_variates="yes"), TypeError, "control_variates must be True, False or None"),
        (with_(preconditioner=1), TypeError, "preconditioner must be True, False or None"),
        (with_(optimize_start="auto"), TypeError, "optimize_start must be True, False or None"),
        (
            with_(step_size=None, schedule=Constant(1e-3), preconditioner=True),
            ValueError,
            "preconditioner=True works with the cosine schedule",
        ),
        (with_(step_size=0.0), ValueError, "step_size must be a finite number > 0"),
        (with_(step_size=-1e-3), ValueError, "step_size"),
        (with_(step_size=math.inf), ValueError, "step_size"),
        (with_(step_size=math.nan), ValueError, "step_size"),
        (with_(step_size="big"), TypeError, "step_size"),
        (with_(steps_per_cycle=0), ValueError, "steps_per_cycle must be an integer >= 1"),
        (with_(steps_per_cycle=2.5), TypeError, "steps_per_cycle"),
        (with_(exploration_fraction=1.0), ValueError, r"exploration_fraction .* \[0, 1\)"),
        (with_(exploration_fraction=-0.2), ValueError, "exploration_fraction"),
        (with_(samples_per_cycle=0), ValueError, "samples_per_cycle must be an integer >= 1"),
        (with_(samples_per_cycle=11), ValueError, r"at most .* sampling-stage steps .*\(10"),
        (with_(temperature=0.0), ValueError, "temperature must be a finite number > 0"),
        (with_(temperature=-1.0), ValueError, "temperature"),
        (with_(step_size=None, schedule=3), TypeError, "schedule must be a callable"),
        (with_(schedule=Constant(1e-3)), ValueError, "either step_size .* or schedule"),
        (
            with_(step_size=None, schedule=CosineCyclical(1e-3, 30)),
            ValueError,
            "steps_per_cycle=30 but the kernel has steps_per_cycle=20",
        ),
        (with_(transforms=[1]), TypeError, "transforms must be a dict"),
        (with_(init_strategy=None), TypeError, "init_strategy"),
    ],
)
def test_invalid_hyperparameters(kernel_class, kwargs, error, match):
    with pytest.raises(error, match=match):
        kernel_class(linear_regression, **kwargs)


def test_control_variates_need_a_model_with_one_subsampled_plate():
    with pytest.raises(ValueError, match="control_variates=True needs a model"):
        CyclicalSGLD(potential_fn=lambda p: (p["z"] ** 2).sum(), control_variates=True)
    x, y = linear_regression_data(n=50, d=2)
    kernel = CyclicalSGLD(linear_regression, control_variates=True, **VALID)
    with pytest.raises(ModelError, match=r"exactly one subsampled plate .* has 0"):
        MCMC(kernel, 2, warmup_steps=0, disable_progbar=True).run(x, y)


@pytest.mark.parametrize("friction", [0.0, -0.1, 1.5, math.nan])
def test_invalid_friction(friction):
    with pytest.raises(ValueError, match=r"friction must be a number in \(0, 1\]"):
        CyclicalSGHMC(linear_regression, friction=friction, **VALID)


def test_model_xor_potential_fn():
    with pytest.raises(ValueError, match="exactly one of model or potential_fn"):
        CyclicalSGLD(**VALID)
    with pytest.raises(ValueError, match="exactly one of model or potential_fn"):
        CyclicalSGLD(linear_regression, potential_fn=lambda p: 0.0, **VALID)


def local_latent(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", y.shape[0], subsample_size=10) as idx:
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("obs", dist.Normal(z, 1.0), obs=y[idx])


def discrete_latent(y):
    k = pyro.sample("k", dist.Bernoulli(0.5))
    with pyro.plate("data", y.shape[0], subsample_size=10) as idx:
        pyro.sample("obs", dist.Normal(k, 1.0), obs=y[idx])


def no_latent(y):
    with pyro.plate("data", y.shape[0], subsample_size=10) as idx:
        pyro.sample("obs", dist.Normal(0.0, 1.0), obs=y[idx])


@pytest.mark.parametrize(
    "model, match",
    [
        (
            local_latent,
            "site 'z' is a latent variable inside the subsampled plate 'data' "
            r"\(size=100, subsample_size=10\)",
        ),
        (discrete_latent, "site 'k' is a discrete latent variable"),
        (no_latent, "no latent sample site"),
    ],
)
def test_unsupported_models_fail_at_setup(model, match):
    kernel = CyclicalSGLD(model, **VALID)
    mcmc = MCMC(kernel, num_samples=2, warmup_steps=0, disable_progbar=True)
    with pytest.raises(ModelError, match=match):
        mcmc.run(torch.randn(100))
    assert issubclass(ModelError, ValueError)


def test_potential_fn_needs_initial_params():
    kernel = CyclicalSGLD(potential_fn=lambda p: (p["z"] ** 2).sum(), **VALID)
    with pytest.raises(ValueError, match="with potential_fn, pass initial_params"):
        MCMC(kernel, num_samples=2, warmup_steps=0, disable_progbar=True).run()


def test_potential_fn_must_return_a_scalar():
    kernel = CyclicalSGLD(potential_fn=lambda p: p["z"] ** 2, **VALID)
    mcmc = MCMC(
        kernel,
        num_samples=2,
        warmup_steps=0,
        disable_progbar=True,
        initial_params={"z": torch.zeros(3)},
    )
    with pytest.raises(ValueError, match=r"must return a scalar tensor .* shape \(3,\)"):
        mcmc.run()


@pytest.mark.parametrize(
    "initial, match",
    [
        ({"v": torch.zeros(2)}, r"missing the latent site\(s\) \['w'\]"),
        ({"w": torch.zeros(3)}, r"initial_params\['w'\] has shape \(3,\), expected \(2,\)"),
        ({"w": torch.tensor([0.0, math.nan])}, r"non-finite values at site\(s\) \['w'\]"),
    ],
)
def test_bad_initial_params(initial, match):
    x, y = linear_regression_data(n=100, d=2)
    kernel = CyclicalSGLD(linear_regression, **VALID)
    mcmc = MCMC(kernel, num_samples=2, warmup_steps=0, disable_progbar=True, initial_params=initial)
    with pytest.raises(ValueError, match=match):
        mcmc.run(x, y, subsample_size=10)


@pytest.mark.parametrize("kernel_class", [CyclicalSGLD, CyclicalSGHMC])
def test_divergence_stops_with_a_useful_error_and_no_nan_draws(kernel_class):
    x, y = linear_regression_data(n=1000, d=2)
    kept = []
    kernel = kernel_class(
        linear_regression,
        step_size=1.0,
        steps_per_cycle=300,
        exploration_fraction=0.5,
        samples_per_cycle=2,
    )
    mcmc = MCMC(
        kernel,
        num_samples=4,
        warmup_steps=0,
        disable_progbar=True,
        hook_fn=lambda k, params, stage, i: kept.append(params["w"]),
    )
    pyro.set_rng_seed(0)
    with pytest.raises(NonFiniteError) as failure:
        mcmc.run(x, y, subsample_size=50)
    message = str(failure.value)
    assert "iteration" in message and "cycle 0" in message and "step size" in message
    assert "smaller" in message
    iteration = int(message.split("iteration ")[1].split(" ")[0])
    assert 1 <= iteration <= 300  # found in the first cycle, near where it happened
    assert all(torch.isfinite(w).all() for w in kept)


def test_schedule_giving_a_bad_step_size_is_named():
    x, y = linear_regression_data(n=100, d=2)
    kernel = CyclicalSGLD(
        linear_regression,
        schedule=lambda k: 1e-4 if k < 5 else -1.0,
        steps_per_cycle=20,
        samples_per_cycle=2,
    )
    mcmc = MCMC(kernel, num_samples=2, warmup_steps=0, disable_progbar=True)
    with pytest.raises(ValueError, match="step size -1.0 at iteration 5"):
        mcmc.run(x, y, subsample_size=10)


def test_warmup_steps_must_be_a_count():
    kernel = CyclicalSGLD(linear_regression, **VALID)
    with pytest.raises(ValueError, match="warmup_steps must be an integer >= 0"):
        kernel.setup(-1, *linear_regression_data(n=100, d=2))


def test_pyro_module_weights_first_read_inside_the_plate_get_a_hint():
    from models import make_bnn

    net = make_bnn(read_weights_first=False)
    kernel = CyclicalSGHMC(net, **VALID)
    mcmc = MCMC(kernel, num_samples=2, warmup_steps=0, disable_progbar=True)
    with pytest.raises(Exception) as failure:
        mcmc.run(torch.randn(100, 5), torch.randint(0, 3, (100,)), subsample_size=10)
    notes = " ".join(getattr(failure.value, "__notes__", []))
    assert "'fc1.weight' is a latent variable inside the subsampled plate 'data'" in notes
    assert "PyroSample attribute of a PyroModule" in notes


# -- a NUTS user's keywords ------------------------------------------------------------------
@pytest.mark.parametrize("kernel_class", [CyclicalSGLD, CyclicalSGHMC])
def test_every_nuts_keyword_gets_an_answer(kernel_class):
    from pyro_csg.adapter.options import NUTS_KEYWORDS

    def model():
        pass

    name = kernel_class.__name__
    assert kernel_class(model, jit_compile=True).compile_potential == "graph"
    assert kernel_class(model, jit_compile=False).compile_potential is None
    for accepted in ("ignore_jit_warnings", "jit_options", "max_plate_nesting"):
        kernel_class(model, **{accepted: True})
    refused = [
        key for key, meaning in NUTS_KEYWORDS.items() if meaning not in (None, "compile_potential")
    ]
    assert {
        "max_tree_depth",
        "target_accept_prob",
        "adapt_step_size",
        "adapt_mass_matrix",
        "dense_mass",
        "num_steps",
        "trajectory_length",
    } <= set(refused)
    for key in refused:
        with pytest.raises(TypeError, match=rf"^{name} has no counterpart of NUTS's {key}: "):
            kernel_class(model, **{key: 1})
    with pytest.raises(TypeError, match=rf"^{name} got .* 'stepsize'; did you mean step_size\?"):
        kernel_class(model, stepsize=0.1)
