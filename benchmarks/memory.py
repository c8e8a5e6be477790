"""Peak memory of a long run of a large network: draws in memory against draws on disk.

A Bayesian MLP with about 1M parameters (100 inputs, 5,000 tanh hidden units, 100
classes; 1,005,100 weights, 4.0 MB a draw in float32) on N = 2,000 synthetic points,
B = 32, cSGHMC with 20 steps per cycle and 4 draws per cycle: 200 retained draws, 800 MB
of draws in all. Each set-up runs in a fresh subprocess, which reports its peak resident
set size (``ru_maxrss``) and its resident size just before sampling (model, data, torch):

* ``MCMC``: ``pyro.infer.MCMC`` keeps every draw, and the kernel keeps a reference to
  each retained draw so that an early stop loses nothing (two copies);
* ``MCMC + checkpoint``: the draws go to disk as they are made; MCMC still keeps its own
  copy, the kernel none;
* ``MCMC(save_params=['b2']) + checkpoint``: MCMC keeps only a small site, the draws of
  every site are on disk;
* ``StreamingMCMC + checkpoint``: Pyro's streaming runner keeps running statistics only.

Run: ``python benchmarks/memory.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

D, H, C, N, B = 100, 5000, 100, 2000, 32
STEPS_PER_CYCLE, SAMPLES_PER_CYCLE = 20, 4
MODES = (
    "MCMC",
    "MCMC + checkpoint",
    "MCMC(save_params=['b2']) + checkpoint",
    "StreamingMCMC + checkpoint",
)


def model(x, y):
    import pyro
    import pyro.distributions as dist

    w1 = pyro.sample("w1", dist.Normal(0.0, 1.0).expand([D, H]).to_event(2))
    b1 = pyro.sample("b1", dist.Normal(0.0, 1.0).expand([H]).to_event(1))
    w2 = pyro.sample("w2", dist.Normal(0.0, 1.0).expand([H, C]).to_event(2))
    b2 = pyro.sample("b2", dist.Normal(0.0, 1.0).expand([C]).to_event(1))
    with pyro.plate("data", x.shape[0], subsample_size=B) as idx:
        hidden = (x[idx] @ w1 + b1).tanh()
        pyro.sample("obs", dist.Categorical(logits=hidden @ w2 + b2), obs=y[idx])


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(mode: str, draws: int) -> None:
    import pyro
    import torch
    from pyro.infer import MCMC
    from pyro.infer.autoguide.initialization import init_to_uniform
    from pyro.infer.mcmc.api import StreamingMCMC

    from pyro_csg import CyclicalSGHMC

    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=generator)
    y = torch.randint(0, C, (N,), generator=generator)
    with tempfile.TemporaryDirectory() as folder:
        kernel = CyclicalSGHMC(
            model,
            step_size=1e-6,
            steps_per_cycle=STEPS_PER_CYCLE,
            samples_per_cycle=SAMPLES_PER_CYCLE,
            init_strategy=init_to_uniform(radius=0.1),
            checkpoint=None if mode == "MCMC" else Path(folder) / "run",
        )
        runner = StreamingMCMC if mode.startswith("Streaming") else MCMC
        options = {"save_params": ["b2"]} if "save_params" in mode else {}
        mcmc = runner(kernel, num_samples=draws, warmup_steps=0, disable_progbar=True, **options)
        before = rss_mb()
        start = time.perf_counter()
        mcmc.run(x, y)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        on_disk = sum(path.stat().st_size for path in Path(folder).rglob("*")) / 2**20
        kept = len(kernel.get_samples()["b2"])  # after the peak: this reads them back
    print(
        json.dumps(
            {"before": before, "peak": peak, "seconds": seconds, "disk": on_disk, "kept": kept}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--child", choices=MODES)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.draws)
        return
    params = D * H + H + H * C + C
    draws_mb = args.draws * params * 4 / 2**20
    print(
        f"Bayesian MLP {D}-{H}-{C}: {params:,} parameters; {args.draws} draws = "
        f"{draws_mb:.0f} MB of draws (float32); one thread"
    )
    print(
        f"{'set-up':40s} {'RSS before (MB)':>15s} {'peak RSS (MB)':>14s} "
        f"{'peak - before':>13s} {'on disk (MB)':>12s} {'seconds':>8s}"
    )
    for mode in MODES:
        result = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--draws", str(args.draws)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(result.stdout.strip().splitlines()[-1])
        assert row["kept"] == args.draws
        print(
            f"{mode:40s} {row['before']:15.0f} {row['peak']:14.0f} "
            f"{row['peak'] - row['before']:13.0f} {row['disk']:12.0f} {row['seconds']:8.1f}"
        )


if __name__ == "__main__":
    main()
