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
    >>> kernel = CyclicalSGHMC(model)  # no step size to choose: it is tuned at the start
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

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .core.version import __version__

# Where each public name lives. They are imported on first use, so that the Pyro-free
# layers (pyro_csg.core, pyro_csg.services) import without Pyro.
_PUBLIC = {
    "CyclicalSGHMC": "adapter.kernels",
    "CyclicalSGLD": "adapter.kernels",
    "CyclicalSGNHT": "adapter.kernels",
    "NonFiniteError": "core.errors",
    "ModelError": "core.errors",
    "SamplerWarning": "core.errors",
    "Checkpoint": "services.checkpoint",
    "CheckpointError": "services.checkpoint",
    "CosineCyclical": "core.schedules",
    "Constant": "core.schedules",
    "PolynomialDecay": "core.schedules",
    "CycleLayout": "core.schedules",
    "to_inference_data": "analysis.arviz",
    "merge_runs": "analysis.arviz",
    "cycle_summary": "analysis.arviz",
    "cycle_diagnostic": "analysis.modes",
    "mode_census": "analysis.modes",
    "ModeCensus": "analysis.modes",
    "cycle_disagreement": "analysis.modes",
    "plot_schedule": "analysis.plotting",
    "plot_cycles": "analysis.plotting",
    "plot_cycle_diagnostics": "analysis.plotting",
}
_MODULES = {"diffusions": "core.diffusions", "schedules": "core.schedules"}

# The same names, spelled out for readers and linters (tests/test_layers.py checks).
__all__ = [
    "CyclicalSGHMC",
    "CyclicalSGLD",
    "CyclicalSGNHT",
    "NonFiniteError",
    "ModelError",
    "SamplerWarning",
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

if TYPE_CHECKING:  # what IDEs and type checkers see
    from .adapter.kernels import CyclicalSGHMC, CyclicalSGLD, CyclicalSGNHT
    from .analysis.arviz import cycle_summary, merge_runs, to_inference_data
    from .analysis.modes import ModeCensus, cycle_diagnostic, cycle_disagreement, mode_census
    from .analysis.plotting import plot_cycle_diagnostics, plot_cycles, plot_schedule
    from .core import diffusions, schedules
    from .core.errors import ModelError, NonFiniteError, SamplerWarning
    from .core.schedules import Constant, CosineCyclical, CycleLayout, PolynomialDecay
    from .services.checkpoint import Checkpoint, CheckpointError


def __getattr__(name: str):
    if name in _MODULES:
        value = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    elif name in _PUBLIC:
        value = getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
