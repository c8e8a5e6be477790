"""cSGHMC on notebook 3's Bayesian MLP with and without control variates (issue 22).

The network, data and settings are notebook 3's (``pyro_csg.examples.digits``: an MLP
64-100-10 on scikit-learn's digits, 1,437 training and 360 test images, minibatches of
64, 12 cycles of 50 epochs, peak learning rate 0.5, 90% of each cycle exploring,
temperature 0.01, 4 draws a cycle). The same seed runs once with ``control_variates=True``
(two minibatch gradients a step, a full-data pass where the centre moves), once with
``False`` and once with the default, which chooses from the measured noise
(``digits.compare_control_variates``); the test accuracy, NLL and ECE of each run's
averaged prediction, and its seconds (sampling and prediction), one torch thread. Then
the mean and sd over seeds of each, and the difference with minus without. A short run
of each comes first, untimed, so that no side pays the one-off tracing.

    python benchmarks/bnn_control_variates.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from pyro_csg.examples import digits


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--epochs-per-cycle", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    budget = digits.Budget(num_cycles=args.cycles, epochs_per_cycle=args.epochs_per_cycle)
    x, y, x_test, y_test = digits.load_digits_split()
    print(
        f"torch {torch.__version__}, one thread; {budget.num_cycles} cycles x "
        f"{budget.epochs_per_cycle} epochs, minibatches of {budget.batch_size}; "
        f"seeds {args.seeds}"
    )
    warm_up = digits.Budget(num_cycles=1, epochs_per_cycle=3)
    digits.compare_control_variates(x, y, x_test, warm_up)  # one-off tracing and caches
    tables = {}
    for seed in args.seeds:
        results = digits.compare_control_variates(x, y, x_test, budget, seed)
        tables[seed] = digits.score_table(results, y_test)
        print(f"seed {seed}:\n{tables[seed].round(4).to_string()}", flush=True)
    per_seed = pd.concat(tables, names=["seed"])
    columns = ["accuracy", "NLL", "ECE", "seconds"]
    summary = per_seed.groupby("method", sort=False)[columns].agg(["mean", "std"])
    print(f"\nmean and sd over seeds {args.seeds}:\n{summary.round(4).to_string()}")
    with_cv = per_seed.xs("control_variates=True", level="method")[columns]
    without = per_seed.xs("control_variates=False", level="method")[columns]
    difference = (with_cv - without).agg(["mean", "std"])
    print(f"\nwith minus without (per seed, then mean and sd):\n{difference.round(4).to_string()}")
    ratio = with_cv["seconds"].sum() / without["seconds"].sum()
    print(f"seconds with / without: {ratio:.2f}x")


if __name__ == "__main__":
    main()
