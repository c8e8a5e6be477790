"""One rank of a data-parallel cSGHMC run, started by tests/test_distributed.py.

``python distributed_run.py OUT [--checkpoint FOLDER] [--die-after K] [--timeout S]
[--hang-after K] [--other-data-on-rank-1]`` reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` as ``torchrun`` sets them; with ``WORLD_SIZE=1`` it runs without a process
group (the reference run). Every rank runs the same chain (rank 0's seed, 0) with the
kernel's defaults (optimised start, control variates, automatic step size) and saves its
draws and statistics to ``OUT.rank<R>``. ``--die-after K`` makes rank 1 exit abruptly
(``os._exit``) after its K-th draw, as a killed node would, and ``--hang-after K`` makes
it stop answering instead; ``--other-data-on-rank-1`` gives rank 1 other data.
"""

import argparse
import datetime
import json
import os
import sys
import time

import pyro
import torch
import torch.distributed as dist
from pyro.infer import MCMC

sys.path.insert(0, os.path.dirname(__file__))

from models import linear_regression_data, regression_with_noise_scale  # noqa: E402

from pyro_csg import CyclicalSGHMC  # noqa: E402

N, B, NUM_SAMPLES = 4000, 40, 24


def _fail_after(draws: int, hang: bool) -> None:
    from pyro_csg.adapter.kernels import CyclicalKernel

    real_sample, calls = CyclicalKernel._sample, [0]

    def _sample(self, chain, params):
        draw = real_sample(self, chain, params)
        calls[0] += 1
        if calls[0] == draws:
            if hang:
                time.sleep(3600)  # alive but silent: the others wait for the timeout
            os._exit(9)
        return draw

    CyclicalKernel._sample = _sample


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--die-after", type=int, default=0)
    parser.add_argument("--hang-after", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--other-data-on-rank-1", action="store_true")
    args = parser.parse_args()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        dist.init_process_group(
            "gloo", timeout=datetime.timedelta(seconds=args.timeout), rank=rank, world_size=world
        )
    if (args.die_after or args.hang_after) and rank == 1:
        _fail_after(args.die_after or args.hang_after, hang=bool(args.hang_after))
    torch.set_num_threads(1)
    # Seeded by rank on purpose: the kernel must give every rank rank 0's seed and start.
    pyro.set_rng_seed(rank)
    kernel = CyclicalSGHMC(
        regression_with_noise_scale, steps_per_cycle=60, checkpoint=args.checkpoint
    )
    mcmc = MCMC(kernel, num_samples=NUM_SAMPLES, warmup_steps=0, disable_progbar=True)
    x, y = linear_regression_data(n=N, d=3)
    if args.other_data_on_rank_1 and rank == 1:
        y = y + 1.0
    try:
        mcmc.run(x, y, subsample_size=B)
    except Exception as error:  # noqa: BLE001 -- reported to the test
        report = {"error": type(error).__name__, "message": str(error)}
        report["notes"] = getattr(error, "__notes__", [])
        report["kept"] = len(kernel.get_samples()["w"])
        print(json.dumps(report), flush=True)
        os._exit(3)  # no destructor may wait on the lost rank
    stats = {key: mcmc._diagnostics[0][key] for key in ("iteration", "potential_energy")}
    torch.save(
        {
            "samples": mcmc.get_samples(),
            "stats": stats,
            "hyperparameters": kernel.hyperparameters(),
        },
        f"{args.out}.rank{rank}",
    )
    if world > 1:
        dist.destroy_process_group()
    # Done and saved: skip the interpreter's teardown, in which Gloo's threads were seen to
    # abort a rank now and then ("terminate called without an active exception").
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
