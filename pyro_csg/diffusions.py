"""The update equations of (cyclical) SGLD and SGHMC, as small pure functions.

Notation, shared with the kernels: ``theta`` the flat unconstrained parameters, ``grad``
the minibatch gradient ``grad U~(theta)``, ``eta`` the step size of this iteration, ``T``
the temperature, ``xi`` a standard normal vector (``None`` in the exploration stage,
where no noise is added). The functions return new tensors and never modify their
inputs, so a draw handed to the caller stays valid after later steps.

SGLD (Welling & Teh, 2011)::

    theta' = theta - eta * grad + sqrt(2 * eta * T) * xi

SGHMC (Chen et al., 2014), with friction ``alpha`` and momentum ``v``::

    v'     = (1 - alpha) * v - eta * grad + sqrt(2 * alpha * eta * T) * xi
    theta' = theta + v'

With ``xi = None`` they are SGD and SGD with momentum ``1 - alpha``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["sgld_step", "sghmc_step"]


def sgld_step(
    theta: torch.Tensor,
    grad: torch.Tensor,
    eta: float,
    temperature: float = 1.0,
    xi: torch.Tensor | None = None,
) -> torch.Tensor:
    """One SGLD step: ``theta - eta * grad + sqrt(2 * eta * T) * xi``.

    Example::

        >>> import torch
        >>> from pyro_csg.diffusions import sgld_step
        >>> sgld_step(torch.tensor([1.0]), torch.tensor([2.0]), eta=0.5)
        tensor([0.])
        >>> sgld_step(torch.tensor([1.0]), torch.tensor([2.0]), eta=0.5, xi=torch.tensor([1.0]))
        tensor([1.])
    """
    new = torch.add(theta, grad, alpha=-eta)
    if xi is not None:
        new.add_(xi, alpha=math.sqrt(2.0 * eta * temperature))
    return new


def sghmc_step(
    theta: torch.Tensor,
    momentum: torch.Tensor,
    grad: torch.Tensor,
    eta: float,
    friction: float,
    temperature: float = 1.0,
    xi: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGHMC step; returns ``(theta', v')``.

    ``v' = (1 - alpha) * v - eta * grad + sqrt(2 * alpha * eta * T) * xi``,
    ``theta' = theta + v'``.

    Example::

        >>> import torch
        >>> from pyro_csg.diffusions import sghmc_step
        >>> theta, v = sghmc_step(torch.tensor([1.0]), torch.tensor([1.0]),
        ...                       torch.tensor([2.0]), eta=0.5, friction=0.5)
        >>> theta, v
        (tensor([0.5000]), tensor([-0.5000]))
    """
    new_momentum = torch.mul(momentum, 1.0 - friction).add_(grad, alpha=-eta)
    if xi is not None:
        new_momentum.add_(xi, alpha=math.sqrt(2.0 * friction * eta * temperature))
    return theta + new_momentum, new_momentum
