"""Cost of one cSGHMC iteration inside ``pyro.infer.MCMC`` against hand-written PyTorch.

The model is a Bayesian MLP (64 inputs, 100 tanh hidden units, 10 classes, N(0, 1)
priors on every weight) on N = 10,000 synthetic points, minibatches of B = 128, one
thread. The reference is the same cSGHMC update written directly in PyTorch, as a user
would write it without Pyro (autograd on the minibatch loss, a per-parameter momentum
loop), on the same data and minibatches.

The same network written as a ``PyroModule`` with ``PyroSample`` priors is timed too, with
``--eager`` the untraced potential, and with ``--checkpoint`` a run with
``checkpoint=<temporary folder>`` (every draw written to disk, the state at every cycle's
end), whose extra cost is reported per cycle. Each side runs ``--iterations`` iterations; the
time per iteration is taken between the first and the last retained draw (steady state:
the one-off set-up and tracing are reported apart). The sides alternate ``--repeats``
times and the medians are compared.

The headline is ``CyclicalSGHMC(model)`` with every setting at its default, as a user
writes it (the automatic step with its preconditioner and noise correction; control
variates only where the measured noise says they pay, which on this network they do
not); the same loop with the hand-written settings is the like-with-like row.

Run: ``python benchmarks/overhead.py`` (about three minutes). It exits with status 1 when
the defaults' ratio is above ``--max-defaults-ratio`` (1.20) or the like-with-like ratio
above ``--max-ratio`` (1.10), so that ``make bench`` catches a slower hot loop.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC
from pyro.nn import PyroModule, PyroSample

from pyro_csg import CyclicalSGHMC, SamplerWarning

MAX_RATIO = 1.10
"""The bar for plain cSGHMC, like with like, against the hand-written loop."""
MAX_DEFAULTS_RATIO = 1.20
"""The bar for ``CyclicalSGHMC(model)`` with every setting at its default (the headline)."""

N, D, H, C, B = 10_000, 64, 100, 10, 128
STEP_SIZE, FRICTION, TEMPERATURE = 1e-5, 0.1, 1.0
STEPS_PER_CYCLE, EXPLORATION, SAMPLES_PER_CYCLE = 500, 0.8, 4


def make_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=generator)
    teacher = torch.randn(D, C, generator=generator)
    # From the seeded generator (Categorical.sample would draw from the global one).
    y = torch.multinomial(torch.softmax(x @ teacher, dim=-1), 1, generator=generator).squeeze(-1)
    return x, y


def make_model(batch: int):
    """The Bayesian MLP with minibatches of ``batch`` (``benchmarks/distributed.py`` uses
    other sizes)."""

    def model(x: torch.Tensor, y: torch.Tensor) -> None:
        w1 = pyro.sample("w1", dist.Normal(0.0, 1.0).expand([D, H]).to_event(2))
        b1 = pyro.sample("b1", dist.Normal(0.0, 1.0).expand([H]).to_event(1))
        w2 = pyro.sample("w2", dist.Normal(0.0, 1.0).expand([H, C]).to_event(2))
        b2 = pyro.sample("b2", dist.Normal(0.0, 1.0).expand([C]).to_event(1))
        with pyro.plate("data", x.shape[0], subsample_size=batch) as idx:
            hidden = torch.tanh(x[idx] @ w1 + b1)
            pyro.sample("obs", dist.Categorical(logits=hidden @ w2 + b2), obs=y[idx])

    return model


model = make_model(B)


class PyroMLP(PyroModule):
    """The same network as ``model``, written the way Pyro's BNN tutorials do."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = PyroModule[torch.nn.Linear](D, H)
        self.hidden.weight = PyroSample(dist.Normal(0.0, 1.0).expand([H, D]).to_event(2))
        self.hidden.bias = PyroSample(dist.Normal(0.0, 1.0).expand([H]).to_event(1))
        self.out = PyroModule[torch.nn.Linear](H, C)
        self.out.weight = PyroSample(dist.Normal(0.0, 1.0).expand([C, H]).to_event(2))
        self.out.bias = PyroSample(dist.Normal(0.0, 1.0).expand([C]).to_event(1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        for layer in (self.hidden, self.out):
            _ = (layer.weight, layer.bias)  # sample the weights outside the data plate
        with pyro.plate("data", x.shape[0], subsample_size=B) as idx:
            logits = self.out(torch.tanh(self.hidden(x[idx])))
            pyro.sample("obs", dist.Categorical(logits=logits), obs=y[idx])


def run_pyro(
    x,
    y,
    iterations: int,
    compile_potential: bool | str = True,
    network=model,
    checkpoint=None,
    control_variates: bool = False,
    defaults: bool = False,
) -> tuple[float, float]:
    """Seconds per iteration in steady state, and the set-up time before the first draw.
    ``defaults``: ``CyclicalSGHMC(network)`` as a user writes it (automatic step,
    preconditioner, optimisation stage, control variates where they pay, 1,000-step
    cycles of 4 draws); else the hand-written loop's settings."""
    if defaults:
        kernel = CyclicalSGHMC(network)
        cycles = max(2, iterations // kernel.steps_per_cycle)
    else:
        cycles = max(2, iterations // STEPS_PER_CYCLE)
        kernel = CyclicalSGHMC(
            network,
            step_size=STEP_SIZE,
            steps_per_cycle=STEPS_PER_CYCLE,
            exploration_fraction=EXPLORATION,
            samples_per_cycle=SAMPLES_PER_CYCLE,
            friction=FRICTION,
            temperature=TEMPERATURE,
            compile_potential=compile_potential,
            checkpoint=checkpoint,
            # The hand-written loop is plain cSGHMC: compare like with like (control
            # variates add a second minibatch gradient per step; --control-variates).
            control_variates=control_variates,
        )
    stamps: list[float] = []
    mcmc = MCMC(
        kernel,
        num_samples=cycles * kernel.samples_per_cycle,
        warmup_steps=0,
        disable_progbar=True,
        hook_fn=lambda *_: stamps.append(time.perf_counter()),
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        # The kernel's advice on a run this short (noise-limited step, temperature check)
        # is not what this benchmark measures.
        warnings.simplefilter("ignore", SamplerWarning)
        mcmc.run(x, y)
    iterations_between = mcmc.diagnostics()["iteration"]["chain 0"]
    done = iterations_between[-1] - iterations_between[0]
    # The first draw's time includes set-up, tracing and the first cycle's iterations.
    first_draw_steps = iterations_between[0]
    per_iteration = (stamps[-1] - stamps[0]) / done
    setup = stamps[0] - start - first_draw_steps * per_iteration
    return per_iteration, setup


def run_reference(x, y, iterations: int) -> float:
    """Hand-written cSGHMC in PyTorch; seconds per iteration."""
    generator = torch.Generator().manual_seed(1)
    params = [
        torch.empty(D, H).uniform_(-2, 2, generator=generator),
        torch.empty(H).uniform_(-2, 2, generator=generator),
        torch.empty(H, C).uniform_(-2, 2, generator=generator),
        torch.empty(C).uniform_(-2, 2, generator=generator),
    ]
    for p in params:
        p.requires_grad_()
    buffers = [torch.zeros_like(p) for p in params]
    permutation, position = None, N
    start = time.perf_counter()
    for k in range(1, iterations + 1):
        position_in_cycle = (k - 1) % STEPS_PER_CYCLE
        eta = STEP_SIZE / 2 * (math.cos(math.pi * position_in_cycle / STEPS_PER_CYCLE) + 1)
        sampling = position_in_cycle / STEPS_PER_CYCLE >= EXPLORATION
        if position + B > N:
            permutation, position = torch.randperm(N), 0
        idx = permutation[position : position + B]
        position += B
        w1, b1, w2, b2 = params
        logits = torch.tanh(x[idx] @ w1 + b1) @ w2 + b2
        nll = torch.nn.functional.cross_entropy(logits, y[idx], reduction="sum") * (N / B)
        prior = sum(0.5 * (p * p).sum() for p in params)
        grads = torch.autograd.grad(nll + prior, params)
        with torch.no_grad():
            for p, g, buf in zip(params, grads, buffers, strict=True):
                buf.mul_(1 - FRICTION).add_(g, alpha=-eta)
                if sampling:
                    buf.add_(torch.randn_like(p), alpha=math.sqrt(2 * FRICTION * eta * TEMPERATURE))
                p.add_(buf)
    return (time.perf_counter() - start) / iterations


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--max-ratio",
        type=float,
        default=MAX_RATIO,
        help=f"exit with status 1 above this ratio to the hand-written loop (default {MAX_RATIO})",
    )
    parser.add_argument(
        "--max-defaults-ratio",
        type=float,
        default=MAX_DEFAULTS_RATIO,
        help="exit with status 1 when the defaults' ratio is above this "
        f"(default {MAX_DEFAULTS_RATIO})",
    )
    parser.add_argument("--eager", action="store_true", help="also time the eager potential")
    parser.add_argument(
        "--checkpoint", action="store_true", help="also time a run with checkpoint= (to disk)"
    )
    parser.add_argument(
        "--inductor",
        action="store_true",
        help="also time compile_potential='inductor' (torch.compile; compiles once per run)",
    )
    parser.add_argument(
        "--control-variates", action="store_true", help="also time control_variates=True"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    x, y = make_data()

    run_pyro(x, y, 2 * STEPS_PER_CYCLE)  # warm caches and lazy imports
    if args.inductor:
        start = time.perf_counter()
        run_pyro(x, y, 2 * STEPS_PER_CYCLE, compile_potential="inductor")
        print(f"first compile_potential='inductor' run: {time.perf_counter() - start:.1f} s")
    run_reference(x, y, 200)
    ours, reference, setups, eager, module, saved = [], [], [], [], [], []
    defaults, defaults_setups = [], []
    inductor, inductor_setups, variates = [], [], []
    for _ in range(args.repeats):
        per_iteration, setup = run_pyro(x, y, args.iterations)
        ours.append(per_iteration)
        setups.append(setup)
        reference.append(run_reference(x, y, args.iterations))
        per_iteration, setup = run_pyro(x, y, args.iterations, defaults=True)
        defaults.append(per_iteration)
        defaults_setups.append(setup)
        module.append(run_pyro(x, y, args.iterations, network=PyroMLP())[0])
        if args.eager:
            eager.append(run_pyro(x, y, args.iterations, compile_potential=False)[0])
        if args.checkpoint:
            with tempfile.TemporaryDirectory() as folder:
                saved.append(run_pyro(x, y, args.iterations, checkpoint=Path(folder) / "run")[0])
        if args.inductor:
            per_iteration, setup = run_pyro(x, y, args.iterations, compile_potential="inductor")
            inductor.append(per_iteration)
            inductor_setups.append(setup)
        if args.control_variates:
            variates.append(run_pyro(x, y, args.iterations, control_variates=True)[0])

    ours_us, ref_us = statistics.median(ours) * 1e6, statistics.median(reference) * 1e6
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, {platform.system()}, "
        f"torch {torch.__version__}, pyro {pyro.__version__}, threads={args.threads}"
    )
    print(
        f"model: Bayesian MLP {D}-{H}-{C}, N={N}, B={B}; {args.iterations} iterations "
        f"x {args.repeats} repeats (medians)"
    )
    print(f"hand-written PyTorch cSGHMC   : {ref_us:8.1f} us / iteration")
    print(
        f"CyclicalSGHMC in MCMC         : {ours_us:8.1f} us / iteration"
        f"   (one-off set-up and tracing: {statistics.median(setups):.2f} s)"
    )

    def against_reference(label: str, times: list[float], note: str = "") -> None:
        """One variant's median time and its median paired ratio to the hand-written loop."""
        us = statistics.median(times) * 1e6
        ratio = statistics.median(t / r for t, r in zip(times, reference, strict=True))
        print(f"  {label:<28}: {us:8.1f} us / iteration   ratio {ratio:.2f}x{note}")

    against_reference(
        "defaults: CyclicalSGHMC(model)",
        defaults,
        f"   (optimisation, tuning and tracing: {statistics.median(defaults_setups):.2f} s)",
    )
    against_reference("the same net as PyroModule", module)
    if eager:
        against_reference("eager potential (no trace)", eager)
    if inductor:
        against_reference(
            "compile_potential='inductor'",
            inductor,
            f"   (one-off set-up and compiling: {statistics.median(inductor_setups):.1f} s; "
            "the first run also filled torch.compile's cache)",
        )
    if variates:
        against_reference("control_variates=True", variates, " (two minibatch gradients a step)")
    if saved:
        saved_us = statistics.median(saved) * 1e6
        extra = statistics.median(s - o for s, o in zip(saved, ours, strict=True))
        print(
            f"  with checkpoint=<folder>    : {saved_us:8.1f} us / iteration"
            f"   ratio {statistics.median(saved) / statistics.median(ours):.2f}x to no "
            f"checkpoint: {extra * STEPS_PER_CYCLE * 1e3:.1f} ms per cycle of "
            f"{STEPS_PER_CYCLE} iterations ({SAMPLES_PER_CYCLE} draw files and one checkpoint)"
        )
    # Each repeat times the sides back to back, so their ratio cancels slow spells of a
    # shared machine; the median of those paired ratios is the headline figure.
    status = 0
    for label, times, bar in (
        ("defaults", defaults, args.max_defaults_ratio),
        ("like with like", ours, args.max_ratio),
    ):
        paired = sorted(o / r for o, r in zip(times, reference, strict=True))
        print(
            f"ratio {label} (pyro-csg / hand-written): {statistics.median(paired):.2f}x "
            f"(median of {len(paired)} paired repeats; range {paired[0]:.2f}-{paired[-1]:.2f})"
        )
        status = max(status, verdict(statistics.median(paired), bar, label))
    return status


def verdict(ratio: float, bar: float, label: str = "") -> int:
    """The exit status: 1, with a line saying so, when ``ratio`` is above ``bar``."""
    what = f"{label} ratio" if label else "ratio"
    if ratio > bar:
        print(f"FAIL: the {what} {ratio:.2f}x is above the bar {bar:.2f}x: the hot loop got slower")
        return 1
    print(f"ok: the {what} {ratio:.2f}x is within the bar {bar:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
