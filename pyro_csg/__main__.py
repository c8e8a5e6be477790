"""Command line: ``python -m pyro_csg demo`` (or ``pyro-csg demo``).

The demo runs short versions of the example notebooks 2 and 3:

1. the cSG-MCMC paper's mixture of 25 Gaussians: cSGLD against SGLD with a decaying
   step and Pyro's NUTS, on the same number of gradient evaluations, counting the modes
   each visits;
2. a Bayesian MLP (a ``PyroModule``) on scikit-learn's bundled digits: cSGHMC against
   SGHMC with a constant and a decaying step, a MAP network trained with SGD and MC
   dropout, on the same number of epochs, scored on the test set.

It prints both tables and writes the figures (PNG) and the cyclical runs' ArviZ
InferenceData (netCDF) into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from . import __version__


def _mixture(args, out: Path, progress: bool) -> list[Path]:
    import matplotlib.pyplot as plt

    from .analysis.arviz import to_inference_data
    from .analysis.modes import analyse, diagnostic_table, take_census
    from .analysis.plotting import plot_schedule
    from .examples import mixture

    budget = args.mixture_cycles * args.mixture_steps_per_cycle
    thinning = 10 if budget % 10 == 0 else 1
    print(
        f"\n== 1. Mixture of 25 Gaussians: {budget:,} gradient evaluations per sampler, "
        f"seed {args.seed} ==",
        flush=True,
    )
    csgld = mixture.run_csgld(
        num_cycles=args.mixture_cycles,
        steps_per_cycle=args.mixture_steps_per_cycle,
        samples_per_cycle=min(100, args.mixture_steps_per_cycle // 2),
        seed=args.seed,
        progress=progress,
    )
    sgld = mixture.run_sgld(num_steps=budget, thinning=thinning, seed=args.seed, progress=progress)
    nuts = mixture.run_nuts(
        budget=budget, warmup_steps=min(500, budget // 10), seed=args.seed, progress=progress
    )
    runs = [csgld, sgld, nuts]
    print(mixture.visits_table(runs).to_string(index=False), flush=True)
    idata = to_inference_data(csgld.mcmc, log_likelihood=False)
    analysis = analyse(idata, None)  # regrouped once for the diagnostic and the census
    census = take_census(analysis)
    alarms = list(diagnostic_table(analysis).query("alarm").index)
    print(
        f"cSGLD's cycle diagnostic: alarm on {alarms or 'no element'}; mode census: "
        f"{census.num_modes} mode(s) found by its {len(census.assignment)} cycles",
        flush=True,
    )

    written = [out / "mixture_draws.png", out / "mixture_schedule.png", out / "mixture_csgld.nc"]
    axes = mixture.plot_draws(runs)
    axes[0].figure.savefig(written[0], dpi=100)
    ax = plot_schedule(csgld.mcmc.kernel, num_cycles=min(3, args.mixture_cycles))
    ax.figure.savefig(written[1], dpi=100)
    plt.close("all")
    idata.to_netcdf(written[2])
    return written


def _digits(args, out: Path, progress: bool) -> list[Path]:
    import matplotlib.pyplot as plt

    from .analysis.arviz import to_inference_data
    from .examples import digits

    budget = digits.Budget(num_cycles=args.bnn_cycles, epochs_per_cycle=args.bnn_epochs_per_cycle)
    x, y, x_test, y_test = digits.load_digits_split()
    print(
        f"\n== 2. Bayesian MLP on the digits: {budget.epochs} epochs per method "
        f"(cSGHMC: {budget.num_cycles} cycles x {budget.epochs_per_cycle} epochs), "
        f"{len(y)} train / {len(y_test)} test images, seed {args.seed} ==",
        flush=True,
    )
    results = digits.compare_methods(
        x, y, x_test, y_test, budget, seed=args.seed, include_posterior=False, progress=progress
    )
    table = digits.score_table(results, y_test)
    print(table.round(4).to_string(), flush=True)

    written = [out / "digits_ensemble.png", out / "digits_csghmc.nc"]
    # The figure compares cSGHMC with the MAP network: over seeds, since one seed's margin
    # is smaller than the spread between seeds (notebook 3).
    seeds = [args.seed + i for i in range(args.bnn_seeds)]
    print(f"cSGHMC's ensemble and the MAP network over seeds {seeds}, for the figure", flush=True)
    curves = digits.ensemble_against_map(x, y, x_test, y_test, budget, seeds, progress, results)
    plot_ensemble_over_seeds(curves).figure.savefig(written[0], dpi=100)
    plt.close("all")
    to_inference_data(results["cSGHMC"].run.mcmc).to_netcdf(written[1])
    return written


def plot_ensemble_over_seeds(curves):
    """The test NLL of cSGHMC's ensemble of its first k cycles against the MAP network's:
    every seed's curve, their mean, and the MAP networks' mean and range."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    sampled, map_nll = curves[curves["cycles"] > 0], curves[curves["cycles"] == 0]["NLL"]
    seeds = sorted(int(seed) for seed in curves["seed"].unique())
    for number, (_, curve) in enumerate(sampled.groupby("seed")):
        label = f"cSGHMC, each seed ({len(seeds)})" if number == 0 else None
        ax.plot(curve["cycles"], curve["NLL"], color="tab:blue", alpha=0.35, lw=1, label=label)
    mean = sampled.groupby("cycles")["NLL"].mean()
    ax.plot(mean.index, mean.values, color="tab:blue", marker="o", lw=2, label="cSGHMC, mean")
    ax.axhspan(map_nll.min(), map_nll.max(), color="gray", alpha=0.2, label="SGD (MAP), range")
    ax.axhline(map_nll.mean(), color="gray", ls="--", label="SGD (MAP), mean")
    ax.set(
        xlabel="cycles in the ensemble (k)",
        ylabel="test NLL (nats per image)",
        title=f"Digits: cSGHMC's ensemble and the MAP network, seeds {', '.join(map(str, seeds))}",
    )
    ax.title.set_fontsize("medium")
    ax.legend(fontsize="small", loc="upper right")
    return ax


def _unwritable(out: Path) -> str | None:
    """Why the demo could not write into ``out`` (None if it can), found before any work
    by creating the folder and a file in it."""
    if out.exists() and not out.is_dir():
        return "exists and is not a folder; give a folder (it is created if missing)"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        return f"cannot write there ({error.strerror or error}); give another folder"
    return None


def demo(args: argparse.Namespace) -> list[Path]:
    """Run both parts of the demo with the parsed options of :func:`main`; return the
    paths of the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, whatever the user's backend
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    print(f"pyro-csg {__version__} demo; writing into {out}/")
    written = _mixture(args, out, progress) + _digits(args, out, progress)
    print("\nwritten:")
    for path in written:
        print(f"  {path}")
    return written


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m pyro_csg`` and the ``pyro-csg`` script.

    Example (a tiny budget; the defaults take about 30 s on 2 cores)::

        >>> import contextlib, io, os, tempfile
        >>> from pyro_csg.__main__ import main
        >>> tiny = ["--mixture-cycles", "2", "--mixture-steps-per-cycle", "20",
        ...         "--bnn-cycles", "1", "--bnn-epochs-per-cycle", "2", "--no-progress"]
        >>> with tempfile.TemporaryDirectory() as out:
        ...     with contextlib.redirect_stdout(io.StringIO()):
        ...         status = main(["demo", "--out", out, *tiny])
        ...     files = sorted(os.listdir(out))
        >>> status, files[:2]
        (0, ['digits_csghmc.nc', 'digits_ensemble.png'])
    """
    parser = argparse.ArgumentParser(prog="pyro-csg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser(
        "demo",
        help="short versions of the mixture and Bayesian-network notebooks",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_demo.add_argument("--out", default="pyro-csg-demo", help="output folder (created)")
    run_demo.add_argument("--seed", type=int, default=0)
    run_demo.add_argument("--mixture-cycles", type=int, default=30, help="cSGLD cycles")
    run_demo.add_argument(
        "--mixture-steps-per-cycle",
        type=int,
        default=500,
        help="steps per cSGLD cycle; every sampler gets cycles x steps gradient evaluations",
    )
    run_demo.add_argument("--bnn-cycles", type=int, default=6, help="cSGHMC cycles")
    run_demo.add_argument(
        "--bnn-epochs-per-cycle",
        type=int,
        default=20,
        help="epochs per cSGHMC cycle; every method gets cycles x epochs epochs",
    )
    run_demo.add_argument(
        "--bnn-seeds",
        type=int,
        default=3,
        help="seeds of cSGHMC and the MAP network in the ensemble figure (from --seed on)",
    )
    run_demo.add_argument("--no-progress", action="store_true", help="hide Pyro's progress bars")
    args = parser.parse_args(argv)
    # The smallest budgets that still leave cSGLD 2 draws and cSGHMC (which samples in
    # the last 10% of a cycle) 4 draws per cycle.
    minimums = {
        "mixture_cycles": 1,
        "mixture_steps_per_cycle": 4,
        "bnn_cycles": 1,
        "bnn_epochs_per_cycle": 2,
        "bnn_seeds": 1,
    }
    for name, minimum in minimums.items():
        if getattr(args, name) < minimum:
            parser.error(f"--{name.replace('_', '-')} must be at least {minimum}")
    if not 0 <= args.seed < 2**32:  # NumPy's and torch's seeds, checked before any work
        parser.error(f"--seed must be an integer from 0 to 2**32 - 1, got {args.seed}")
    problem = _unwritable(Path(args.out))
    if problem:
        parser.error(f"--out {args.out}: {problem}")
    if args.command == "demo":
        demo(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
