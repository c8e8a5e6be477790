"""A NUTS user's first hour: the habits that would pass silently get a warning, and Pyro's
progress bar says what the kernel is doing (issue 24)."""

import re
import warnings

import pyro
import pytest
from models import linear_regression, linear_regression_data
from pyro.infer import MCMC

from pyro_csg import CyclicalSGHMC, CyclicalSGLD, SamplerWarning

HABIT = r"warmup_steps=\d+ throws away \d+ draws"


def _run(kernel_class, num_samples=8, seed=0, **mcmc_options):
    """A short run of the regression with a subsampled plate (the converged start is on)."""
    x, y = linear_regression_data(n=2_000, d=2)
    pyro.set_rng_seed(seed)
    kernel = kernel_class(linear_regression, steps_per_cycle=100)
    mcmc = MCMC(kernel, num_samples=num_samples, disable_progbar=True, **mcmc_options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc.run(x, y, 50)
    return mcmc, [str(w.message) for w in caught if issubclass(w.category, SamplerWarning)]


@pytest.mark.parametrize("kernel_class", [CyclicalSGHMC, CyclicalSGLD])
def test_mcmc_default_warmup_after_a_converged_start_is_named_with_what_to_pass(kernel_class):
    _, messages = _run(kernel_class)  # MCMC's default: warmup_steps = num_samples = 8
    habit = [m for m in messages if re.search(HABIT, m)]
    assert len(habit) == 1, messages
    message = habit[0]
    assert message.startswith(f"{kernel_class.__name__}: warmup_steps=8 throws away 8 draws")
    assert "2 cycles of 100 iterations" in message
    assert "MCMC's default warmup_steps is num_samples" in message
    assert "Adam steps" in message and "pass warmup_steps=0" in message


def test_any_warmup_longer_than_a_cycle_after_a_converged_start_is_named():
    _, messages = _run(CyclicalSGHMC, warmup_steps=12)
    habit = [m for m in messages if re.search(HABIT, m)]
    assert len(habit) == 1 and "MCMC's default" not in habit[0]
    assert "3 cycles" in habit[0]


@pytest.mark.parametrize("warmup_steps", [0, 4])
def test_no_warmup_warning_on_runs_that_discard_at_most_one_cycle(warmup_steps):
    _, messages = _run(CyclicalSGHMC, warmup_steps=warmup_steps)
    assert not [m for m in messages if re.search(HABIT, m)]


def test_no_warmup_warning_without_a_converged_start():
    """Without the optimisation stage the first cycles may be burn-in: warm-up is the
    user's remedy, and the runaway diagnostic names it where it is needed."""
    x, y = linear_regression_data(n=2_000, d=2)
    kernel = CyclicalSGLD(linear_regression, steps_per_cycle=100, optimize_start=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MCMC(kernel, num_samples=8, disable_progbar=True).run(x, y, 50)
    assert not [w for w in caught if re.search(HABIT, str(w.message))]


def _bar_lines(capsys) -> list[str]:
    return [line for line in re.split(r"[\r\n]", capsys.readouterr().err) if line.strip()]


def test_progress_bar_names_the_start_and_never_says_warmup_with_no_warmup(capsys, monkeypatch):
    # Pyro hides its bars under CI and in pytest-xdist's workers
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    x, y = linear_regression_data(n=2_000, d=2)
    pyro.set_rng_seed(0)
    kernel = CyclicalSGHMC(linear_regression, steps_per_cycle=100)
    MCMC(kernel, num_samples=8, warmup_steps=0).run(x, y, 50)
    lines = _bar_lines(capsys)
    starts = [line for line in lines if line.startswith("Start")]
    assert any(line.startswith("Start: optimising") for line in starts)
    assert any(line.startswith("Start: tuning") for line in starts)
    # Pyro draws its bar once labelled "Warmup" before the kernel is set up; after that
    # the bar never says Warmup again.
    first_start = next(i for i, line in enumerate(lines) if line.startswith("Start"))
    assert not [line for line in lines[first_start:] if line.startswith("Warmup")]
    final = lines[-1]
    assert final.startswith("Sample: 100%") and "8/8" in final
    assert "cycle=2/2" in final and "iteration=100/100" in final


def test_progress_bar_says_warmup_while_draws_are_discarded_and_numbers_chains(capsys, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    x, y = linear_regression_data(n=2_000, d=2)
    pyro.set_rng_seed(0)
    kernel = CyclicalSGLD(linear_regression, steps_per_cycle=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MCMC(kernel, num_samples=4, warmup_steps=4, num_chains=2).run(x, y, 50)
    lines = _bar_lines(capsys)
    for chain in (0, 1):
        mine = [line for line in lines if f" [{chain}]:" in line]
        assert any(line.startswith(f"Start: tuning [{chain}]") for line in mine)
        assert any(line.startswith(f"Warmup [{chain}]") and "cycle=1/2" in line for line in mine)
        assert mine[-1].startswith(f"Sample [{chain}]: 100%") and "cycle=2/2" in mine[-1]


PARALLEL_CHAINS = r"""
import torch, pyro, pyro.distributions as dist
import torch.multiprocessing as mp
mp.cpu_count = lambda: 4  # as on a 4-core laptop: Pyro forks a process per chain
from pyro.infer import MCMC
from pyro_csg import CyclicalSGLD
torch.manual_seed(0)
x = torch.randn(20_000, 3)  # large enough for torch's thread pool to run in the parent
y = x @ torch.tensor([1.0, -2.0, 0.5]) + torch.randn(20_000)
def model(x, y, subsample_size=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        pyro.sample("obs", dist.Normal(x[idx] @ w, 1.0), obs=y[idx])
if __name__ == "__main__":
    pyro.set_rng_seed(0)
    kernel = CyclicalSGLD(model, steps_per_cycle=100)
    mcmc = MCMC(kernel, num_samples=8, warmup_steps=0, num_chains=2, disable_progbar=True)
    mcmc.run(x, y, subsample_size=100)
    w = mcmc.get_samples(group_by_chain=True)["w"]
    assert w.shape == (2, 8, 3) and torch.isfinite(w).all(), w.shape
    assert (w.mean((0, 1)) - torch.tensor([1.0, -2.0, 0.5])).abs().max() < 0.1, w.mean((0, 1))
    print("ok")
"""


def test_chains_in_processes_of_their_own_do_not_hang_after_the_fork(tmp_path):
    """Pyro forks a process per chain where it sees enough CPUs; torch's OpenMP pool does
    not survive the fork (NUTS's chains hang there too), so each chain runs on one thread."""
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "parallel.py"
    script.write_text(PARALLEL_CHAINS)
    # Its own session, so that a hang kills the chains' processes too, not only the parent.
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("two chains in forked processes hung (killed after 120 s)")
    assert process.returncode == 0, stderr[-2000:]
    assert stdout.strip().endswith("ok")
