"""Data-parallel cSGHMC over torch.distributed against the same chain in one process.

The model is the Bayesian MLP of ``benchmarks/overhead.py`` (64-100-10, N = 10,000) with
a global minibatch of ``--batch`` (default 128). The same chain runs in one process and
then data-parallel over ``--ranks`` processes (Gloo on 127.0.0.1, one torch thread each,
started as ``torchrun`` would start them), each rank taking ``batch / ranks`` of every
minibatch. Printed: iterations per second of each, their ratio, and the share of a
data-parallel iteration spent in its one ``all_reduce`` (timed alone afterwards on the
same process group, with the same number of values: the gradient and ``U~``).

Run: ``python benchmarks/distributed.py [--batch 1024] [--ranks 2]`` (about a minute).
On ``R`` GPUs the same script runs with ``--backend nccl`` (one GPU per rank).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import time

import pyro
import torch
import torch.distributed as dist
from pyro.infer import MCMC

sys.path.insert(0, os.path.dirname(__file__))

from overhead import cpu_name, make_data, make_model  # noqa: E402

from pyro_csg import CyclicalSGHMC  # noqa: E402

STEPS_PER_CYCLE, SAMPLES_PER_CYCLE = 500, 4


def one_rank(args) -> None:
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device("cpu")
    if world > 1:
        dist.init_process_group(args.backend, timeout=datetime.timedelta(seconds=120))
        if args.backend == "nccl":
            device = torch.device("cuda", rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    x, y = (tensor.to(device) for tensor in make_data())
    stamps: list[float] = []
    kernel = CyclicalSGHMC(
        make_model(args.batch),
        step_size=1e-5,
        steps_per_cycle=STEPS_PER_CYCLE,
        exploration_fraction=0.8,
        samples_per_cycle=SAMPLES_PER_CYCLE,
        control_variates=False,
    )
    cycles = max(2, args.iterations // STEPS_PER_CYCLE)
    mcmc = MCMC(
        kernel,
        num_samples=cycles * SAMPLES_PER_CYCLE,
        warmup_steps=0,
        disable_progbar=True,
        hook_fn=lambda *_: stamps.append(time.perf_counter()),
    )
    mcmc.run(x, y)
    iterations = mcmc.diagnostics()["iteration"]["chain 0"]
    per_iteration = (stamps[-1] - stamps[0]) / (iterations[-1] - iterations[0])
    reduce_s = 0.0
    if world > 1:
        buffer = torch.zeros(kernel._chains[0].record.flat.size + 1, device=device)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(1000):
            dist.all_reduce(buffer)
        reduce_s = (time.perf_counter() - start) / 1000
    if rank == 0:
        print(json.dumps({"per_iteration": per_iteration, "all_reduce": reduce_s}), flush=True)
    if world > 1:
        dist.barrier()  # no rank tears down while another still talks to it
        dist.destroy_process_group()
    # Done and reported: skip the interpreter's teardown, in which Gloo's threads were seen
    # to abort a rank now and then ("terminate called without an active exception").
    sys.stdout.flush()
    os._exit(0)


def launch(world: int, args) -> dict:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, __file__, "--rank-process", "--batch", str(args.batch)]
    command += ["--iterations", str(args.iterations), "--backend", args.backend]
    processes = [
        subprocess.Popen(
            command,
            env={
                **os.environ,
                "RANK": str(rank),
                "WORLD_SIZE": str(world),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": "1",
            },
            stdout=subprocess.PIPE,
            text=True,
        )
        for rank in range(world)
    ]
    outputs = [process.communicate(timeout=1800)[0] for process in processes]
    for process in processes:
        if process.returncode:
            raise SystemExit(f"a rank failed with exit code {process.returncode}")
    return json.loads(outputs[0].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="the global minibatch B")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    parser.add_argument("--rank-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_process:
        one_rank(args)
        return
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"backend {args.backend}, one torch thread per process"
    )
    print(
        f"model: Bayesian MLP 64-100-10, N=10000, global batch B={args.batch}; "
        f"{args.iterations} iterations, {args.repeats} alternating repeats (medians)"
    )
    single, parallel = [], []
    for _ in range(args.repeats):
        single.append(launch(1, args))
        parallel.append(launch(args.ranks, args))

    def median(values):
        return sorted(values)[len(values) // 2]

    one = median([run["per_iteration"] for run in single])
    many = median([run["per_iteration"] for run in parallel])
    reduce_s = median([run["all_reduce"] for run in parallel])
    print(f"1 process            : {one * 1e6:8.1f} us / iteration  ({1 / one:7.0f} it/s)")
    print(
        f"{args.ranks} ranks (B/{args.ranks} each): {many * 1e6:8.1f} us / iteration  "
        f"({1 / many:7.0f} it/s)   speed-up {one / many:.2f}x"
    )
    print(
        f"all_reduce of the gradient: {reduce_s * 1e6:.1f} us, "
        f"{100 * reduce_s / many:.0f}% of a data-parallel iteration"
    )


if __name__ == "__main__":
    main()
