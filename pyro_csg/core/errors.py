"""The errors the sampler raises, shared by every layer."""

from __future__ import annotations

import torch

__all__ = ["ModelError", "NonFiniteError", "StateMismatchError", "SamplerWarning"]


class SamplerWarning(UserWarning):
    """Every warning pyro-csg itself gives: a run that may be wrong (the minibatch noise
    sets the spread, a cycle ran away, the step was halved), a slower path taken, or
    draws left out. Other libraries' warnings keep their own categories, so that
    ``warnings.filterwarnings("error", category=SamplerWarning)`` makes a script stop on
    pyro-csg's alarms alone, and ``"ignore"`` silences them alone.

    Example::

        >>> import warnings
        >>> from pyro_csg import SamplerWarning
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warnings.warn("the step was halved", SamplerWarning)
        >>> caught[0].category.__name__, issubclass(SamplerWarning, UserWarning)
        ('SamplerWarning', True)
    """


class ModelError(ValueError):
    """A model that the stochastic-gradient kernels cannot sample, found at set-up.

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide.initialization import init_to_median
        >>> from pyro_csg import ModelError
        >>> from pyro_csg.adapter.potential import ModelPotential
        >>> def observed_only(y):
        ...     pyro.sample("obs", dist.Normal(0.0, 1.0), obs=y)
        >>> try:
        ...     ModelPotential(observed_only, (torch.zeros(3),), {}, init_to_median)
        ... except ModelError as error:
        ...     print(str(error)[:35])
        the model has no latent sample site
    """


class NonFiniteError(RuntimeError):
    """The potential energy or the parameters became NaN or infinite during sampling.

    Raised instead of returning a NaN draw; the message names the iteration, cycle, stage
    and step size. The draws made before it are kept: ``error.samples`` (constrained,
    ``{site: tensor (draws, ...)}``, as ``mcmc.get_samples()`` would give) and
    ``error.num_draws``; ``kernel.get_samples()`` returns them too.

    Example::

        >>> import torch
        >>> from pyro.infer import MCMC
        >>> from pyro_csg import CyclicalSGLD, NonFiniteError
        >>> kernel = CyclicalSGLD(potential_fn=lambda p: (p["z"] ** 4).sum(), step_size=10.0,
        ...                       steps_per_cycle=50, optimize_start=False)
        >>> mcmc = MCMC(kernel, num_samples=4, warmup_steps=0, disable_progbar=True,
        ...             initial_params={"z": torch.ones(1)})
        >>> try:
        ...     mcmc.run()
        ... except NonFiniteError as error:
        ...     print(str(error)[:58], error.num_draws)
        CyclicalSGLD: the potential became NaN or infinite after t 0
    """

    samples: dict[str, torch.Tensor] | None = None
    num_draws: int = 0


class StateMismatchError(ValueError):
    """A saved chain state that does not fit this chain (another number of parameters or
    of subsampled plates); the resume service reports it as a checkpoint error."""
