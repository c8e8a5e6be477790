"""Cost of the full-data pointwise log-likelihood that ``to_inference_data`` computes.

The model is the Bayesian MLP of ``benchmarks/overhead.py`` (64 inputs, 100 tanh hidden
units, 10 classes) on N = 10,000 points with minibatches of B = 128, and ``--draws``
posterior draws (prior draws here: the cost does not depend on their values). Three ways
to get the ``(draws, N)`` log-likelihood matrix are timed:

* hand-written: one batched PyTorch expression over draws, in chunks of draws (what a
  user would write for this one network, without Pyro);
* pyro-csg, vectorised: :class:`pyro_csg.adapter.likelihood.FullData`, the model traced once and
  vmapped over draws and windows of B indices, ``chunk_size`` pairs per call;
* pyro-csg, eager: the same class forced onto its fallback, one Pyro run per draw and
  window (what an untraceable model pays).

The tracing is timed apart (once per conversion). The peak bytes that torch ops hold
during the vectorised call are measured too, for two chunk sizes.

Run: ``python benchmarks/log_likelihood.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import weakref

import torch
from overhead import B, C, D, H, N, make_data, model
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from pyro_csg.adapter.likelihood import FullData


class PeakTensorBytes(TorchDispatchMode):
    """The peak bytes held by tensors that torch ops create while the mode is active."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.owned: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self.owned.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.owned:
                    self.owned[key] = storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(tensor, self._free, key)
        return out


def prior_draws(num_draws: int, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = {"w1": (D, H), "b1": (H,), "w2": (H, C), "b2": (C,)}
    return {
        name: torch.randn(num_draws, *shape, generator=generator) for name, shape in shapes.items()
    }


def hand_written(x, y, draws, draws_per_chunk: int = 10) -> torch.Tensor:
    rows = []
    with torch.no_grad():
        for lo in range(0, draws["w1"].shape[0], draws_per_chunk):
            w1, b1, w2, b2 = (draws[k][lo : lo + draws_per_chunk] for k in ("w1", "b1", "w2", "b2"))
            hidden = torch.tanh(x @ w1 + b1[:, None, :])
            logits = hidden @ w2 + b2[:, None, :]
            rows.append(torch.log_softmax(logits, -1).gather(-1, y.expand(len(w1), -1)[..., None]))
    return torch.cat(rows)[..., 0]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--eager-draws", type=int, default=20, help="draws for the eager path")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x, y = make_data()
    draws = prior_draws(args.draws)
    print(f"Bayesian MLP {D}-{H}-{C}, N = {N:,}, B = {B}, {args.draws} draws, one thread")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}"
    )

    reference_time, reference = timed(lambda: hand_written(x, y, draws))
    full = FullData(model, (x, y), {})
    trace_time, _ = timed(lambda: full.log_likelihood({k: v[:2] for k, v in draws.items()}))
    assert full.vectorized_reason is None, full.vectorized_reason
    vector_time, ours = timed(lambda: full.log_likelihood(draws))
    error = float((torch.as_tensor(ours["obs"]) - reference).abs().max())

    eager = FullData(model, (x, y), {}, vectorize=False)
    few = {k: v[: args.eager_draws] for k, v in draws.items()}
    eager_time, _ = timed(lambda: eager.log_likelihood(few))
    eager_time *= args.draws / args.eager_draws

    print(f"{'':34s}{'seconds':>10s}{'ratio':>9s}")
    print(f"{'hand-written batched PyTorch':34s}{reference_time:10.3f}{1.0:9.2f}")
    print(f"{'pyro-csg vectorised':34s}{vector_time:10.3f}{vector_time / reference_time:9.2f}")
    print(
        f"{'pyro-csg eager (extrapolated)':34s}{eager_time:10.3f}{eager_time / reference_time:9.2f}"
    )
    print(f"tracing, once: {trace_time:.3f} s; max |difference| from hand-written: {error:.2e}")
    for chunk_size in (10_000, 100_000, 1_000_000):
        mode = PeakTensorBytes()
        with mode:
            full.log_likelihood(draws, chunk_size=chunk_size)
        print(
            f"chunk_size {chunk_size:>9,}: peak torch memory {mode.peak / 1e6:8.1f} MB "
            f"(output {args.draws * N * 4 / 1e6:.1f} MB, kept in NumPy)"
        )


if __name__ == "__main__":
    main()
