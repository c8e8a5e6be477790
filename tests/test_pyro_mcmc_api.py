"""Pyro's own MCMC API tests, with the cyclical kernels in place of HMC and NUTS.

Adapted from ``tests/infer/mcmc/test_mcmc_api.py`` of Pyro 1.9 (the tests that run HMC or
NUTS: ``test_null_model_with_hook``, ``test_sequential_consistent``,
``test_model_with_potential_fn`` and ``test_save_params``). The changes: ``CyclicalSGHMC``
and ``CyclicalSGLD`` replace ``HMC`` and ``NUTS``; HMC-only arguments are dropped (``jit_compile``
becomes ``compile_potential``, ``max_tree_depth`` goes); the kernels get the ``step_size``
they require and ``samples_per_cycle=1``, so that every ``MCMC`` draw is one cycle, as
warm-up counts draws. The assertions are Pyro's.
"""

from functools import partial

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc.api import MCMC, StreamingMCMC
from pyro.infer.mcmc.util import initialize_model, select_samples
from pyro.ops.streaming import StackStats, StatsOfDict

from pyro_csg import CyclicalSGHMC, CyclicalSGLD

CYCLIC = dict(step_size=0.01, steps_per_cycle=10, samples_per_cycle=1)


def normal_normal_model(data):
    x = torch.tensor([0.0])
    y = pyro.sample("y", dist.Normal(x, torch.ones(data.shape)))
    pyro.sample("obs", dist.Normal(y, torch.tensor([1.0])), obs=data)
    return y


def run_default_mcmc(
    data,
    kernel,
    num_samples,
    warmup_steps=None,
    initial_params=None,
    num_chains=1,
    hook_fn=None,
    mp_context=None,
    transforms=None,
    num_draws=None,
    group_by_chain=False,
):
    mcmc = MCMC(
        kernel=kernel,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        initial_params=initial_params,
        num_chains=num_chains,
        hook_fn=hook_fn,
        mp_context=mp_context,
        transforms=transforms,
    )
    mcmc.run(data)
    return mcmc.get_samples(num_draws, group_by_chain=group_by_chain), mcmc.num_chains


def run_streaming_mcmc(
    data,
    kernel,
    num_samples,
    warmup_steps=None,
    initial_params=None,
    num_chains=1,
    hook_fn=None,
    mp_context=None,
    transforms=None,
    num_draws=None,
    group_by_chain=False,
):
    mcmc = StreamingMCMC(
        kernel=kernel,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        initial_params=initial_params,
        statistics=StatsOfDict(default=StackStats),
        num_chains=num_chains,
        hook_fn=hook_fn,
        transforms=transforms,
    )
    mcmc.run(data)
    statistics = mcmc.get_statistics(group_by_chain=group_by_chain)

    if group_by_chain:
        samples = {}
        agg = {}
        for (_, name), stat in statistics.items():
            if name in agg:
                agg[name].append(stat["samples"])
            else:
                agg[name] = [stat["samples"]]
        for name, values in agg.items():
            samples[name] = torch.stack(values)
    else:
        samples = {name: stat["samples"] for name, stat in statistics.items()}

    samples = select_samples(samples, num_draws, group_by_chain)

    if not group_by_chain:
        samples = {name: stat.unsqueeze(-1) for name, stat in samples.items()}

    return samples, mcmc.num_chains


def _empty_model():
    return torch.tensor(1)


def _hook(iters, kernel, samples, stage, i):
    assert samples == {}
    iters.append((stage, i))


@pytest.mark.parametrize("run_mcmc_cls", [run_default_mcmc, run_streaming_mcmc])
@pytest.mark.parametrize(
    "kernel, model", [(CyclicalSGHMC, _empty_model), (CyclicalSGLD, _empty_model)]
)
@pytest.mark.parametrize("compile_potential", [False, True])
@pytest.mark.parametrize("num_chains", [1, 2])
@pytest.mark.parametrize("settings", [CYCLIC, {}], ids=["explicit", "defaults"])
@pytest.mark.filterwarnings("ignore:num_chains")
@pytest.mark.filterwarnings("error")  # as Pyro's own suite runs it
def test_null_model_with_hook(
    run_mcmc_cls, kernel, model, compile_potential, num_chains, settings
):
    num_warmup, num_samples = 10, 10
    initial_params, potential_fn, transforms, _ = initialize_model(model, num_chains=num_chains)

    iters = []
    hook = partial(_hook, iters)

    kern = kernel(
        potential_fn=potential_fn,
        transforms=transforms,
        compile_potential=compile_potential,
        **settings,  # the defaults too: no step to tune, no warm-up warning, no var() warning
    )
    samples, _ = run_mcmc_cls(
        data=None,
        kernel=kern,
        num_samples=num_samples,
        warmup_steps=num_warmup,
        initial_params=initial_params,
        hook_fn=hook,
        num_chains=num_chains,
    )
    assert samples == {}
    if num_chains == 1:
        expected = [("Warmup", i) for i in range(num_warmup)] + [
            ("Sample", i) for i in range(num_samples)
        ]
        assert iters == expected


@pytest.mark.parametrize("run_mcmc_cls", [run_default_mcmc, run_streaming_mcmc])
@pytest.mark.filterwarnings("ignore:num_chains")
def test_sequential_consistent(run_mcmc_cls, monkeypatch):
    # test if there is no stuff left from the previous chain
    monkeypatch.setattr(torch.multiprocessing, "cpu_count", lambda: 1)

    class FirstKernel(CyclicalSGHMC):
        def setup(self, warmup_steps, *args, **kwargs):
            self._chain_id = 0 if "_chain_id" not in self.__dict__ else 1
            pyro.set_rng_seed(self._chain_id)
            super().setup(warmup_steps, *args, **kwargs)

    class SecondKernel(CyclicalSGHMC):
        def setup(self, warmup_steps, *args, **kwargs):
            self._chain_id = 1 if "_chain_id" not in self.__dict__ else 0
            pyro.set_rng_seed(self._chain_id)
            super().setup(warmup_steps, *args, **kwargs)

    data = torch.tensor([1.0])
    kernel = FirstKernel(normal_normal_model, **CYCLIC)
    samples1, _ = run_mcmc_cls(
        data, kernel, num_samples=100, warmup_steps=100, num_chains=2, group_by_chain=True
    )

    kernel = SecondKernel(normal_normal_model, **CYCLIC)
    samples2, _ = run_mcmc_cls(
        data, kernel, num_samples=100, warmup_steps=100, num_chains=2, group_by_chain=True
    )

    torch.testing.assert_close(samples1["y"][0], samples2["y"][1])
    torch.testing.assert_close(samples1["y"][1], samples2["y"][0])


@pytest.mark.parametrize("run_mcmc_cls", [run_default_mcmc, run_streaming_mcmc])
def test_model_with_potential_fn(run_mcmc_cls):
    init_params = {"z": torch.tensor(0.0)}

    def potential_fn(params):
        return params["z"]

    run_mcmc_cls(
        data=None,
        kernel=CyclicalSGHMC(potential_fn=potential_fn, **CYCLIC),
        num_samples=10,
        warmup_steps=10,
        initial_params=init_params,
    )


@pytest.mark.parametrize("save_params", ["xy", "x", "y", "xy"])
@pytest.mark.parametrize("Kernel,options", [(CyclicalSGHMC, {}), (CyclicalSGLD, {})])
def test_save_params(save_params, Kernel, options):
    save_params = list(save_params)

    def model():
        x = pyro.sample("x", dist.Normal(0, 1))
        with pyro.plate("plate", 2):
            y = pyro.sample("y", dist.Normal(x, 1))
            pyro.sample("obs", dist.Normal(y, 1), obs=torch.zeros(2))

    kernel = Kernel(model, **CYCLIC, **options)
    mcmc = MCMC(kernel, warmup_steps=2, num_samples=4, save_params=save_params)
    mcmc.run()

    samples = mcmc.get_samples()
    assert set(samples.keys()) == set(save_params)

    diagnostics = mcmc.diagnostics()
    diagnostics = {k: v for k, v in diagnostics.items() if k in "xy"}
    assert set(diagnostics.keys()) == set(save_params)

    mcmc.summary()  # smoke test
