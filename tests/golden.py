"""Golden runs: draws of today's kernels that every refactoring must reproduce bit for bit.

``python tests/golden.py write`` records them in ``tests/golden/draws.pt``, one set per
environment (torch's version, one thread, the CPU's vendor and vector ISA: the same torch
sums in another order on an AMD and an Intel CPU, 1e-5 apart after a few hundred steps);
``tests/test_golden.py`` runs the same scenarios and compares with :func:`torch.equal`
against the set of the machine it runs on. Each scenario is small (a few seconds) and covers
one path of the sampler: cSGLD and cSGHMC with explicit steps, control variates, the
automatic step size with the converged start, a ``potential_fn``, a checkpointed resume,
a ``state_dict`` continuation and a data-parallel run over two Gloo ranks.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pyro
import torch
from pyro.infer import MCMC

sys.path.insert(0, os.path.dirname(__file__))

from models import linear_regression_data, regression_with_noise_scale  # noqa: E402

from pyro_csg import CyclicalSGHMC, CyclicalSGLD  # noqa: E402

GOLDEN = Path(__file__).with_name("golden") / "draws.pt"
N, B = 2000, 50
STATS = ("cycle", "iteration", "step_size", "potential_energy", "noise_ratio")


def _data():
    return linear_regression_data(n=N, d=3)


def _result(mcmc: MCMC, kernel) -> dict:
    stats = kernel.diagnostics()
    return {
        "samples": {name: value.clone() for name, value in mcmc.get_samples().items()},
        "stats": {key: torch.tensor(stats[key], dtype=torch.float64) for key in STATS},
        "theta": kernel.state_dict()["chains"][0]["theta"].clone(),
    }


def _run(kernel, num_samples=24, warmup_steps=0, seed=0, data=True, **params) -> dict:
    pyro.set_rng_seed(seed)
    mcmc = MCMC(
        kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=True, **params
    )
    if data:
        mcmc.run(*_data(), subsample_size=B)
    else:
        mcmc.run()
    return _result(mcmc, kernel)


def correlated_gaussian(params):
    """A 2-D Gaussian with correlation 0.9 and scales 1 and 3."""
    x = params["x"]
    a, b = x[0], x[1] / 3.0
    return (a**2 - 1.8 * a * b + b**2) / (2 * 0.19)


def csgld_explicit():
    kernel = CyclicalSGLD(
        regression_with_noise_scale,
        step_size=0.005 / N,
        steps_per_cycle=50,
        control_variates=False,
    )
    return _run(kernel, warmup_steps=4)


def csghmc_control_variates():
    kernel = CyclicalSGHMC(
        regression_with_noise_scale,
        step_size=0.01 / N,
        steps_per_cycle=50,
        friction=0.2,
        control_variates=True,
    )
    return _run(kernel)


def csghmc_defaults():
    return _run(CyclicalSGHMC(regression_with_noise_scale, steps_per_cycle=60))


def csgld_defaults():
    return _run(CyclicalSGLD(regression_with_noise_scale, steps_per_cycle=60))


def potential_fn_defaults():
    kernel = CyclicalSGHMC(potential_fn=correlated_gaussian, steps_per_cycle=80)
    return _run(kernel, data=False, initial_params={"x": torch.zeros(2)})


def potential_fn_explicit():
    kernel = CyclicalSGLD(potential_fn=correlated_gaussian, step_size=0.05, steps_per_cycle=80)
    return _run(kernel, data=False, initial_params={"x": torch.zeros(2)})


def checkpoint_resume():
    """12 draws checkpointed, then the same script asked for 24: 12 read back, 12 new."""
    with tempfile.TemporaryDirectory() as folder:
        _run(CyclicalSGHMC(regression_with_noise_scale, steps_per_cycle=60, checkpoint=folder), 12)
        kernel = CyclicalSGHMC(regression_with_noise_scale, steps_per_cycle=60, checkpoint=folder)
        return _run(kernel, 24)


def state_dict_continuation():
    first = CyclicalSGLD(regression_with_noise_scale, steps_per_cycle=60)
    _run(first, 12)
    later = CyclicalSGLD(regression_with_noise_scale, steps_per_cycle=60)
    later.load_state_dict(first.state_dict())
    return _run(later, 12, seed=5)


def data_parallel():
    """Two Gloo ranks of tests/distributed_run.py (rank 0's draws)."""
    script = Path(__file__).with_name("distributed_run.py")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        processes = []
        for rank in range(2):
            env = {
                **os.environ,
                "RANK": str(rank),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": "1",
            }
            processes.append(
                subprocess.Popen(
                    [sys.executable, str(script), str(out)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        for process in processes:
            output, _ = process.communicate(timeout=300)
            if process.returncode:
                raise RuntimeError(f"a rank failed:\n{output}")
        saved = torch.load(f"{out}.rank0", weights_only=False)
    return {
        "samples": saved["samples"],
        "stats": {
            key: torch.tensor(value, dtype=torch.float64) for key, value in saved["stats"].items()
        },
    }


SCENARIOS = {
    function.__name__: function
    for function in (
        csgld_explicit,
        csghmc_control_variates,
        csghmc_defaults,
        csgld_defaults,
        potential_fn_defaults,
        potential_fn_explicit,
        checkpoint_resume,
        state_dict_continuation,
        data_parallel,
    )
}


def cpu_vendor() -> str:
    """``GenuineIntel``, ``AuthenticAMD``, ... from /proc/cpuinfo (else the platform's name)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> str:
    """What the bits depend on besides the code, as the key of their set of draws."""
    capability = torch.backends.cpu.get_cpu_capability()
    return f"torch {torch.__version__}, 1 thread, {cpu_vendor()} {capability}"


def load() -> dict:
    """``{environment: {scenario: draws}}``, empty where nothing was recorded yet."""
    return torch.load(GOLDEN, weights_only=False) if GOLDEN.exists() else {}


def run_scenario(name: str) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the noise warning of the small batches
            return SCENARIOS[name]()
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__" and sys.argv[1:] == ["write"]:
    GOLDEN.parent.mkdir(exist_ok=True)
    golden = load()  # the other machines' sets are kept: only this one's is rewritten
    golden[environment()] = {name: run_scenario(name) for name in SCENARIOS}
    torch.save(golden, GOLDEN)
    print(f"wrote {GOLDEN} for {environment()}: {sorted(SCENARIOS)}; sets: {sorted(golden)}")
