"""A checkpointed cSGHMC run, started by tests/test_checkpoint.py in a subprocess.

``python checkpoint_run.py FOLDER OUT [--kill-in-save K] [--kill-in-draw-write K]
[--pause-per-draw SECONDS]``
runs the same chain every time (seed 0) with ``checkpoint=FOLDER`` and, when it
finishes, saves its draws and statistics to OUT. The ``--kill-*`` options make the
process SIGKILL itself in the middle of writing its K-th checkpoint (after half of the
bytes) or its K-th draw file, moments too short to hit from outside. ``--pause-per-draw``
sleeps after every committed draw, so that a signal sent from outside lands mid-run even
on a loaded machine.
"""

import argparse
import json
import os
import signal
import sys

import pyro
import torch
from pyro.infer import MCMC

sys.path.insert(0, os.path.dirname(__file__))

from models import linear_regression_data, regression_with_noise_scale  # noqa: E402

from pyro_csg import CyclicalSGHMC  # noqa: E402

N, B, NUM_SAMPLES, WARMUP = 2000, 50, 160, 8


def settings():
    return dict(step_size=0.01 / N, steps_per_cycle=100, samples_per_cycle=4, friction=0.2)


def build(folder=None, num_samples=NUM_SAMPLES, **overrides):
    """The MCMC of the run, not yet run (the tests also run it in-process)."""
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    kernel = CyclicalSGHMC(
        regression_with_noise_scale, checkpoint=folder, **{**settings(), **overrides}
    )
    return MCMC(kernel, num_samples=num_samples, warmup_steps=WARMUP, disable_progbar=True)


def data():
    return linear_regression_data(n=N, d=3)


def _kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_in_save(at: int) -> None:
    import pyro_csg.services.checkpoint as checkpoint

    real_save, calls = torch.save, [0]

    def save(content, path):
        calls[0] += 1
        if calls[0] == at:
            real_save(content, path)
            size = os.path.getsize(path)
            with open(path, "r+b") as file:
                file.truncate(size // 2)
            _kill_self()
        real_save(content, path)

    checkpoint.torch = type(sys)("torch_with_a_fault")
    checkpoint.torch.__dict__.update(torch.__dict__)
    checkpoint.torch.save = save


def _kill_in_draw_write(at: int) -> None:
    import pyro_csg.services.store as store

    real_add, calls = store._add_variable, [0]

    def add_variable(group, name, value):
        real_add(group, name, value)
        calls[0] += 1
        if calls[0] == at:
            _kill_self()

    store._add_variable = add_variable


def _pause_per_draw(seconds: float) -> None:
    import time

    from pyro_csg.adapter.kernels import CyclicalKernel

    real_sample = CyclicalKernel._sample

    def _sample(self, chain, params):
        draw = real_sample(self, chain, params)  # stored and committed
        time.sleep(seconds)  # still inside the kernel's sample(), like its own work
        return draw

    CyclicalKernel._sample = _sample


def main() -> None:
    # A shell that starts a job in the background (`cmd &`, as CI runners may) makes it
    # ignore SIGINT, and Python then never raises KeyboardInterrupt: restore Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("out")
    parser.add_argument("--kill-in-save", type=int, default=0)
    parser.add_argument("--kill-in-draw-write", type=int, default=0)
    parser.add_argument("--pause-per-draw", type=float, default=0.0)
    args = parser.parse_args()
    if args.pause_per_draw:
        _pause_per_draw(args.pause_per_draw)
    if args.kill_in_save:
        _kill_in_save(args.kill_in_save)
    if args.kill_in_draw_write:
        _kill_in_draw_write(args.kill_in_draw_write)
    mcmc = build(args.folder)
    try:
        mcmc.run(*data(), subsample_size=B)
    except KeyboardInterrupt as error:
        kept = len(mcmc.kernel.get_samples()["w"])
        notes = getattr(error, "__notes__", [])
        print(json.dumps({"interrupted": True, "kept": kept, "notes": notes}))
        sys.exit(3)
    stats = {key: mcmc._diagnostics[0][key] for key in ("cycle", "iteration", "potential_energy")}
    torch.save({"samples": mcmc.get_samples(), "stats": stats}, args.out)


if __name__ == "__main__":
    main()
