"""pyro-csg: cyclical stochastic-gradient MCMC kernels for Pyro.

``CyclicalSGLD`` and ``CyclicalSGHMC`` plug into :class:`pyro.infer.MCMC` like NUTS does,
but draw each step's gradient from a minibatch that they feed to the model's subsampled
``pyro.plate``.

Example::

    >>> import torch, pyro, pyro.distributions as dist
    >>> from pyro.infer import MCMC
    >>> from pyro_csg import CyclicalSGHMC
    >>> y = torch.randn(500)
    >>> def model(y):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     with pyro.plate("data", len(y), subsample_size=25) as idx:
    ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
    >>> kernel = CyclicalSGHMC(model, step_size=1e-4, steps_per_cycle=100, friction=0.5)
    >>> mcmc = MCMC(kernel, num_samples=3 * 4, warmup_steps=0, disable_progbar=True)
    >>> mcmc.run(y)
    >>> sorted(mcmc.get_samples())
    ['mu']

Then, in ArviZ, with the full data's observations and log-likelihood::

    >>> from pyro_csg import to_inference_data
    >>> idata = to_inference_data(mcmc)
    >>> idata.observed_data["obs"].shape
    (500,)
"""

from .adapter.kernels import CyclicalSGHMC, CyclicalSGLD
from .analysis.arviz import cycle_summary, merge_runs, to_inference_data
from .analysis.modes import ModeCensus, cycle_diagnostic, cycle_disagreement, mode_census
from .analysis.plotting import plot_cycle_diagnostics, plot_cycles, plot_schedule
from .core import diffusions, schedules
from .core.errors import ModelError, NonFiniteError
from .core.schedules import Constant, CosineCyclical, CycleLayout, PolynomialDecay
from .core.version import __version__
from .services.checkpoint import Checkpoint, CheckpointError

__all__ = [
    "CyclicalSGHMC",
    "CyclicalSGLD",
    "NonFiniteError",
    "ModelError",
    "Checkpoint",
    "CheckpointError",
    "CosineCyclical",
    "Constant",
    "PolynomialDecay",
    "CycleLayout",
    "to_inference_data",
    "merge_runs",
    "cycle_summary",
    "cycle_diagnostic",
    "mode_census",
    "ModeCensus",
    "cycle_disagreement",
    "plot_schedule",
    "plot_cycles",
    "plot_cycle_diagnostics",
    "diffusions",
    "schedules",
    "__version__",
]
