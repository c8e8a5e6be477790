"""Gradient estimators: the full-data gradient, and control variates around a centre.

Notation as in :mod:`pyro_csg.potential`: ``U(theta) = U_0(theta) + sum_i l_i(theta)``
with ``U_0`` the prior and Jacobian terms and ``l_i = -log p(y_i | z)``; a minibatch ``b``
of ``B`` of the ``N`` data gives ``U~(theta; b) = U_0(theta) + (N / B) sum_{i in b}
l_i(theta)``.

**Full data.** :func:`full_value_and_grad` walks the subsampled plate window by window
(:func:`pyro_csg.subsample.windows`): with ``K`` windows of ``B`` indices, each
``U~(theta; w_k)`` counts ``U_0`` once and its data ``N / B`` times, so::

    U(theta) = (B / N) sum_k U~(theta; w_k) + (1 - K B / N) U_0(theta)

where the last window's overlap with its neighbour is masked out of the likelihood and
``U_0`` is the potential with the whole window masked (only needed when ``B`` does not
divide ``N``). Exact. The windows go through the traced graph vectorised with
:func:`torch.func.vmap`, ``WINDOW_CHUNK`` data per call (at ``N = 1e6``, ``B = 100``,
logistic regression: 0.03 s against 0.97 s for one call per window); a graph that does
not vectorise, or gives other numbers than one call per window, is called per window.

**Control variates** (SGLD-CV / SGHMC-CV; Baker, Fearnhead, Fox and Nemeth, *Control
variates for stochastic gradient MCMC*, Statistics and Computing 2019). Around a centre
``theta_hat`` with the full-data ``U(theta_hat)`` and ``grad U(theta_hat)``::

    grad U~cv(theta; b) = grad U~(theta; b) - grad U~(theta_hat; b) + grad U(theta_hat)
                        = grad U_0(theta) + grad U_data(theta_hat)
                          + (N / B) sum_{i in b} [grad l_i(theta) - grad l_i(theta_hat)]

(and the same for ``U~cv``). It is unbiased for every centre, and its variance scales
with ``|theta - theta_hat|^2`` instead of with the spread of the per-datum gradients, so
near the centre it is small however large ``N / B`` is. Each step costs two minibatch
gradients; moving the centre costs one full-data pass. The kernels move it to where each
cycle's exploration stage ends, so the variance reduction follows the chain from mode to
mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .potential import ModelError
from .subsample import windows

__all__ = ["Gradient", "Centre", "full_value_and_grad", "centre_at", "control_variates"]

WINDOW_CHUNK = 65_536
"""The most data one vectorised call of the full-data pass evaluates."""

Gradient = Callable[[torch.Tensor, Sequence[torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]
"""A gradient estimator: ``(theta, batch indices) -> (U~, grad U~)``."""


def _single_plate(potential):
    plates = tuple(potential.plates)
    if len(plates) != 1:
        raise ModelError(
            "control variates need a model with exactly one subsampled plate "
            f"(pyro.plate(..., subsample_size=B)); this one has {len(plates)}"
            + (f": {[plate.name for plate in plates]}" if plates else "")
            + ". Pass control_variates=False"
            + (", or give all but one plate subsample_size=None." if plates else ".")
        )
    return plates[0]


def full_value_and_grad(potential, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The full-data ``(U(theta), grad U(theta))`` of a model with one subsampled plate.

    Sums in float64 and returns the dtype of ``theta``.

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide.initialization import init_to_median
        >>> from pyro_csg.gradients import full_value_and_grad
        >>> from pyro_csg.potential import ModelPotential
        >>> y = torch.arange(10.0)
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y), subsample_size=4) as idx:
        ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
        >>> potential = ModelPotential(model, (y,), {}, init_to_median)
        >>> energy, grad = full_value_and_grad(potential, torch.zeros(1))
        >>> grad  # -sum(y) from the data, 0 from the prior at mu = 0
        tensor([-45.])
    """
    _single_plate(potential)
    # The windows are this rank's plate's (of B / R indices when data-parallel), and the
    # ranks share them out.
    (plate,) = potential.local_plates
    share = potential.share
    size, batch = plate.size, plate.subsample_size
    spans = windows(plate)
    weight = batch / size
    # Each window's U~ counts the prior once: K windows of weight B / N count it K B / N
    # times, and the rest is added below (by one rank).
    prior_weight = 1.0 - len(spans) * weight
    if share is not None:
        spans = spans[share.rank :: share.world_size]
    energy = torch.zeros((), dtype=torch.float64, device=theta.device)
    grad = torch.zeros(theta.shape, dtype=torch.float64, device=theta.device)
    whole = [start for start, keep_from in spans if not keep_from]
    if _vectorised(potential, theta, plate, whole):
        per_call = max(1, WINDOW_CHUNK // batch)
        offsets = torch.arange(batch, device=plate.device)
        for lo in range(0, len(whole), per_call):
            starts = torch.tensor(whole[lo : lo + per_call], device=plate.device)
            values, gradients = potential.vectorised(theta, starts[:, None] + offsets)
            energy += weight * values.double().sum()
            grad += weight * gradients.double().sum(0)
        spans = [(start, keep_from) for start, keep_from in spans if keep_from]
    for start, keep_from in spans:
        indices = [plate.window(start)]
        if keep_from:
            value, gradient = potential.eager_value_and_grad(theta, indices, keep_from)
        else:
            value, gradient = potential.local_value_and_grad(theta, indices)
        energy += weight * value.double()
        grad += weight * gradient.double()
    if abs(prior_weight) > 1e-12 and (share is None or share.writes):
        value, gradient = potential.eager_value_and_grad(theta, [plate.window(0)], batch)
        energy += prior_weight * value.double()
        grad += prior_weight * gradient.double()
    if share is not None:
        total = share.sum(torch.cat([energy.reshape(1), grad]))
        energy, grad = total[0], total[1:]
    return energy.to(theta.dtype), grad.to(theta.dtype)


def _vectorised(potential, theta: torch.Tensor, plate, starts: list[int]) -> bool:
    """Whether the potential's windows can go through one vmapped call (checked once)."""
    if getattr(potential, "_graph", None) is None or len(starts) < 2:
        return False
    if potential.windows_vectorise is None:
        offsets = torch.arange(plate.subsample_size, device=plate.device)
        probe = torch.tensor(starts[:2], device=plate.device)[:, None] + offsets
        try:
            values, gradients = potential.vectorised(theta, probe)
            ok = True
            for row, index in enumerate(probe):
                value, gradient = potential.local_value_and_grad(theta, [index])
                scale = float(gradient.abs().max()) if gradient.numel() else 0.0
                ok = ok and torch.allclose(values[row], value, rtol=1e-5, atol=1e-5)
                ok = ok and torch.allclose(
                    gradients[row], gradient, rtol=1e-5, atol=1e-6 * scale + 1e-6
                )
        except Exception:  # noqa: BLE001 -- any failure to vectorise: one call per window
            ok = False
        potential.windows_vectorise = bool(ok)
    return potential.windows_vectorise


@dataclass(frozen=True)
class Centre:
    """A control variate's centre: ``theta_hat``, ``U(theta_hat)`` and ``grad U(theta_hat)``.

    Example::

        >>> import torch
        >>> from pyro_csg.gradients import Centre
        >>> Centre(torch.zeros(2), torch.tensor(1.0), torch.ones(2)).state_dict()["energy"]
        tensor(1.)
    """

    theta: torch.Tensor
    energy: torch.Tensor
    grad: torch.Tensor

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"theta": self.theta, "energy": self.energy, "grad": self.grad}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Centre:
        return cls(state["theta"], state["energy"], state["grad"])

    def to(self, like: torch.Tensor) -> Centre:
        """On the device and dtype of ``like``."""
        return Centre(
            *(t.to(device=like.device, dtype=like.dtype) for t in self.state_dict().values())
        )


def centre_at(potential, theta: torch.Tensor) -> Centre:
    """A :class:`Centre` at ``theta``: one full-data pass.

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide.initialization import init_to_median
        >>> from pyro_csg.gradients import centre_at
        >>> from pyro_csg.potential import ModelPotential
        >>> y = torch.ones(8)
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", len(y), subsample_size=2) as idx:
        ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
        >>> centre_at(ModelPotential(model, (y,), {}, init_to_median), torch.ones(1)).grad
        tensor([1.])
    """
    energy, grad = full_value_and_grad(potential, theta)
    return Centre(theta.detach().clone(), energy, grad)


def control_variates(gradient: Gradient, centre: Centre) -> Gradient:
    """The control-variate estimator around ``centre`` (see the module docstring).

    Example::

        >>> import torch
        >>> from pyro_csg.gradients import Centre, control_variates
        >>> def noisy(theta, indices):  # U~ = 0.5 theta^2 + c theta, c the batch's noise
        ...     c = float(indices[0][0])
        ...     return 0.5 * (theta ** 2).sum() + c * theta.sum(), theta + c
        >>> centre = Centre(torch.zeros(1), torch.tensor(0.0), torch.zeros(1))
        >>> estimate = control_variates(noisy, centre)
        >>> [estimate(torch.ones(1), [torch.tensor([c])])[1].item() for c in (-3, 5)]
        [1.0, 1.0]
    """
    theta_hat, energy_hat, grad_hat = centre.theta, centre.energy, centre.grad

    def estimate(
        theta: torch.Tensor, indices: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        energy, grad = gradient(theta, indices)
        energy_0, grad_0 = gradient(theta_hat, indices)
        return energy - energy_0 + energy_hat, grad - grad_0 + grad_hat

    return estimate
