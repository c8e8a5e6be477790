"""A run on a CUDA device end to end: runs only where torch sees a GPU.

Everything the kernels create (the flat parameters, the chain's generator, the minibatch
indices, the control variates' full-data pass, the state saved by a checkpoint, the
full-data log-likelihood of the ArviZ conversion) must follow the model's device.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from arviz_line import az, elpd
from models import linear_regression_data, linear_regression_posterior
from pyro.infer import MCMC

from pyro_csg import CyclicalSGHMC, CyclicalSGLD, to_inference_data

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

N, B = 20_000, 100


def regression(x, y, subsample_size=None):
    """A conjugate regression whose prior and data live on x's device; the plate has no
    device= (Pyro would make its indices on the CPU)."""
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1], device=x.device), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        pyro.sample("obs", dist.Normal(x[idx] @ w, 1.0), obs=y[idx])


@pytest.mark.parametrize("kernel_class", [CyclicalSGHMC, CyclicalSGLD])
def test_a_cuda_run_end_to_end(kernel_class, tmp_path):
    x, y = linear_regression_data(n=N, d=3)
    mean, sd = linear_regression_posterior(x, y)
    x, y = x.cuda(), y.cuda()
    pyro.set_rng_seed(0)
    kernel = kernel_class(regression, steps_per_cycle=200, checkpoint=str(tmp_path / "run"))
    mcmc = MCMC(kernel, num_samples=30 * 4, warmup_steps=0, disable_progbar=True)
    mcmc.run(x, y, subsample_size=B)
    draws = mcmc.get_samples()["w"]
    assert draws.device.type == "cuda"
    assert torch.isfinite(draws).all()
    run = kernel._chains[0]
    assert run.state.theta.device.type == "cuda"
    assert run.chain.batches[0].next().device.type == "cuda"  # the data's device, not the plate's
    centre = run.state.estimator.centre
    assert centre.theta.device.type == "cuda"
    errors = ((draws.double().mean(0).cpu() - mean) / sd).abs()
    assert errors.max() < 0.5, errors

    idata = to_inference_data(mcmc)
    assert idata.log_likelihood["obs"].shape == (1, 120, N)
    assert np.isfinite(elpd(az.loo(idata)))
    stored = to_inference_data(str(tmp_path / "run"), log_likelihood=False)
    np.testing.assert_allclose(stored.posterior["w"].values[0], draws.cpu().numpy())

    # Resumed from its checkpoint, the run just reads its draws back.
    pyro.set_rng_seed(0)
    again = kernel_class(regression, steps_per_cycle=200, checkpoint=str(tmp_path / "run"))
    rerun = MCMC(again, num_samples=30 * 4, warmup_steps=0, disable_progbar=True)
    rerun.run(x, y, subsample_size=B)
    assert torch.equal(rerun.get_samples()["w"], draws)
