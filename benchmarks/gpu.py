"""cSGHMC on a ResNet-style Bayesian network: steps per second and memory, GPU or CPU.

The network is a ResNet-20-style classifier of 32 x 32 colour images (a 3 x 3 stem, three
stages of ``--blocks`` residual blocks at 16, 32 and 64 channels, each block two 3 x 3
convolutions with a ReLU, 1 x 1 projections between stages, global average pooling and a
linear layer; no normalisation layers, whose running statistics a posterior sample
cannot have), with a ``N(0, 2 / fan_in)`` prior on every weight, as the paper's CIFAR
experiments use. The data are synthetic images with labels from a random teacher, so
nothing is downloaded. cSGHMC runs with the paper's settings for deep networks (an
explicit step size ``lr / N``, friction 0.1, exploration fraction 0.8, no control
variates), first with the traced graph (the default), then with
``compile_potential="inductor"`` when ``--inductor`` is given.

Printed: the device, the number of parameters, the one-off set-up time (tracing or
compiling included), iterations per second and images per second in steady state, and the
peak memory (``torch.cuda.max_memory_allocated`` on a GPU, the process's peak RSS on the
CPU).

Run: ``python benchmarks/gpu.py`` (CUDA if available, else the CPU with a smaller run);
``--device cpu --size 2000 --iterations 200`` for a quick look.
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import MCMC
from pyro.infer.autoguide.initialization import init_to_sample

from pyro_csg import CyclicalSGHMC

WIDTHS = (16, 32, 64)
CLASSES = 10


def layer_shapes(blocks: int) -> dict[str, tuple[int, ...]]:
    """The weight shapes of the network, in forward order."""
    shapes = {"stem": (WIDTHS[0], 3, 3, 3)}
    width_in = WIDTHS[0]
    for stage, width in enumerate(WIDTHS):
        if width != width_in:
            shapes[f"s{stage}.proj"] = (width, width_in, 1, 1)
        for block in range(blocks):
            shapes[f"s{stage}.b{block}.conv1"] = (width, width, 3, 3)
            shapes[f"s{stage}.b{block}.conv2"] = (width, width, 3, 3)
        width_in = width
    shapes["fc"] = (CLASSES, WIDTHS[-1])
    shapes["fc.bias"] = (CLASSES,)
    return shapes


def forward(weights: dict[str, torch.Tensor], images: torch.Tensor, blocks: int) -> torch.Tensor:
    hidden = F.relu(F.conv2d(images, weights["stem"], padding=1))
    for stage, _ in enumerate(WIDTHS):
        if f"s{stage}.proj" in weights:
            hidden = F.conv2d(hidden, weights[f"s{stage}.proj"], stride=2)
        for block in range(blocks):
            inner = F.relu(F.conv2d(hidden, weights[f"s{stage}.b{block}.conv1"], padding=1))
            inner = F.conv2d(inner, weights[f"s{stage}.b{block}.conv2"], padding=1)
            hidden = F.relu(hidden + inner / math.sqrt(2 * blocks))  # a residual, scaled
    pooled = hidden.mean(dim=(2, 3))
    return pooled @ weights["fc"].T + weights["fc.bias"]


def make_model(blocks: int, batch: int):
    shapes = layer_shapes(blocks)

    def resnet(images: torch.Tensor, labels: torch.Tensor) -> None:
        weights = {}
        for name, shape in shapes.items():
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else WIDTHS[-1]
            prior = dist.Normal(torch.zeros(shape, device=images.device), math.sqrt(2 / fan_in))
            weights[name] = pyro.sample(name, prior.to_event(len(shape)))
        with pyro.plate("data", images.shape[0], subsample_size=batch) as idx:
            logits = forward(weights, images[idx], blocks)
            pyro.sample("obs", dist.Categorical(logits=logits), obs=labels[idx])

    return resnet, sum(math.prod(shape) for shape in shapes.values())


def make_data(size: int, device: torch.device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, 32, 32, generator=generator)
    teacher = torch.randn(3 * 8 * 8, CLASSES, generator=generator)
    labels = (F.avg_pool2d(images, 4).reshape(size, -1) @ teacher).argmax(-1)
    return images.to(device), labels.to(device)


def run(args, device: torch.device, compile_potential) -> dict:
    pyro.set_rng_seed(0)
    images, labels = make_data(args.size, device)
    model, num_params = make_model(args.blocks, args.batch)
    stamps: list[float] = []
    steps_per_cycle = max(args.iterations // 2, 20)
    kernel = CyclicalSGHMC(
        model,
        step_size=args.lr / args.size,
        steps_per_cycle=steps_per_cycle,
        exploration_fraction=0.8,
        samples_per_cycle=4,
        friction=0.1,
        control_variates=False,
        optimize_start=False,
        compile_potential=compile_potential,
        init_strategy=init_to_sample,  # He-scaled prior draws, as networks are initialised
    )
    mcmc = MCMC(
        kernel,
        num_samples=2 * 4,
        warmup_steps=0,
        disable_progbar=True,
        hook_fn=lambda *_: stamps.append(time.perf_counter()),
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    mcmc.run(images, labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        stamps[-1] = time.perf_counter()
    iterations = mcmc.diagnostics()["iteration"]["chain 0"]
    per_iteration = (stamps[-1] - stamps[0]) / (iterations[-1] - iterations[0])
    memory = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "params": num_params,
        "setup": stamps[0] - start - iterations[0] * per_iteration,
        "per_iteration": per_iteration,
        "memory_mb": memory,
        "backend": kernel.hyperparameters()["potential_backend"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=None, help="N (50,000 GPU / 5,000 CPU)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=3, help="blocks per stage (3: ResNet-20)")
    parser.add_argument("--iterations", type=int, default=None, help="(2,000 GPU / 200 CPU)")
    parser.add_argument("--lr", type=float, default=0.1, help="step_size = lr / N")
    parser.add_argument("--inductor", action="store_true", help="also compile_potential='inductor'")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.size = args.size or (50_000 if gpu else 5_000)
    args.iterations = args.iterations or (2_000 if gpu else 200)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}")
    backends = [True, "inductor"] if args.inductor else [True]
    for backend in backends:
        result = run(args, device, backend)
        label = "traced graph" if backend is True else "inductor"
        print(
            f"{label:13s} ({result['backend']}): {result['params']:,} parameters, N={args.size}, "
            f"B={args.batch}; set-up {result['setup']:.1f} s; "
            f"{1 / result['per_iteration']:.1f} it/s "
            f"({args.batch / result['per_iteration']:.0f} images/s); "
            f"peak memory {result['memory_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
