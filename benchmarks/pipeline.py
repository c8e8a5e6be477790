"""Whole pipelines against whole pipelines: effective draws per second at large N.

Issue 22's measure. The model and reference are ``benchmarks/large_n.py``'s (logistic
regression, 10 slopes and an intercept, N(0, 1) priors; the Laplace approximation in
float64). Every sampler runs one chain on one thread (but the ``--machine`` rows), and is
timed from the call to its last draw, everything it needs included:

* ``cSGHMC`` and ``cSGLD``: ``Kernel(logistic)`` with every default, minibatches of
  ``--batch``, ``draws / 4`` cycles (4 draws a cycle); and cSGHMC with the shorter
  cycles of ``--cycle-lengths`` (``steps_per_cycle``), with ``--inductor`` also under
  ``compile_potential="inductor"`` (its compile time counted);
* ``HMCECS``: NumPyro's HMCECS as NumPyro's own example (``examples/hmcecs.py``) runs it:
  the Taylor proxy's reference point found by SVI with ``AutoDelta`` (5,000 Adam steps at
  1e-3 on batches of 1,000, timed), 100 blocks, subsamples of 1,000, NUTS inside, 500
  warm-up steps, ``draws`` draws;
* ``HMCECS (free ref.)``: the same handed the exact MAP for nothing (as
  ``large_n.py`` does), a second row;
* ``Pyro NUTS`` where ``N <= --nuts-max``;
* with ``--machine``, the defaults using every core of the machine: one independent chain
  a core, each in its own process on one thread (ESS over all chains), and one chain on
  as many intra-op threads: effective draws per second per machine.

For each ``N``, seed and draw count, a row per sampler: max |mean error| and the sd
ratios (reference sds), the least bulk ESS over the 11 parameters, wall seconds, ESS
per second, the median over the run's 100-draw windows of their least ESS (and over the
same draws shuffled: :func:`window_ess`), and for the
kernels the per-datum gradients per effective draw (every datum each gradient read,
the full-data passes included); then the
ratio of cSGHMC's ESS/s to each peer's, and the medians over seeds.
ESS from 100 draws is noisy (independent draws fall below 22 one time in 20): quote the
medians over seeds or the 1,000-draw rows.

    pip install -e '.[peers]'   # NumPyro and JAX (JAX forced to one thread below)
    python benchmarks/pipeline.py --sizes 1e4 1e6 --seeds 0 1 --draws 1000
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from functools import partial

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from large_n import numpyro_installed, numpyro_logistic  # noqa: E402  (this folder)
from pyro.infer import MCMC, NUTS  # noqa: E402

from pyro_csg import CyclicalSGHMC, CyclicalSGLD  # noqa: E402
from pyro_csg.examples.large_logistic import (  # noqa: E402
    D,
    GradientCounter,
    flat_draws,
    laplace,
    logistic,
    make_data,
)
from pyro_csg.examples.large_logistic import accuracy as summarise  # noqa: E402

SVI_STEPS, SVI_BATCH, HMCECS_BATCH, BLOCKS, HMCECS_WARMUP = 5000, 1000, 1000, 100, 500


def run_kernel(kernel_class, batch, x, y, draws, seed, **options):
    pyro.set_rng_seed(seed)
    kernel = kernel_class(logistic, **options)
    mcmc = MCMC(kernel, num_samples=draws, warmup_steps=0, disable_progbar=True)
    with GradientCounter() as counter, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        mcmc.run(x, y, batch)
        seconds = time.perf_counter() - start
    return flat_draws(mcmc.get_samples()), seconds, counter.data


def _one_chain(batch, x, y, draws, seed):
    """One chain of the defaults in a worker process (one thread): its draws."""
    torch.set_num_threads(1)
    return run_kernel(CyclicalSGHMC, batch, x, y, draws, seed)[0]


def run_machine(batch, x, y, draws, seed, chains=1, threads=1):
    """``CyclicalSGHMC(model)`` using the machine: ``chains`` independent chains of
    ``draws`` draws, one a process (spawned, one thread each, the data in shared memory;
    seeds ``chains * seed + c``), as scaling.md's "many chains" runs them; or one chain
    on ``threads`` intra-op threads. Pyro's own ``MCMC(num_chains=...)`` keeps a core for
    its main process and draws the chains one after the other on 2 cores. Timed from
    the call to the last draw, the processes' start-up included; the draws as
    ``(chains, draws, D)``."""
    if chains > 1:
        import torch.multiprocessing as processes

        x, y = x.share_memory_(), y.share_memory_()
        jobs = [(batch, x, y, draws, chains * seed + c) for c in range(chains)]
        start = time.perf_counter()
        with processes.get_context("spawn").Pool(chains) as pool:
            samples = pool.starmap(_one_chain, jobs)
        return np.stack(samples), time.perf_counter() - start, None
    torch.set_num_threads(threads)
    try:
        sample, seconds, _ = run_kernel(CyclicalSGHMC, batch, x, y, draws, seed)
    finally:
        torch.set_num_threads(1)
    return sample[None], seconds, None


def run_nuts(x, y, draws, seed):
    pyro.set_rng_seed(seed)
    mcmc = MCMC(NUTS(logistic), num_samples=draws, warmup_steps=draws, disable_progbar=True)
    start = time.perf_counter()
    mcmc.run(x, y, None)
    return flat_draws(mcmc.get_samples()), time.perf_counter() - start, None


def run_hmcecs(x, y, draws, seed, reference=None):
    """NumPyro's HMCECS; ``reference=None`` finds the proxy's centre by SVI, timed."""
    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import HMCECS, SVI, Trace_ELBO
    from numpyro.infer import MCMC as NMCMC
    from numpyro.infer import NUTS as NNUTS
    from numpyro.infer.autoguide import AutoDelta

    xs, ys = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
    model = numpyro_logistic()
    svi_key, mcmc_key = jax.random.split(jax.random.PRNGKey(seed))
    start = time.perf_counter()
    if reference is None:
        svi = SVI(model, AutoDelta(model), numpyro.optim.Adam(1e-3), loss=Trace_ELBO())
        result = svi.run(svi_key, SVI_STEPS, xs, ys, SVI_BATCH, progress_bar=False)
        reference = {"w": result.params["w_auto_loc"], "b": result.params["b_auto_loc"]}
    else:
        reference = {"w": jnp.asarray(reference[:D]), "b": jnp.asarray(reference[D])}
    kernel = HMCECS(NNUTS(model), num_blocks=BLOCKS, proxy=HMCECS.taylor_proxy(reference))
    mcmc = NMCMC(kernel, num_warmup=HMCECS_WARMUP, num_samples=draws, progress_bar=False)
    mcmc.run(mcmc_key, xs, ys, HMCECS_BATCH)
    jax.block_until_ready(mcmc.get_samples()["w"])
    return flat_draws(mcmc.get_samples()), time.perf_counter() - start, None


WINDOW_OFFSETS = range(0, 100, 10)


def _window_minima(sample, mean, sd, size: int) -> list[float]:
    """The least bulk ESS of every ``size``-draw window, the windows laid end to end from
    each of :data:`WINDOW_OFFSETS` (about ten times the windows of one tiling)."""
    return [
        summarise(sample[start : start + size], mean, sd)["ess"]
        for offset in WINDOW_OFFSETS
        for start in range(offset, len(sample) - size + 1, size)
    ]


def window_ess(sample, mean, sd, size: int = 100) -> str:
    """``ordered/shuffled``: the median over the run's ``size``-draw windows of their least
    bulk ESS, and the same for the same draws in a random order (what they would give
    were they independent; 100 independent Gaussian draws of 11 coordinates give about
    60); ``-`` for runs of fewer than two windows.

    Why so many windows: the median over one tiling's ten windows of a 1,000-draw run
    moves by up to 10 with where the tiling starts (49 and 59 from the same 4,000 draws
    of the defaults at N = 1e4, starting 40 draws apart); the windows from ten offsets
    (about 90 at 1,000 draws) and the shuffled reference make it a measure.
    Shuffling keeps the draws' distribution and removes only their order."""
    sample = sample[0] if sample.ndim == 3 else sample  # several chains: the first
    if len(sample) // size < 2:
        return "-"
    shuffled = sample[np.random.default_rng(0).permutation(len(sample))]
    ordered, independent = (
        statistics.median(_window_minima(draws, mean, sd, size)) for draws in (sample, shuffled)
    )
    return f"{ordered:.0f}/{independent:.0f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e6])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--draws", type=int, nargs="+", default=[1000])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--nuts-max", type=float, default=1e4)
    parser.add_argument("--no-sgld", action="store_true", help="skip cSGLD")
    parser.add_argument("--no-hmcecs", action="store_true", help="skip NumPyro's HMCECS")
    parser.add_argument(
        "--cycle-lengths",
        type=int,
        nargs="*",
        default=[250],
        help="also cSGHMC with these steps_per_cycle (default: 250)",
    )
    parser.add_argument(
        "--inductor", action="store_true", help="also those with compile_potential='inductor'"
    )
    parser.add_argument(
        "--machine",
        action="store_true",
        help="also the defaults with every core: one chain a core in parallel processes, "
        "and one chain on that many intra-op threads (ESS per second per machine)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    peers = numpyro_installed() and not args.no_hmcecs
    print(
        f"torch {torch.__version__}, pyro {pyro.__version__}, one thread each; B = "
        f"{args.batch}; HMCECS: "
        + ("on" if peers else "skipped (--no-hmcecs, or pip install -e '.[peers]')")
    )
    print(
        f"{'N':>9} {'draws':>5} {'seed':>4} {'sampler':<20} {'max err':>7} {'sd ratio':>11} "
        f"{'ESS':>6} {'wall s':>7} {'ESS/s':>7} {'100-draw':>9} {'data/ESS':>8}"
    )
    ratios: dict[tuple, list[float]] = {}
    for size in args.sizes:
        n = int(size)
        x, y = make_data(n, 0)
        mean, sd = laplace(x, y)
        for draws in args.draws:
            for seed in args.seeds:
                common = (x, y, draws, seed)
                runs = [("cSGHMC", partial(run_kernel, CyclicalSGHMC, args.batch, *common))]
                for length in args.cycle_lengths:
                    for backend in (True, "inductor") if args.inductor else (True,):
                        name = f"cSGHMC L={length}" + (" inductor" if backend == "inductor" else "")
                        options = {"steps_per_cycle": length, "compile_potential": backend}
                        runs.append(
                            (
                                name,
                                partial(run_kernel, CyclicalSGHMC, args.batch, *common, **options),
                            )
                        )
                if args.machine:
                    cores = os.cpu_count() or 1
                    runs.append(
                        (f"cSGHMC {cores} chains", partial(run_machine, args.batch, *common, cores))
                    )
                    runs.append(
                        (
                            f"cSGHMC {cores} threads",
                            partial(run_machine, args.batch, *common, threads=cores),
                        )
                    )
                if not args.no_sgld:
                    runs.append(("cSGLD", partial(run_kernel, CyclicalSGLD, args.batch, *common)))
                if peers:
                    runs.append(("HMCECS", partial(run_hmcecs, *common)))
                    runs.append(("HMCECS (free ref.)", partial(run_hmcecs, *common, mean)))
                if n <= args.nuts_max:
                    runs.append(("Pyro NUTS", partial(run_nuts, *common)))
                rate = {}
                for name, run in runs:
                    sample, seconds, data = run()
                    stats = summarise(sample, mean, sd)
                    rate[name] = stats["ess"] / seconds
                    windows = window_ess(sample, mean, sd)
                    per_ess = "-" if data is None else f"{data / stats['ess']:.2g}"
                    print(
                        f"{n:>9} {draws:>5} {seed:>4} {name:<20} {stats['error']:>7.3f} "
                        f"{stats['ratio'][0]:>5.2f}-{stats['ratio'][1]:<5.2f} "
                        f"{stats['ess']:>6.0f} {seconds:>7.1f} {rate[name]:>7.2f} "
                        f"{windows:>9} {per_ess:>8}",
                        flush=True,
                    )
                for name in rate:
                    if name != "cSGHMC":
                        ratios.setdefault((n, draws, name), []).append(rate["cSGHMC"] / rate[name])
    print("\ncSGHMC's ESS/s over each peer's (median over seeds, and each seed's):")
    for (n, draws, name), values in ratios.items():
        each = ", ".join(f"{v:.2f}" for v in values)
        print(
            f"  N = {n:>9}, {draws:>5} draws, / {name:<20}: "
            f"{statistics.median(values):.2f}x ({each})"
        )


if __name__ == "__main__":
    main()
