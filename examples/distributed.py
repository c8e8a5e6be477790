"""cSGHMC over several processes with torchrun: one data-parallel chain, or one chain each.

One chain, each minibatch split over the processes (the model's ``subsample_size`` is
the global batch; every rank holds the same chain; rank 0 writes the draws)::

    torchrun --standalone --nproc_per_node=2 examples/distributed.py --out runs/shared

Independent chains, one per process (``process_group=False``), each with its own seed and
run folder, merged into one ``InferenceData`` with a chain per process::

    torchrun --standalone --nproc_per_node=2 examples/distributed.py --chains --out runs/chains

On several machines, give torchrun ``--nnodes``, ``--node_rank`` and ``--rdzv_endpoint``
as usual, with ``--out`` on a file system every node sees. With CUDA, each process takes
its own GPU and the ranks talk over NCCL; on CPUs over Gloo. Re-running the same command
resumes from the run folder (a killed process stops the others with an error that says so;
launch again). The model is the Bayesian logistic regression of notebook 4 at
``--size`` data points; the script prints the posterior against its Laplace reference.
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.distributed as torch_dist
from pyro.infer import MCMC

from pyro_csg import CyclicalSGHMC, merge_runs, to_inference_data
from pyro_csg.examples.large_logistic import D, flat_draws, laplace, make_data


def logistic(x, y, subsample_size=None):
    """``w ~ N(0, I)``, ``b ~ N(0, 1)``, ``y_i ~ Bernoulli(sigmoid(x_i w + b))``, on x's
    device."""
    w = pyro.sample("w", dist.Normal(torch.zeros(D, device=x.device), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(torch.zeros((), device=x.device), 1.0))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        pyro.sample("obs", dist.Bernoulli(logits=x[idx] @ w + b), obs=y[idx])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the run folder (resumed when re-run)")
    parser.add_argument("--chains", action="store_true", help="one independent chain per rank")
    parser.add_argument("--size", type=int, default=200_000, help="N, the number of data")
    parser.add_argument("--batch", type=int, default=200, help="the global minibatch B")
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    torch_dist.init_process_group(
        "nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=10)
    )
    rank, world = torch_dist.get_rank(), torch_dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)  # the processes share the machine's cores

    x, y = make_data(args.size)
    folder = Path(args.out) / f"rank{rank}" if args.chains else Path(args.out)
    pyro.set_rng_seed(rank if args.chains else 0)  # data-parallel: rank 0's seed is used
    kernel = CyclicalSGHMC(
        logistic,
        steps_per_cycle=200,
        checkpoint=str(folder),
        process_group=False if args.chains else None,
    )
    mcmc = MCMC(kernel, num_samples=4 * args.cycles, warmup_steps=0, disable_progbar=rank > 0)
    mcmc.run(x.to(device), y.to(device), subsample_size=args.batch)
    torch_dist.barrier()  # every rank's draws are on disk

    if rank == 0:
        data = {"model": logistic, "model_args": (x, y), "model_kwargs": {}}
        if args.chains:
            runs = [str(Path(args.out) / f"rank{r}") for r in range(world)]
            idata = merge_runs(runs, **data)
        else:
            idata = to_inference_data(str(folder), **data)
        mean, sd = laplace(x, y)
        draws = flat_draws(
            {
                name: idata.posterior[name].values.reshape(-1, *idata.posterior[name].shape[2:])
                for name in ("w", "b")
            }
        )
        error = np.abs(draws.mean(0) - mean) / sd
        ratio = draws.std(0, ddof=1) / sd
        mode = f"{world} independent chains" if args.chains else f"1 chain over {world} ranks"
        print(
            f"{mode}, N={args.size}, B={args.batch}: {idata.posterior.sizes['draw']} draws "
            f"per chain, {idata.posterior.sizes['chain']} chain(s)"
        )
        print(
            f"max |mean error| {error.max():.3f} Laplace sds; sd ratios "
            f"{ratio.min():.2f}-{ratio.max():.2f}"
        )
        print(az.summary(idata, var_names=["b"], kind="diagnostics"))
    torch_dist.destroy_process_group()


if __name__ == "__main__":
    main()
