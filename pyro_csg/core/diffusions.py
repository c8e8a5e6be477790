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

SGNHT (Ding et al., 2014), SGHMC whose friction ``alpha`` is a thermostat that adapts
so that the momentum's kinetic energy per coordinate matches the temperature, with
injected noise of friction ``a`` (the ``diffusion``; also ``alpha``'s start)::

    v'     = (1 - alpha) * v - eta * grad + sqrt(2 * a * eta * T) * xi
    theta' = theta + v'
    alpha' = clip(alpha + mean(v' ** 2) - eta * T, 0, 1)

With ``xi = None`` they are SGD and SGD with momentum ``1 - alpha`` (SGNHT's thermostat
then holds still: it measures a temperature, and SGD has none).

SGHMC's ``v`` is ``sqrt(eta)`` times the physical momentum ``r`` (``eta`` is the squared
leapfrog step). When the step changes from ``eta`` to ``eta'``, :func:`sghmc_rescale`
keeps ``r`` by ``v <- sqrt(eta' / eta) * v`` before the update (SGNHT's too; its
``alpha``, like SGHMC's friction, is a per-step friction and stays). Without it a decreasing
step heats the chain: on a unit Gaussian, the variance of the sampling stage's draws of a
cosine cycle came out 7-41% too large (1.07, 1.11, 1.16, 1.41 by position; SGLD, which
has no momentum, 1.03 at every position).

Each algorithm is also an ``(init, update)`` pair of pure functions over its own state
(a ``NamedTuple`` of tensors: SGLD has none, SGHMC its momentum, SGNHT its momentum and
thermostat), bundled by :func:`sgld`, :func:`sghmc` and :func:`sgnht` as a
:class:`Diffusion`, in the manner of BlackJAX's ``sgmcmc.diffusions`` and posteriors'
``build -> (init, update)``. A :class:`Diffusion` also declares its noise model
(``friction``: the injected noise's variance is ``2 * friction * eta * T``), which the
automatic step size and the noise diagnostic read. :func:`preconditioned` wraps any of
them for a constant diagonal preconditioner ``G``. A new algorithm is one state type and
one such pair; the sampler stays as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import NamedTuple

import torch

from .mass import is_dense, mass_times, root_times, whitened

__all__ = [
    "sgld_step",
    "sghmc_step",
    "SGLDState",
    "SGHMCState",
    "sgld_init",
    "sgld_update",
    "sghmc_init",
    "sghmc_update",
    "sghmc_rescale",
    "SGNHTState",
    "sgnht_init",
    "sgnht_update",
    "sgnht_rescale",
    "Diffusion",
    "sgld",
    "sghmc",
    "sgnht",
    "preconditioned",
]


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
        >>> from pyro_csg.core.diffusions import sgld_step
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
        >>> from pyro_csg.core.diffusions import sghmc_step
        >>> theta, v = sghmc_step(torch.tensor([1.0]), torch.tensor([1.0]),
        ...                       torch.tensor([2.0]), eta=0.5, friction=0.5)
        >>> theta, v
        (tensor([0.5000]), tensor([-0.5000]))
    """
    new_momentum = torch.mul(momentum, 1.0 - friction).add_(grad, alpha=-eta)
    if xi is not None:
        new_momentum.add_(xi, alpha=math.sqrt(2.0 * friction * eta * temperature))
    return theta + new_momentum, new_momentum


# -- each algorithm as an (init, update) pair over its own state --------------------------
class SGLDState(NamedTuple):
    """SGLD keeps no state of its own beyond ``theta``."""


class SGHMCState(NamedTuple):
    """SGHMC's momentum ``v`` (flat, like ``theta``)."""

    momentum: torch.Tensor


def sgld_init(theta: torch.Tensor) -> SGLDState:
    """SGLD's initial state: nothing to keep.

    Example::

        >>> import torch
        >>> from pyro_csg.core.diffusions import sgld_init
        >>> sgld_init(torch.zeros(2))
        SGLDState()
    """
    return SGLDState()


def sgld_update(
    theta: torch.Tensor,
    state: SGLDState,
    grad: torch.Tensor,
    eta: float,
    xi: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, SGLDState]:
    """:func:`sgld_step` over the pair ``(theta, state)``; returns ``(theta', state)``.

    Example::

        >>> import torch
        >>> from pyro_csg.core.diffusions import sgld_init, sgld_update
        >>> theta = torch.tensor([1.0])
        >>> sgld_update(theta, sgld_init(theta), torch.tensor([2.0]), eta=0.5)
        (tensor([0.]), SGLDState())
    """
    return sgld_step(theta, grad, eta, temperature, xi), state


def sghmc_init(theta: torch.Tensor) -> SGHMCState:
    """SGHMC's initial state: the momentum ``v = 0``.

    Example::

        >>> import torch
        >>> from pyro_csg.core.diffusions import sghmc_init
        >>> sghmc_init(torch.ones(2)).momentum
        tensor([0., 0.])
    """
    return SGHMCState(torch.zeros_like(theta))


def sghmc_update(
    theta: torch.Tensor,
    state: SGHMCState,
    grad: torch.Tensor,
    eta: float,
    xi: torch.Tensor | None = None,
    *,
    friction: float,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, SGHMCState]:
    """:func:`sghmc_step` over the pair ``(theta, state)``; returns ``(theta', state')``.

    Example::

        >>> import torch
        >>> from pyro_csg.core.diffusions import sghmc_init, sghmc_update
        >>> theta = torch.tensor([1.0])
        >>> theta, state = sghmc_update(theta, sghmc_init(theta), torch.tensor([2.0]),
        ...                             eta=0.5, friction=0.5)
        >>> theta, state.momentum
        (tensor([0.]), tensor([-1.]))
    """
    new_theta, momentum = sghmc_step(theta, state.momentum, grad, eta, friction, temperature, xi)
    return new_theta, SGHMCState(momentum)


def sghmc_rescale(state: SGHMCState, ratio: float) -> SGHMCState:
    """The momentum for a step size changed by ``ratio = eta' / eta``: ``sqrt(ratio) * v``.

    Example::

        >>> import torch
        >>> from pyro_csg.core.diffusions import SGHMCState, sghmc_rescale
        >>> sghmc_rescale(SGHMCState(torch.tensor([2.0])), 0.25).momentum
        tensor([1.])
    """
    return SGHMCState(state.momentum * math.sqrt(ratio))


@dataclass(frozen=True)
class Diffusion:
    """An SG-MCMC algorithm as a pair of pure functions over its own state.

    ``init(theta) -> state`` and ``update(theta, state, grad, eta, xi) -> (theta', state')``,
    with the algorithm's hyperparameters (temperature, friction) already bound.
    ``state_type`` is the state's ``NamedTuple`` class, so that a saved state (a dict of
    tensors) can be rebuilt. ``rescale(state, eta' / eta)``, if not ``None``, adapts the
    state to a new step size (SGHMC's momentum). ``friction`` is the noise model: the
    injected noise's variance per step is ``2 * friction * eta * T`` (1 for SGLD).
    ``settings`` are the hyperparameters to report (``{"friction": 0.1}``).
    ``with_mass(mass)``, if not ``None``, builds the preconditioned update itself (for an
    algorithm that needs ``G``, as SGNHT's thermostat does); otherwise
    :func:`preconditioned` wraps ``update``. ``reject(state)``, if not ``None``, is the
    state after a rejected proposal (SGHMC's and SGNHT's: the momentum dropped, so that
    the chain does not run into the same wall again). The sampler owns nothing else that
    is specific to one algorithm.

    Example::

        >>> import torch
        >>> from pyro_csg.core.diffusions import sghmc
        >>> algorithm = sghmc(friction=0.5)
        >>> theta = torch.tensor([1.0])
        >>> state = algorithm.init(theta)
        >>> theta, state = algorithm.update(theta, state, torch.tensor([2.0]), 0.5, None)
        >>> theta, state.momentum
        (tensor([0.]), tensor([-1.]))
        >>> algorithm.state_type(**state._asdict()).momentum
        tensor([-1.])
    """

    name: str
    init: Callable[[torch.Tensor], NamedTuple]
    update: Callable[..., tuple[torch.Tensor, NamedTuple]]
    state_type: type
    rescale: Callable[[NamedTuple, float], NamedTuple] | None = None
    friction: float = 1.0
    settings: dict = field(default_factory=dict)
    with_mass: Callable[[torch.Tensor], Callable] | None = None
    reject: Callable[[NamedTuple], NamedTuple] | None = None


def sgld(temperature: float = 1.0) -> Diffusion:
    """SGLD as a :class:`Diffusion`, at temperature ``T``.

    Example::

        >>> from pyro_csg.core.diffusions import sgld
        >>> sgld(temperature=0.5).name
        'sgld'
    """
    return Diffusion("sgld", sgld_init, partial(sgld_update, temperature=temperature), SGLDState)


def sghmc(friction: float, temperature: float = 1.0) -> Diffusion:
    """SGHMC as a :class:`Diffusion`, with friction ``alpha`` at temperature ``T``.

    Example::

        >>> from pyro_csg.core.diffusions import sghmc
        >>> sghmc(friction=0.1).state_type.__name__
        'SGHMCState'
    """
    update = partial(sghmc_update, friction=friction, temperature=temperature)
    return Diffusion(
        "sghmc",
        sghmc_init,
        update,
        SGHMCState,
        sghmc_rescale,
        friction,
        {"friction": friction},
        reject=lambda state: SGHMCState(torch.zeros_like(state.momentum)),
    )


# -- SGNHT --------------------------------------------------------------------------------
class SGNHTState(NamedTuple):
    """SGNHT's momentum ``v`` and thermostat ``alpha`` (a 0-d tensor: the friction of the
    next step)."""

    momentum: torch.Tensor
    thermostat: torch.Tensor


def sgnht_init(theta: torch.Tensor, *, diffusion: float) -> SGNHTState:
    """SGNHT's initial state: ``v = 0`` and ``alpha = a``.

    Example::

        >>> import torch
        >>> from pyro_csg.core.diffusions import sgnht_init
        >>> sgnht_init(torch.zeros(2), diffusion=0.1).thermostat
        tensor(0.1000)
    """
    return SGNHTState(torch.zeros_like(theta), theta.new_tensor(diffusion))


def sgnht_update(
    theta: torch.Tensor,
    state: SGNHTState,
    grad: torch.Tensor,
    eta: float,
    xi: torch.Tensor | None = None,
    *,
    diffusion: float,
    temperature: float = 1.0,
    mass: torch.Tensor | None = None,
) -> tuple[torch.Tensor, SGNHTState]:
    """One SGNHT step (see the module docstring); with a preconditioner ``G`` (``mass``;
    ``grad`` and ``xi`` already scaled by ``G`` and ``sqrt(G)``) the kinetic energy is
    ``mean(v' ** 2 / G)``, the momentum's in the preconditioned coordinates.

    Example::

        >>> import torch
        >>> from pyro_csg.core.diffusions import SGNHTState, sgnht_update
        >>> state = SGNHTState(torch.tensor([1.0]), torch.tensor(0.5))
        >>> theta, state = sgnht_update(torch.tensor([1.0]), state, torch.tensor([2.0]),
        ...                             eta=0.25, xi=torch.tensor([0.0]), diffusion=0.5)
        >>> theta, state.momentum, state.thermostat  # alpha + 0.0 ** 2 - 0.25
        (tensor([1.]), tensor([0.]), tensor(0.2500))
    """
    alpha = state.thermostat
    momentum = torch.mul(state.momentum, 1.0 - alpha).add_(grad, alpha=-eta)
    if xi is None:
        return theta + momentum, SGNHTState(momentum, alpha)
    momentum.add_(xi, alpha=math.sqrt(2.0 * diffusion * eta * temperature))
    if mass is None:
        squared = momentum * momentum
    elif is_dense(mass):
        squared = whitened(mass, momentum) ** 2
    else:
        squared = momentum * momentum / mass
    alpha = (alpha + squared.mean() - eta * temperature).clamp(0.0, 1.0)
    return theta + momentum, SGNHTState(momentum, alpha)


def sgnht_rescale(state: SGNHTState, ratio: float) -> SGNHTState:
    """For a step size changed by ``ratio``: ``v`` times ``sqrt(ratio)``, as SGHMC's.

    ``alpha`` stays: it is the friction per step, as SGHMC's ``friction`` is, and the
    injected noise ``sqrt(2 a eta T)`` keeps ``a`` per step too, so that a thermostat at
    rest (``alpha = a``) is SGHMC. Scaling ``alpha`` with ``sqrt(eta)`` (the friction
    per unit time held fixed) while ``a`` stays put made the friction fall below ``a``
    along the cosine's decay: the conjugate regression's sds came out 1.4-1.7 times too
    large.

    Example::

        >>> import torch
        >>> from pyro_csg.core.diffusions import SGNHTState, sgnht_rescale
        >>> sgnht_rescale(SGNHTState(torch.tensor([2.0]), torch.tensor(0.4)), 0.25)
        SGNHTState(momentum=tensor([1.]), thermostat=tensor(0.4000))
    """
    return SGNHTState(state.momentum * math.sqrt(ratio), state.thermostat)


def sgnht(diffusion: float = 0.1, temperature: float = 1.0) -> Diffusion:
    """SGNHT as a :class:`Diffusion`, with injected-noise friction ``a`` at temperature ``T``.

    Example::

        >>> from pyro_csg.core.diffusions import sgnht
        >>> sgnht(diffusion=0.1).settings
        {'diffusion': 0.1}
    """
    update = partial(sgnht_update, diffusion=diffusion, temperature=temperature)

    def with_mass(mass: torch.Tensor) -> Callable:
        return _preconditioned_update(partial(update, mass=mass), mass)

    return Diffusion(
        "sgnht",
        partial(sgnht_init, diffusion=diffusion),
        update,
        SGNHTState,
        sgnht_rescale,
        diffusion,
        {"diffusion": diffusion},
        with_mass,
        lambda state: SGNHTState(torch.zeros_like(state.momentum), state.thermostat),
    )


# -- a constant preconditioner: diagonal, or dense (full_mass) ------------------------------
def _preconditioned_update(update: Callable, mass: torch.Tensor) -> Callable:
    if is_dense(mass):
        return _dense_update(update, mass)
    root = mass.sqrt()

    def preconditioned_update(theta, state, grad, eta, xi):
        return update(theta, state, grad * mass, eta, None if xi is None else xi * root)

    return preconditioned_update


def _dense_update(update: Callable, mass: torch.Tensor) -> Callable:
    """``G grad = R (R^T grad)`` and ``R xi`` with a dense ``G = R R^T`` (``mass`` holds
    ``R``: :mod:`pyro_csg.core.mass`)."""

    def dense_update(theta, state, grad, eta, xi):
        noise = None if xi is None else root_times(mass, xi)
        return update(theta, state, mass_times(mass, grad), eta, noise)

    return dense_update


def preconditioned(diffusion: Diffusion, mass: torch.Tensor | None) -> Diffusion:
    """``diffusion`` with a constant preconditioner ``G`` (``mass``): its update takes ``G
    * grad`` and ``sqrt(G) * xi`` (pSGLD, preconditioned SGHMC; no correction term, since
    ``G`` does not depend on ``theta``); a dense one, held as its root ``R`` (a matrix,
    ``G = R R^T``: :mod:`pyro_csg.core.mass`), ``R (R^T grad)`` and ``R xi``. ``None``:
    ``diffusion`` itself.

    Example::

        >>> import torch
        >>> from pyro_csg.core.diffusions import preconditioned, sgld
        >>> step = preconditioned(sgld(), torch.tensor([4.0])).update
        >>> step(torch.tensor([1.0]), (), torch.tensor([0.5]), 0.25, None)[0]
        tensor([0.5000])
    """
    if mass is None:
        return diffusion
    if diffusion.with_mass is not None:
        return replace(diffusion, update=diffusion.with_mass(mass))
    return replace(diffusion, update=_preconditioned_update(diffusion.update, mass))
