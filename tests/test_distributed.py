"""Data-parallel chains over torch.distributed (Gloo on 127.0.0.1 only).

The multi-process tests start ranks as ``torchrun`` would (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``) running ``tests/distributed_run.py``; every process has
a wall-clock limit and the process group a timeout, so nothing can hang the suite.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from models import linear_regression_data, regression_with_noise_scale
from pyro.infer.autoguide.initialization import init_to_median

from pyro_csg import CyclicalSGLD, ModelError
from pyro_csg.adapter.full_data import full_value_and_grad
from pyro_csg.adapter.potential import ModelPotential
from pyro_csg.services.distributed import RankShare, resolve_process_group

SCRIPT = Path(__file__).with_name("distributed_run.py")
LIMIT_S = 300  # per launch; a run takes 3-6 s on 2 cores


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(
    world: int, out: Path, *args: str, wait_for: int | None = None
) -> list[subprocess.CompletedProcess]:
    """Run ``world`` ranks of distributed_run.py to the end (or the first ``wait_for``
    ranks, the others then killed); their completed processes."""
    port = _free_port()
    processes = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, str(SCRIPT), str(out), *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for process in processes[:wait_for]:
        try:
            stdout, stderr = process.communicate(timeout=LIMIT_S)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail(f"a rank ran past {LIMIT_S} s: a collective hung")
        results.append(
            subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        )
    for process in processes[len(results) :]:
        process.kill()
        process.communicate()
    return results


def load(out: Path, rank: int) -> dict:
    return torch.load(f"{out}.rank{rank}", weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The reference one-process run and an uninterrupted two-process run."""
    folder = tmp_path_factory.mktemp("distributed")
    outcome = {}
    for world in (1, 2):
        out = folder / f"world{world}"
        for result in launch(world, out):
            assert result.returncode == 0, result.stdout + result.stderr
        outcome[world] = [load(out, rank) for rank in range(world)]
    return outcome


def test_every_rank_holds_the_same_chain_bit_for_bit(runs):
    first, second = runs[2]
    for name, values in first["samples"].items():
        assert torch.equal(values, second["samples"][name]), name
    assert first["stats"] == second["stats"]
    assert first["hyperparameters"]["data_parallel_ranks"] == 2


def test_two_ranks_make_the_one_process_chain_to_float_tolerance(runs):
    (single,) = runs[1]
    shared = runs[2][0]
    assert "data_parallel_ranks" not in single["hyperparameters"]
    assert single["stats"]["iteration"] == shared["stats"]["iteration"]
    for name, values in single["samples"].items():
        spread = float(values.std(0).min())
        # Float32 sums in another order: differences of ~1e-6, against a posterior sd of
        # ~1e-2; a chain with another batch or noise would differ by ~1 sd.
        assert torch.allclose(shared["samples"][name], values, rtol=0, atol=1e-2 * spread), name


def test_a_rank_that_dies_stops_the_others_and_the_run_resumes_bit_for_bit(runs, tmp_path):
    folder = tmp_path / "checkpoint"
    died = launch(2, tmp_path / "died", "--checkpoint", str(folder), "--die-after", "10")
    assert died[1].returncode == 9  # the rank that died
    assert died[0].returncode == 3, died[0].stdout + died[0].stderr
    report = json.loads(died[0].stdout.strip().splitlines()[-1])
    assert report["error"] == "RankLostError"
    assert "rank 0 of 2" in report["message"] and "Relaunch the same command" in report["message"]
    assert report["kept"] == 10
    assert "resumes there" in " ".join(report["notes"])

    resumed = launch(2, tmp_path / "resumed", "--checkpoint", str(folder))
    for result in resumed:
        assert result.returncode == 0, result.stdout + result.stderr
    reference = runs[2][0]
    for rank in (0, 1):
        again = load(tmp_path / "resumed", rank)
        for name, values in reference["samples"].items():
            assert torch.equal(again["samples"][name], values), (rank, name)


# -- in one process: the arithmetic of the shares ------------------------------------------
def _potential(subsample_size=40, compile_graph=True):
    x, y = linear_regression_data(n=1000, d=3)
    potential = ModelPotential(
        regression_with_noise_scale, (x, y), {"subsample_size": subsample_size}, init_to_median
    )
    theta = torch.tensor([0.9, -1.8, 0.4, 0.1])
    if compile_graph:
        assert potential.compile(theta) is None
    return potential, theta


class _AloneShare(RankShare):
    """A rank whose collectives are the identity (its partners' parts are added by hand)."""

    def mean(self, energy, grad):
        return energy, grad

    def sum(self, tensor):
        return tensor


@pytest.mark.parametrize("compile_graph", [True, False])
def test_the_ranks_potentials_average_to_the_global_batchs(compile_graph):
    potential, theta = _potential(compile_graph=compile_graph)
    batch = torch.randperm(1000, generator=torch.Generator().manual_seed(1))[:40]
    energy, grad = potential.value_and_grad(theta, [batch])
    parts = []
    for rank in range(4):
        shared, _ = _potential(compile_graph=False)
        shared.split_batches(_AloneShare(None, rank, 4, 0))
        if compile_graph:
            assert shared.compile(theta) is None
        assert shared.local_plates[0].subsample_size == 10
        parts.append(shared.value_and_grad(theta, [batch]))
    assert torch.allclose(sum(p[0] for p in parts) / 4, energy, rtol=1e-5)
    assert torch.allclose(sum(p[1] for p in parts) / 4, grad, rtol=1e-4, atol=1e-3)


def test_the_ranks_full_data_passes_add_up_to_the_full_data_potential():
    potential, theta = _potential()
    energy, grad = full_value_and_grad(potential, theta)
    total_energy, total_grad = 0.0, 0.0
    for rank in range(3):  # 1000 data in windows of 40 / ... : 3 does not divide 40
        shared, _ = _potential(subsample_size=30, compile_graph=False)
        shared.split_batches(_AloneShare(None, rank, 3, 0))
        assert shared.compile(theta) is None
        part_energy, part_grad = full_value_and_grad(shared, theta)
        total_energy, total_grad = total_energy + part_energy, total_grad + part_grad
    assert torch.allclose(total_energy, energy, rtol=1e-5)
    assert torch.allclose(total_grad, grad, rtol=1e-4, atol=1e-2)


def test_a_global_batch_the_ranks_cannot_share_equally_is_refused():
    potential, _ = _potential(subsample_size=40, compile_graph=False)
    with pytest.raises(ModelError, match=r"plate 'data' has subsample_size=40.*multiple of 3"):
        potential.split_batches(_AloneShare(None, 0, 3, 0))


def test_process_group_arguments():
    assert resolve_process_group(None) is None  # nothing initialised: a plain run
    assert resolve_process_group(False) is None
    with pytest.raises(ValueError, match="torch.distributed is not initialised"):
        resolve_process_group(True)
    with pytest.raises(TypeError, match="process_group must be None"):
        CyclicalSGLD(regression_with_noise_scale, process_group="gloo")
    share = RankShare(None, 1, 2, 0)
    assert [index.tolist() for index in share.take([torch.arange(6)])] == [[3, 4, 5]]
    assert not share.writes


# -- the example, as the README launches it -------------------------------------------------
EXAMPLE = Path(__file__).parents[1] / "examples" / "distributed.py"


@pytest.mark.parametrize("mode", [[], ["--chains"]], ids=["data-parallel", "chains"])
def test_the_torchrun_example_runs_and_reports_the_posterior(mode, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", str(EXAMPLE), "--out", str(tmp_path / "run")]
    command += ["--size", "20000", "--cycles", "6", *mode]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=LIMIT_S, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    chains = "2 independent chains" if mode else "1 chain over 2 ranks"
    assert f"{chains}, N=20000, B=200: 24 draws per chain" in result.stdout
    error = float(result.stdout.split("max |mean error| ")[1].split()[0])
    assert error < 1.0, result.stdout  # 24 draws: a loose check that it sampled the posterior


def test_a_rank_that_stops_answering_stops_the_others_at_the_timeout(tmp_path):
    args = ["--hang-after", "6", "--timeout", "5"]
    (first,) = launch(2, tmp_path / "hung", *args, wait_for=1)
    assert first.returncode == 3, first.stdout + first.stderr
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert report["error"] == "RankLostError" and report["kept"] == 6
    assert "timeout" in report["message"]


def test_ranks_with_other_data_are_refused_on_every_rank(tmp_path):
    results = launch(2, tmp_path / "odd", "--other-data-on-rank-1")
    for rank, result in enumerate(results):
        assert result.returncode == 3, result.stdout + result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["error"] == "ValueError"
        assert "rank(s) [1] differ from rank 0" in report["message"]
        if rank == 1:
            assert "this rank differs in ['data']" in report["message"]
