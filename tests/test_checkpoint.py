"""Runs that survive: the chain state, checkpoints, resume, the draw store, early stops."""

import io
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from checkpoint_run import NUM_SAMPLES, WARMUP, B, build, data
from models import linear_regression, linear_regression_data
from pyro.infer import MCMC

from pyro_csg import (
    Checkpoint,
    CheckpointError,
    CyclicalSGHMC,
    CyclicalSGLD,
    NonFiniteError,
    to_inference_data,
)
from pyro_csg.core.noise import NOISE_BATCHES, NOISE_SPACING
from pyro_csg.core.state import ChainState
from pyro_csg.services.store import read_store

SCRIPT = Path(__file__).with_name("checkpoint_run.py")
TIMEOUT = 300  # seconds; guards against a hang, far above the ~4 s a run takes


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run, in this process and without a checkpoint."""
    mcmc = build(None)
    mcmc.run(*data(), subsample_size=B)
    stats = {key: mcmc._diagnostics[0][key] for key in ("cycle", "iteration", "potential_energy")}
    return mcmc.get_samples(), stats


def start(folder, out, *flags):
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(folder), str(out), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def draws_on_disk(folder) -> int:
    return len(list((Path(folder) / "chain-0" / "draws").glob("*.nc")))


def wait_for_draws(process, folder, count):
    deadline = time.monotonic() + TIMEOUT
    while draws_on_disk(folder) < count:
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {count} draws: {finish(process)[2]}")
        assert time.monotonic() < deadline, "timed out waiting for draws"
        time.sleep(0.002)


def finish(process):
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    return process.returncode, stdout, stderr


def assert_same_as_reference(out, reference):
    result = torch.load(out, weights_only=True)
    samples, stats = reference
    for name, value in samples.items():
        assert torch.equal(result["samples"][name], value), name
    assert result["stats"] == stats


def test_sigkill_at_any_moment_then_resume_gives_the_same_draws_bit_for_bit(tmp_path, reference):
    folder, out = tmp_path / "run", tmp_path / "draws.pt"
    rng = random.Random(20261130)
    samples, _ = reference

    # 1. Killed before sampling starts (while importing and tracing), then at random moments
    #    after the store holds 1, 45 and 100 draws; each run resumes the last one's work.
    process = start(folder, out)
    time.sleep(rng.uniform(0.5, 1.5))
    process.kill()
    assert finish(process)[0] == -signal.SIGKILL
    for target in (1, 45, 100):
        process = start(folder, out)
        wait_for_draws(process, folder, target)
        # Meanwhile another process (this one) reads the run in progress.
        partial = read_store(folder)["posterior"]["w"][0]
        assert len(partial) >= target
        assert np.array_equal(partial, samples["w"][: len(partial)].numpy())
        time.sleep(rng.uniform(0.0, 0.05))
        process.kill()
        assert finish(process)[0] == -signal.SIGKILL
        assert not out.exists()

    # 2. Killed halfway through writing a checkpoint (half of its bytes in the temporary
    #    file), and halfway through writing a draw file.
    for flag in ("--kill-in-save", "--kill-in-draw-write"):
        process = start(folder, out, flag, "5")
        assert finish(process)[0] == -signal.SIGKILL
        assert list(folder.glob("chain-0/*.tmp*")) or list(folder.glob("chain-0/draws/*.tmp*"))

    # 3. The last run finishes; its draws and statistics are those of the uninterrupted run.
    code, _, stderr = finish(start(folder, out))
    assert code == 0, stderr
    assert_same_as_reference(out, reference)
    assert not list(folder.rglob("*.tmp*"))  # the temporary files were cleared
    assert draws_on_disk(folder) == NUM_SAMPLES


def test_ctrl_c_keeps_every_draw_and_the_run_resumes(tmp_path, reference):
    folder, out = tmp_path / "run", tmp_path / "draws.pt"
    # 20 ms after each draw: the 128 draws after the 40th take at least 2.5 s, so the
    # signal lands mid-run however loaded the machine is. (The child restores the SIGINT
    # handler that a background launch, `make test &`, would have switched off.)
    process = start(folder, out, "--pause-per-draw", "0.02")
    # The 41st draw's file is written after the 40th draw is committed. (A signal between a
    # draw's file and its commit leaves that draw uncounted, and its file is cleared.)
    wait_for_draws(process, folder, 41)
    process.send_signal(signal.SIGINT)
    code, stdout, stderr = finish(process)
    assert code == 3, (code, out.exists(), draws_on_disk(folder), stdout, stderr)
    report = json.loads(stdout.strip().splitlines()[-1])
    kept = report["kept"]
    assert kept >= 40 and kept == draws_on_disk(folder)
    (note,) = report["notes"]
    assert f"stopped after {kept} retained draw(s)" in note
    assert "Run the same script again to resume" in note
    # The partial run converts to ArviZ, and its draws are the first of the full run.
    idata = to_inference_data(folder)
    assert idata.posterior.sizes["draw"] == kept
    samples, _ = reference
    assert np.array_equal(idata.posterior["w"].values[0], samples["w"][:kept].numpy())
    code, _, stderr = finish(start(folder, out))
    assert code == 0, stderr
    assert_same_as_reference(out, reference)


def test_a_stop_between_a_draws_file_and_its_commit_keeps_disk_and_count_agreeing(
    tmp_path, reference, monkeypatch
):
    """Ctrl-C lands after the 20th retained draw's file is written, before the chain counts
    it: the file is cleared, the checkpoint, the store and get_samples() all say 19, and the
    resumed run makes the draw again, the same as the uninterrupted run's."""
    from pyro_csg.services.resume import ChainRecord

    folder = tmp_path / "run"
    real_commit, commits = ChainRecord.commit, [0]

    def commit(self, state, draw, per_cycle):
        commits[0] += 1
        if commits[0] == WARMUP + 20:
            raise KeyboardInterrupt
        real_commit(self, state, draw, per_cycle)

    monkeypatch.setattr(ChainRecord, "commit", commit)
    mcmc = build(folder)
    with pytest.raises(KeyboardInterrupt) as caught:
        mcmc.run(*data(), subsample_size=B)
    assert "stopped after 19 retained draw(s)" in caught.value.__notes__[0]
    assert len(mcmc.kernel.get_samples()["w"]) == 19
    assert draws_on_disk(folder) == 19
    assert to_inference_data(folder).posterior.sizes["draw"] == 19
    monkeypatch.setattr(ChainRecord, "commit", real_commit)
    mcmc = build(folder)
    mcmc.run(*data(), subsample_size=B)
    assert torch.equal(mcmc.get_samples()["w"], reference[0]["w"])


def test_a_finished_run_rerun_reads_its_draws_back(tmp_path, reference):
    folder = tmp_path / "run"
    for _ in range(2):
        mcmc = build(folder)
        mcmc.run(*data(), subsample_size=B)
        assert torch.equal(mcmc.get_samples()["w"], reference[0]["w"])
    # The kernel also has its final state: iteration of the last draw, every draw counted.
    state = mcmc.kernel.state_dict()["chains"][0]
    assert state["draws"] == NUM_SAMPLES + WARMUP
    assert state["iteration"] == mcmc._diagnostics[0]["iteration"][-1]


# -- refusals ---------------------------------------------------------------------------------
def first_run(folder, **overrides):
    mcmc = build(folder, num_samples=8, **overrides)
    mcmc.run(*data(), subsample_size=B)
    return mcmc


def other_prior(x, y, subsample_size=None):
    """The checkpointed model with another prior on w: same sites, other potential."""
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), 3.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        pyro.sample("obs", dist.Normal(x[idx] @ w, sigma), obs=y[idx])


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(step_size=1e-6), "step_size = 5e-06, but this run has step_size = 1e-06"),
        (dict(friction=0.5), "friction"),
        (dict(steps_per_cycle=80), "steps_per_cycle"),
        ("data", "data"),
        ("warmup", "warmup_steps = 8, but this run has warmup_steps = 4"),
        ("chains", "num_chains = 1, but this run has num_chains = 2"),
        ("model", "latent sites"),
        ("prior", "the model changed"),
    ],
)
def test_a_checkpoint_from_other_settings_is_refused_with_the_setting_named(
    tmp_path, change, match
):
    folder = tmp_path / "run"
    first_run(folder)
    x, y = data()
    if isinstance(change, dict):
        mcmc, args = build(folder, num_samples=8, **change), (x, y)
    elif change == "data":
        mcmc, args = build(folder, num_samples=8), (x, y + 1.0)
    elif change == "warmup":
        kernel = build(folder).kernel
        mcmc, args = MCMC(kernel, 8, warmup_steps=4, disable_progbar=True), (x, y)
    elif change == "chains":
        kernel = build(folder).kernel
        mcmc, args = MCMC(kernel, 8, warmup_steps=8, num_chains=2, disable_progbar=True), (x, y)
    else:
        model = linear_regression if change == "model" else other_prior
        pyro.set_rng_seed(0)
        kernel = CyclicalSGHMC(
            model, step_size=0.01 / 2000, steps_per_cycle=100, friction=0.2, checkpoint=folder
        )
        mcmc, args = MCMC(kernel, 8, warmup_steps=8, disable_progbar=True), (x, y)
    with pytest.raises(CheckpointError, match=match) as error:
        mcmc.run(*args, subsample_size=B)
    assert "resume=False" in str(error.value)
    # Starting over is one argument away.
    mcmc.kernel.checkpoint = Checkpoint(folder, resume=False)
    mcmc.run(*args, subsample_size=B)
    assert mcmc.get_samples(group_by_chain=True)["w"].shape[1] == 8


def test_a_folder_of_other_files_is_not_touched(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="not made by these kernels"):
        first_run(folder)
    assert (folder / "notes.txt").read_text() == "precious"
    with pytest.raises(TypeError, match="checkpoint must be a folder path"):
        build(3.5)


# -- early stops ------------------------------------------------------------------------------
def blows_up_after(calls):
    """A quadratic potential that turns NaN after ``calls`` evaluations."""
    count = [0]

    def potential(params):
        count[0] += 1
        energy = 0.5 * (params["z"] ** 2).sum()
        return energy * float("nan") if count[0] > calls else energy

    return potential


@pytest.mark.parametrize("with_checkpoint", [False, True])
def test_a_non_finite_error_keeps_the_draws_made_before_it(tmp_path, with_checkpoint):
    folder = tmp_path / "run" if with_checkpoint else None
    kernel = CyclicalSGLD(
        potential_fn=blows_up_after(250),
        step_size=0.1,
        steps_per_cycle=20,
        samples_per_cycle=4,
        checkpoint=folder,
        optimize_start=False,  # the potential's call count sets where it fails
    )
    mcmc = MCMC(
        kernel, 80, warmup_steps=0, disable_progbar=True, initial_params={"z": torch.ones(2)}
    )
    with pytest.raises(NonFiniteError) as caught:
        mcmc.run()
    error = caught.value
    # 250 evaluations: the start, one per iteration, and NOISE_BATCHES at each noise
    # measurement (at a cycle's first kept draw, at least NOISE_SPACING iterations after
    # the last one). The retained iterations of 20-step cycles with 4 draws are 13, 15,
    # 18, 20 (+ 20 per cycle); a draw is kept if its iteration's evaluation came before
    # the 251st.
    retained = [20 * c + p for c in range(16) for p in (13, 15, 18, 20)]
    measured_at: list[int] = []
    for first in retained[::4]:
        if not measured_at or first - measured_at[-1] >= NOISE_SPACING:
            measured_at.append(first)
    measured_before = [sum(1 for first in measured_at if first < k) for k in retained]
    expected = sum(
        1
        for k, m in zip(retained, measured_before, strict=True)
        if 1 + k + NOISE_BATCHES * m <= 250
    )
    assert error.num_draws == expected == 48
    assert error.samples["z"].shape == (expected, 2)
    assert torch.isfinite(error.samples["z"]).all()
    assert torch.equal(kernel.get_samples()["z"], error.samples["z"])
    (note,) = error.__notes__
    assert f"stopped after {expected} retained draw(s) (12 complete cycle(s) of 4)" in note
    if with_checkpoint:
        assert "on disk in" in note and "checkpoint" in note
        idata = to_inference_data(folder)
        assert np.array_equal(idata.posterior["z"].values[0], error.samples["z"].numpy())
    else:
        assert "Pass checkpoint=" in note


def test_an_error_in_the_model_keeps_the_draws():
    x, y = linear_regression_data(n=200, d=2)
    calls = [0]

    def flaky(x, y, subsample_size=None):
        calls[0] += 1
        if calls[0] > 30:
            raise RuntimeError("the data server went away")
        linear_regression(x, y, subsample_size)

    kernel = CyclicalSGLD(
        flaky,
        step_size=1e-4,
        steps_per_cycle=8,
        compile_potential=False,
        optimize_start=False,
        control_variates=False,  # the model's call count sets where it fails
    )
    mcmc = MCMC(kernel, 20, warmup_steps=0, disable_progbar=True)
    with pytest.raises(RuntimeError, match="the data server went away") as caught:
        mcmc.run(x, y, subsample_size=20)
    kept = len(kernel.get_samples()["w"])
    assert kept > 0
    assert f"stopped after {kept} retained draw(s)" in caught.value.__notes__[0]


# -- the chain state --------------------------------------------------------------------------
def short_kernel(**overrides):
    settings = dict(step_size=0.01 / 400, steps_per_cycle=40, samples_per_cycle=2, friction=0.5)
    return CyclicalSGHMC(linear_regression, **{**settings, **overrides})


def test_state_dict_round_trip_continues_the_chain_exactly():
    x, y = linear_regression_data(n=400, d=2)
    pyro.set_rng_seed(3)
    whole = MCMC(short_kernel(), 16, warmup_steps=0, disable_progbar=True)
    whole.run(x, y, subsample_size=20)

    pyro.set_rng_seed(3)
    first = MCMC(short_kernel(), 8, warmup_steps=0, disable_progbar=True)
    first.run(x, y, subsample_size=20)
    buffer = io.BytesIO()
    torch.save(first.kernel.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    algorithm = first.kernel.build_diffusion().state_type
    state = ChainState.from_state_dict(saved["chains"][0], algorithm)
    assert state.draws == 8 and state.iteration == 160 and state.algorithm.momentum.shape == (2,)

    pyro.set_rng_seed(999)  # the loaded state carries its own random stream
    later = short_kernel()
    later.load_state_dict(saved)
    second = MCMC(later, 8, warmup_steps=0, disable_progbar=True)
    second.run(x, y, subsample_size=20)
    joined = torch.cat([first.get_samples()["w"], second.get_samples()["w"]])
    assert torch.equal(joined, whole.get_samples()["w"])
    assert second._diagnostics[0]["iteration"] == whole._diagnostics[0]["iteration"][8:]

    other = short_kernel(friction=0.3)
    other.load_state_dict(saved)
    with pytest.raises(CheckpointError, match="friction"):
        MCMC(other, 8, warmup_steps=0, disable_progbar=True).run(x, y, subsample_size=20)


def test_the_data_are_digested_only_where_a_state_is_saved_or_compared(monkeypatch):
    from pyro_csg.services import checkpoint, resume

    x, y = linear_regression_data(n=400, d=2)
    digests = []
    monkeypatch.setattr(
        resume, "data_digest", lambda *args: digests.append(1) or checkpoint.data_digest(*args)
    )
    first = MCMC(short_kernel(), 8, warmup_steps=0, disable_progbar=True)
    first.run(x, y, subsample_size=20)
    assert digests == []  # a plain run never reads its data for the digest
    saved = first.kernel.state_dict()
    assert saved["settings"]["data"] == checkpoint.data_digest((x, y), {"subsample_size": 20})
    assert len(digests) == 1
    later = short_kernel()
    later.load_state_dict(saved)
    y_other = y.clone()
    y_other[0] += 1.0
    with pytest.raises(CheckpointError, match="data"):
        MCMC(later, 8, warmup_steps=0, disable_progbar=True).run(x, y_other, subsample_size=20)


def test_two_kernels_in_one_process_do_not_share_randomness():
    x, y = linear_regression_data(n=400, d=2)

    def draws(interleave):
        pyro.set_rng_seed(5)
        first, second = short_kernel(), short_kernel()
        first.setup(0, x, y, subsample_size=20)
        second.setup(0, x, y, subsample_size=20)
        params, other, out = first.initial_params, second.initial_params, []
        for _ in range(6):
            params = first.sample(params)
            out.append(params["w"].clone())
            if interleave:
                other = second.sample(other)
                torch.randn(100)  # the global generator moves too
        return torch.stack(out), second

    alone, _ = draws(False)
    interleaved, second = draws(True)
    assert torch.equal(alone, interleaved)
    assert not torch.equal(second.state_dict()["chains"][0]["theta"], interleaved[-1])


def test_sequential_chains_each_get_a_folder_and_resume(tmp_path):
    x, y = linear_regression_data(n=400, d=2)
    folder = tmp_path / "run"
    results = []
    for _ in range(2):
        pyro.set_rng_seed(1)
        kernel = short_kernel(checkpoint=folder)
        with pytest.warns(UserWarning, match="sequentially"):
            mcmc = MCMC(kernel, 6, warmup_steps=2, num_chains=2, disable_progbar=True)
        mcmc.run(x, y, subsample_size=20)
        results.append(mcmc.get_samples(group_by_chain=True)["w"])
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0][0], results[0][1])
    for chain in (0, 1):
        assert torch.equal(kernel.get_samples(chain=chain)["w"], results[1][chain])
    with pytest.raises(ValueError, match="chain must be one of"):
        kernel.get_samples(chain=2)
    assert sorted(path.name for path in folder.glob("chain-*")) == ["chain-0", "chain-1"]
    idata = to_inference_data(folder, group_by="cycle")
    assert idata.posterior["w"].shape == (2 * 3, 2, 2)
    full = to_inference_data(
        folder, model=linear_regression, model_args=(x, y), model_kwargs={"subsample_size": 20}
    )
    assert full.log_likelihood["obs"].shape == (2, 6, 400)


def test_a_draw_file_is_netcdf_that_xarray_reads(tmp_path):
    import xarray as xr

    folder = tmp_path / "run"
    mcmc = first_run(folder)
    path = folder / "chain-0" / "draws" / "00000003.nc"
    with xr.open_dataset(path, engine="h5netcdf") as draw:
        assert draw["w"].dims == ("w_dim_0",) and draw["sigma"].dims == ()
        assert draw.attrs["draw"] == 3 and draw.attrs["chain"] == 0
        assert np.array_equal(draw["w"].values, mcmc.get_samples()["w"][3].numpy())
        iteration = int(draw.attrs["iteration"])
    with xr.open_dataset(path, engine="h5netcdf", group="unconstrained") as raw:
        assert list(raw.data_vars) == ["sigma"]  # w's transform is the identity
        assert np.isclose(np.exp(raw["sigma"].values), mcmc.get_samples()["sigma"][3].numpy())
    assert iteration == mcmc._diagnostics[0]["iteration"][3]


def test_a_longer_run_extends_a_finished_one(tmp_path):
    folder = tmp_path / "run"
    first_run(folder)  # 8 draws, checkpointed at the end
    longer = build(folder, num_samples=16)
    longer.run(*data(), subsample_size=B)
    uninterrupted = build(None, num_samples=16)
    uninterrupted.run(*data(), subsample_size=B)
    for name, value in uninterrupted.get_samples().items():
        assert torch.equal(longer.get_samples()[name], value)
    assert draws_on_disk(folder) == 16
