"""The kernels honour what Pyro users expect of an MCMC kernel."""

import json
import os
import pickle
import shutil
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from models import gamma_normal, gamma_normal_data, linear_regression, linear_regression_data
from pyro.infer import MCMC, Predictive
from pyro.infer.mcmc.api import StreamingMCMC

from pyro_csg import CyclicalSGHMC, CyclicalSGLD, CyclicalSGNHT, to_inference_data

N, D, B = 400, 2, 20


@pytest.fixture(scope="module")
def data():
    return linear_regression_data(n=N, d=D)


def make_kernel(kernel_class=CyclicalSGHMC, model=linear_regression, **overrides):
    settings = dict(
        step_size=0.02 / N, steps_per_cycle=40, exploration_fraction=0.5, samples_per_cycle=2
    )
    if kernel_class is CyclicalSGHMC:
        settings["friction"] = 0.5
    settings.update(overrides)
    return kernel_class(model, **settings)


def run(kernel, data, num_samples=10, **mcmc_kwargs):
    mcmc_kwargs.setdefault("warmup_steps", 0)
    mcmc = MCMC(kernel, num_samples=num_samples, disable_progbar=True, **mcmc_kwargs)
    mcmc.run(*data, subsample_size=B)
    return mcmc


def test_two_chains(data):
    pyro.set_rng_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Chains will be drawn sequentially" on 2 cores
        mcmc = run(make_kernel(), data, num_samples=6, num_chains=2)
    w = mcmc.get_samples(group_by_chain=True)["w"]
    assert w.shape == (2, 6, D)
    assert not torch.equal(w[0], w[1])
    diagnostics = mcmc.diagnostics()
    assert set(diagnostics["iteration"]) == {"chain 0", "chain 1"}
    assert diagnostics["iteration"]["chain 0"] == diagnostics["iteration"]["chain 1"]


def test_two_chains_in_spawned_processes(data, monkeypatch):
    """The parallel path pickles the kernel into fresh processes."""
    import pyro.infer.mcmc.api as api

    monkeypatch.setattr(api.mp, "cpu_count", lambda: 4)
    pyro.set_rng_seed(0)
    mcmc = run(make_kernel(), data, num_samples=4, num_chains=2, mp_context="spawn")
    assert isinstance(mcmc.sampler, api._MultiSampler)
    w = mcmc.get_samples(group_by_chain=True)["w"]
    assert w.shape == (2, 4, D) and torch.isfinite(w).all()
    assert len(mcmc.diagnostics()["potential_energy"]["chain 1"]) == 4
    # The per-draw statistics came back from the workers: the run converts to ArviZ.
    idata = to_inference_data(mcmc)
    assert idata.sample_stats["cycle"].shape == (2, 4)
    assert idata.log_likelihood["obs"].shape == (2, 4, N)


def test_streaming_mcmc(data):
    pyro.set_rng_seed(0)
    mcmc = StreamingMCMC(make_kernel(), num_samples=8, warmup_steps=0, disable_progbar=True)
    mcmc.run(*data, subsample_size=B)
    statistics = mcmc.get_statistics(group_by_chain=False)
    assert statistics["w"]["mean"].shape == (D,)
    assert torch.isfinite(statistics["w"]["variance"]).all()


def test_hook_fn_sees_every_draw_and_logging_is_json(data):
    calls = []

    def hook(kernel, params, stage, i):
        logged = kernel.logging()
        json.dumps(logged)
        calls.append((stage, i, dict(logged), params["w"].clone()))

    pyro.set_rng_seed(0)
    mcmc = run(make_kernel(), data, num_samples=6, warmup_steps=4, hook_fn=hook)
    assert [c[:2] for c in calls] == [("Warmup", i) for i in range(4)] + [
        ("Sample", i) for i in range(6)
    ]
    assert set(calls[-1][2]) == {"cycle", "iteration", "step size", "potential"}
    kernel = mcmc.kernel  # the last draw: the last cycle (of 5, counted from 1), its last step
    length = kernel.steps_per_cycle
    assert calls[-1][2]["cycle"] == "5/5" and calls[-1][2]["iteration"] == f"{length}/{length}"
    # The hook's params are the draws that MCMC keeps.
    kept = torch.stack([c[3] for c in calls[4:]])
    assert torch.equal(kept, mcmc.get_samples()["w"])


def two_sites(x, y, subsample_size=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
    noise = pyro.sample("noise", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        pyro.sample("obs", dist.Normal(x[idx] @ w, noise), obs=y[idx])


def test_save_params_and_constrained_values(data):
    pyro.set_rng_seed(0)
    mcmc = run(make_kernel(model=two_sites), data, num_samples=6)
    samples = mcmc.get_samples()
    assert set(samples) == {"w", "noise"}
    assert (samples["noise"] > 0).all()  # constrained, not log(noise)
    mcmc = run(make_kernel(model=two_sites), data, num_samples=6, save_params=["noise"])
    assert set(mcmc.get_samples()) == {"noise"}


def test_gamma_site_is_returned_constrained():
    y = gamma_normal_data(n=200)
    pyro.set_rng_seed(0)
    kernel = CyclicalSGLD(gamma_normal, step_size=1e-3, steps_per_cycle=30, samples_per_cycle=2)
    mcmc = MCMC(kernel, num_samples=6, warmup_steps=0, disable_progbar=True)
    mcmc.run(y, subsample_size=10)
    tau = mcmc.get_samples()["tau"]
    assert (tau > 0).all() and tau.shape == (6,)


def test_potential_fn_with_initial_params():
    target_mean, target_sd = torch.tensor([1.0, -2.0]), 0.1

    def potential(params):
        return 0.5 * (((params["z"] - target_mean) / target_sd) ** 2).sum()

    pyro.set_rng_seed(0)
    kernel = CyclicalSGLD(
        potential_fn=potential,
        step_size=0.05 * target_sd**2,
        steps_per_cycle=200,
        exploration_fraction=0.5,
        samples_per_cycle=10,
    )
    mcmc = MCMC(
        kernel,
        num_samples=60 * 10,
        warmup_steps=0,
        disable_progbar=True,
        initial_params={"z": torch.zeros(2)},
    )
    mcmc.run()
    z = mcmc.get_samples()["z"]
    assert ((z.mean(0) - target_mean).abs() < 0.3 * target_sd).all()
    assert ((z.std(0) / target_sd - 1).abs() < 0.3).all()


def test_predictive_on_new_data(data):
    x, y = data
    pyro.set_rng_seed(0)
    mcmc = run(make_kernel(), data, num_samples=20)
    x_new = torch.randn(7, D)
    predictive = Predictive(linear_regression, posterior_samples=mcmc.get_samples())
    draws = predictive(x_new, None)["obs"]
    assert draws.shape == (20, 7)
    w_mean = mcmc.get_samples()["w"].mean(0)
    assert torch.allclose(draws.mean(0), x_new @ w_mean, atol=4 / 20**0.5)


def test_same_seed_same_draws_bit_for_bit(data):
    def draws(seed, **overrides):
        pyro.set_rng_seed(seed)
        return run(make_kernel(**overrides), data, num_samples=8).get_samples()["w"]

    assert torch.equal(draws(5), draws(5))
    assert not torch.equal(draws(5), draws(6))
    # Tracing the potential changes the speed, not the draws.
    assert torch.allclose(draws(5), draws(5, compile_potential=False), rtol=1e-5, atol=1e-6)


def test_summary_and_diagnostics(data, capsys):
    pyro.set_rng_seed(0)
    mcmc = run(make_kernel(), data, num_samples=10)
    mcmc.summary()
    out = capsys.readouterr().out
    assert "w[0]" in out and "n_eff" in out
    diagnostics = mcmc.diagnostics()
    for key in ("cycle", "iteration", "step_size", "potential_energy"):
        assert len(diagnostics[key]["chain 0"]) == 10
    assert diagnostics["cycle"]["chain 0"] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_kernel_pickles_before_and_after_a_run(data):
    kernel = make_kernel()
    restored = pickle.loads(pickle.dumps(kernel))
    pyro.set_rng_seed(0)
    first = run(restored, data, num_samples=4).get_samples()["w"]
    again = pickle.loads(pickle.dumps(restored))
    pyro.set_rng_seed(0)
    assert torch.equal(run(again, data, num_samples=4).get_samples()["w"], first)
    # Mid-run (after setup, with a traced graph) it pickles too, without its run state.
    kernel.setup(0, *data, subsample_size=B)
    kernel.sample(kernel.initial_params)
    unpickled = pickle.loads(pickle.dumps(kernel))
    assert unpickled._current is None and unpickled._chains == {}


def test_model_without_subsampling_uses_the_full_gradient(data):
    pyro.set_rng_seed(0)
    kernel = make_kernel()
    mcmc = MCMC(kernel, num_samples=4, warmup_steps=0, disable_progbar=True)
    mcmc.run(*data)  # subsample_size=None
    assert torch.isfinite(mcmc.get_samples()["w"]).all()


def test_draws_follow_the_data_dtype():
    x, y = linear_regression_data(n=N, d=D)

    def model64(x, y, subsample_size=None):
        w = pyro.sample("w", dist.Normal(torch.zeros(D, dtype=torch.float64), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
            pyro.sample("obs", dist.Normal(x[idx] @ w, 1.0), obs=y[idx])

    pyro.set_rng_seed(0)
    mcmc = run(make_kernel(model=model64), (x.double(), y.double()), num_samples=4)
    assert mcmc.get_samples()["w"].dtype == torch.float64


def test_warmup_discards_whole_cycles_and_warns_otherwise(data):
    pyro.set_rng_seed(0)
    mcmc = run(make_kernel(), data, num_samples=4, warmup_steps=4)
    assert mcmc.diagnostics()["cycle"]["chain 0"] == [2, 2, 3, 3]
    with pytest.warns(UserWarning, match="not a multiple of samples_per_cycle=2"):
        run(make_kernel(), data, num_samples=4, warmup_steps=3)


def test_pyro_module_network_is_traced_and_predicts():
    from models import make_bnn

    torch.manual_seed(0)
    x, y = torch.randn(300, 5), torch.randint(0, 3, (300,))
    net = make_bnn()
    pyro.set_rng_seed(0)
    kernel = CyclicalSGHMC(net, step_size=1e-4, steps_per_cycle=40, samples_per_cycle=2)
    mcmc = MCMC(kernel, num_samples=4, warmup_steps=0, disable_progbar=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to the eager potential
        mcmc.run(x, y, subsample_size=30)
    samples = mcmc.get_samples()
    assert samples["fc1.weight"].shape == (4, 8, 5) and samples["fc2.bias"].shape == (4, 3)
    predictions = Predictive(net, posterior_samples=samples)(x[:7])["obs"]
    assert predictions.shape == (4, 7)


def test_initial_params_start_each_chain(data):
    kernel = make_kernel()
    kernel.initial_params = {"w": torch.tensor([3.0, -3.0])}
    kernel.setup(0, *data, subsample_size=B)
    assert torch.equal(kernel.initial_params["w"], torch.tensor([3.0, -3.0]))
    kernel.cleanup()

    starts = {"w": torch.tensor([[3.0, 3.0], [-3.0, -3.0]])}
    seen = []

    def first_params(kernel, params, stage, i):
        if i == 0:
            seen.append(kernel.initial_params["w"].clone())

    pyro.set_rng_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc = run(
            make_kernel(),
            data,
            num_samples=2,
            num_chains=2,
            initial_params=starts,
            hook_fn=first_params,
        )
    assert mcmc.get_samples(group_by_chain=True)["w"].shape == (2, 2, D)
    assert torch.equal(torch.stack(seen), starts["w"])  # each chain began at its own start


def test_the_inductor_backend_changes_the_speed_not_the_draws(data):
    """compile_potential='inductor' builds the traced graph with torch.compile (fused
    kernels): the same chain to float tolerance. Where torch.compile cannot build (no C++
    compiler), the kernel keeps the traced graph and says so."""

    def draws(**overrides):
        pyro.set_rng_seed(5)
        kernel = make_kernel(**overrides)
        samples = run(kernel, data, num_samples=8).get_samples()["w"]
        return samples, kernel

    graph, plain = draws()
    assert plain.hyperparameters()["potential_backend"] == "graph"
    buildable = shutil.which(os.environ.get("CXX", "g++")) is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built, kernel = draws(compile_potential="inductor")
    messages = [str(w.message) for w in caught if "inductor" in str(w.message)]
    if buildable:
        assert not messages, messages
        assert kernel.hyperparameters()["potential_backend"] == "inductor"
    else:
        assert messages and "the traced graph is used" in messages[0]
    assert torch.allclose(built, graph, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="compile_potential must be True .* 'inductor'"):
        make_kernel(compile_potential="jit")


@pytest.mark.parametrize("kernel_class", [CyclicalSGLD, CyclicalSGHMC, CyclicalSGNHT])
def test_help_shows_every_parameter(kernel_class):
    import inspect
    import pydoc

    from pyro_csg.adapter.kernels import CyclicalKernel

    shared = set(inspect.signature(CyclicalKernel.__init__).parameters) - {"self"}
    own = {CyclicalSGHMC: {"friction"}, CyclicalSGNHT: {"diffusion"}}.get(kernel_class, set())
    signature = inspect.signature(kernel_class)
    assert set(signature.parameters) == shared | own
    assert "kwargs" not in signature.parameters
    text = pydoc.render_doc(kernel_class, renderer=pydoc.plaintext)
    # help()'s first lines after the class line: the constructor's signature, in full (one
    # line up to Python 3.12, one line a parameter from 3.13).
    start = f" |  {kernel_class.__name__}("
    lines = text.splitlines()
    (first,) = [number for number, line in enumerate(lines) if line.startswith(start)]
    line = lines[first]
    while line.count("(") > line.count(")"):
        first += 1
        line += lines[first].removeprefix(" |")
    assert all(f"{name}=" in line or f"{name}: " in line for name in shared | own), line
