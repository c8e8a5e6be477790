"""Gradient estimators: the full-data gradient, and control variates around a centre.

Notation as in :mod:`pyro_csg.adapter.potential`: ``U(theta) = U_0(theta) + sum_i l_i(theta)``
with ``U_0`` the prior and Jacobian terms and ``l_i = -log p(y_i | z)``; a minibatch ``b``
of ``B`` of the ``N`` data gives ``U~(theta; b) = U_0(theta) + (N / B) sum_{i in b}
l_i(theta)``.

The full-data ``U`` and its gradient come from the potential's
``full_value_and_grad`` (for a Pyro model: :mod:`pyro_csg.adapter.full_data`).

**Control variates** (SGLD-CV / SGHMC-CV; Baker, Fearnhead, Fox and Nemeth, *Control
variates for stochastic gradient MCMC*, Statistics and Computing 2019). Around a centre
``theta_hat`` with the full-data ``U(theta_hat)`` and ``grad U(theta_hat)``::

    grad U~cv(theta; b) = grad U~(theta; b) - grad U~(theta_hat; b) + grad U(theta_hat)
                        = grad U_0(theta) + grad U_data(theta_hat)
                          + (N / B) sum_{i in b} [grad l_i(theta) - grad l_i(theta_hat)]

(and the same for ``U~cv``). It is unbiased for every centre, and its variance scales
with ``|theta - theta_hat|^2`` instead of with the spread of the per-datum gradients, so
near the centre it is small however large ``N / B`` is. Each step costs two minibatch
gradients; moving the centre costs one full-data pass. :class:`ControlVariates` moves it
to where each cycle's exploration stage ends, so the variance reduction follows the
chain from mode to mode.

**Estimators as objects.** The sampler (:mod:`pyro_csg.core.sampler`) sees a gradient
estimator through a small protocol (:class:`GradientEstimator`), in the manner of
BlackJAX's ``grad_estimator`` argument:

* ``init(potential, theta) -> state``: the estimator's own state at the start (``None``
  for the plain minibatch estimator, the centre for control variates);
* ``bind(potential, state) -> Gradient``: the function ``(theta, indices) -> (U~, grad
  U~)`` the hot loop calls; optionally ``bind_lean(potential, state)``, the same
  returning ``(None, grad U~)``, which the loop calls between its checks of ``U~`` where
  the potential is ``lean`` (its gradient alone costs fewer ops;
  :func:`pyro_csg.adapter.graph.lean`);
* ``refresh_window(layout) -> (first, last)``: the positions within a cycle (0-based) at
  which ``refresh(potential, state, theta, starts, ends) -> state`` wants to see the
  iterate (``(0, -1)``: never; ``starts`` and ``ends`` flag the window's first and last
  position), so that the estimator owns its re-centring;
* ``load_state(saved, like)``: a state saved by its ``state_dict()`` (plain tensors),
  back onto the device and dtype of ``like``;
* optionally ``tuned(state, tuning) -> state``: the state once the automatic step has
  measured the posterior (control variates keep its spread, to move their centre only
  when that pays), and ``pays(tuning)``, ``adopt(potential, theta)``, ``pays_against(plain,
  centred)`` for an estimator that decides at the start (:class:`Automatic`).

A new estimator is one such class; the sampler's loop does not change.

**Control variates where they pay** (:class:`Automatic`, the kernels' default with the
automatic step size). A control-variate step costs two minibatch gradients, and the
centre one full-data pass a cycle; what it buys is a smaller gradient noise, which pays
only where that noise, not the curvature, bounds the step. So the chain starts with the
plain estimator; the automatic step's tuning measures its noise, and where the noise cut
the step more than :data:`CONTROL_VARIATES_PAY` times (``Tuning.noise_cut``) the sampler
adopts a centre (``adopt``), tunes again, and keeps the centre only where the step grew
more than :data:`CONTROL_VARIATES_PAY` times. On a Bayesian MLP (64-100-10, ``N / B`` =
78) the noise cuts the plain step about 500 times, and as much with control variates
(one posterior sd from the centre, a network's per-datum gradients differ as much as
they vary): they would double a step's cost for nothing. On a logistic regression with
``N / B`` = 10,000 they make the step thousands of times larger.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .mass import variances
from .schedules import CycleLayout

__all__ = [
    "Gradient",
    "GradientEstimator",
    "Minibatch",
    "ControlVariates",
    "Automatic",
    "CONTROL_VARIATES_PAY",
    "CentreState",
    "RECENTRE_RADIUS",
    "Centre",
    "centre_at",
    "control_variates",
    "lean_binding",
]

Gradient = Callable[
    [torch.Tensor, Sequence[torch.Tensor]], tuple[torch.Tensor | None, torch.Tensor]
]
"""A gradient estimator: ``(theta, batch indices) -> (U~, grad U~)``; a lean one
(``bind_lean``) returns ``(None, grad U~)``."""


def lean_binding(estimator, potential, state) -> Gradient | None:
    """The estimator's gradient without ``U~`` (``bind_lean``), where the estimator and
    the potential have one; else ``None``.

    Example::

        >>> import torch
        >>> from pyro_csg.core.estimators import Minibatch, lean_binding
        >>> from pyro_csg.core.parameters import GradientPotential
        >>> potential = GradientPotential(lambda theta, indices: (theta.sum(), theta))
        >>> lean_binding(Minibatch(), potential, None) is None  # a potential_fn has none
        True
    """
    bind_lean = getattr(estimator, "bind_lean", None)
    if bind_lean is None or not getattr(potential, "lean", False):
        return None
    return bind_lean(potential, state)


@dataclass(frozen=True)
class Centre:
    """A control variate's centre: ``theta_hat``, ``U(theta_hat)`` and ``grad U(theta_hat)``.

    Example::

        >>> import torch
        >>> from pyro_csg.core.estimators import Centre
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
        >>> from pyro_csg.core.estimators import centre_at
        >>> from pyro_csg.adapter.potential import ModelPotential
        >>> y = torch.ones(8)
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", len(y), subsample_size=2) as idx:
        ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])
        >>> centre_at(ModelPotential(model, (y,), {}, init_to_median), torch.ones(1)).grad
        tensor([1.])
    """
    energy, grad = potential.full_value_and_grad(theta)
    return Centre(theta.detach().clone(), energy, grad)


Paired = Callable[
    [torch.Tensor, torch.Tensor, Sequence[torch.Tensor]],
    tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
]
"""``(theta, theta_hat, batch indices) -> ((U~, grad U~) at theta, the same at
theta_hat)``: both terms of a control-variate step in one evaluation."""


def control_variates(gradient: Gradient, centre: Centre, paired: Paired | None = None) -> Gradient:
    """The control-variate estimator around ``centre`` (see the module docstring);
    ``paired`` evaluates both minibatch terms at once (else ``gradient`` is called twice).

    Example::

        >>> import torch
        >>> from pyro_csg.core.estimators import Centre, control_variates
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
        if paired is None:
            energy, grad = gradient(theta, indices)
            energy_0, grad_0 = gradient(theta_hat, indices)
        else:
            (energy, grad), (energy_0, grad_0) = paired(theta, theta_hat, indices)
        if energy is None:  # a lean gradient: the gradient alone
            return None, grad - grad_0 + grad_hat
        return energy - energy_0 + energy_hat, grad - grad_0 + grad_hat

    return estimate


class GradientEstimator(Protocol):
    """What the sampler needs of a gradient estimator (see the module docstring)."""

    name: str

    def init(self, potential, theta: torch.Tensor) -> Any: ...

    def bind(self, potential, state: Any) -> Gradient: ...

    def refresh_window(self, layout: CycleLayout) -> tuple[int, int]: ...

    def refresh(
        self, potential, state: Any, theta: torch.Tensor, starts: bool, ends: bool
    ) -> Any: ...

    def load_state(self, saved: dict | None, like: torch.Tensor) -> Any: ...


class Minibatch:
    """The plain minibatch estimator ``grad U~(theta; b)``: no state, no refresh.

    Example::

        >>> import torch
        >>> from pyro_csg.core.estimators import Minibatch
        >>> from pyro_csg.core.parameters import GradientPotential
        >>> potential = GradientPotential(lambda theta, indices: (theta.sum(), theta))
        >>> Minibatch().bind(potential, None)(torch.ones(2), [])[1]
        tensor([1., 1.])
    """

    name = "minibatch"

    def init(self, potential, theta: torch.Tensor) -> None:
        return None

    def bind(self, potential, state: None) -> Gradient:
        return potential.value_and_grad

    def bind_lean(self, potential, state: None) -> Gradient:
        return potential.lean_value_and_grad

    def refresh_window(self, layout: CycleLayout) -> tuple[int, int]:
        return 0, -1

    def refresh(self, potential, state: None, theta: torch.Tensor, starts: bool, ends: bool):
        return None

    def load_state(self, saved: dict | None, like: torch.Tensor) -> None:
        return None

    def __repr__(self) -> str:
        return "Minibatch()"


RECENTRE_RADIUS = 0.5
"""The centre moves only when the new one is more than ``RECENTRE_RADIUS * sqrt(D)``
posterior sds from it (in the preconditioner's metric; see :class:`ControlVariates`)."""


@dataclass(frozen=True)
class CentreState:
    """Control variates' state: the ``centre``; while the exploration stage's last
    iterates are being averaged for the next one, their running ``total`` and ``count``
    (never at a draw, so never saved); and ``spread``, the posterior's variance per
    coordinate as the automatic step measured it (its preconditioner; ``None``: the
    centre moves every cycle)."""

    centre: Centre
    total: torch.Tensor | None = None
    count: int = 0
    spread: torch.Tensor | None = None

    def state_dict(self) -> dict:
        """``{"centre": ..., "spread": ...}``: the running average is never pending at a
        draw."""
        saved: dict = {"centre": self.centre.state_dict()}
        if self.spread is not None:
            saved["spread"] = self.spread
        return saved

    def moves_to(self, theta: torch.Tensor) -> bool:
        """Whether a centre at ``theta`` pays its full-data pass: the estimator's variance
        grows with ``|theta - theta_hat|^2``, and the draws themselves lie about
        ``sqrt(D)`` sds (in ``spread``'s metric) from any centre at the mode; a centre
        within ``RECENTRE_RADIUS * sqrt(D)`` of ``theta`` adds at most a quarter to that."""
        if self.spread is None:
            return True
        distance = ((theta - self.centre.theta) ** 2 / self.spread).sum()
        return bool(distance > RECENTRE_RADIUS**2 * theta.numel())


class ControlVariates:
    """Control variates around a centre moved to the mean of the last tenth of every
    exploration stage's iterates (see the module docstring). The potential must have
    ``full_value_and_grad(theta)``.

    Why the mean: SGD's last iterate wanders by its gradient noise, the mean of its
    iterates less (Polyak averaging), and the estimator's noise grows with the distance
    from the centre to the mode.

    Why not every cycle: the move costs a full-data pass, which at ``N = 1e6`` took a
    fifth of a run of 1,000-step cycles. Once the automatic step has measured the
    posterior's spread (``tuned``), the centre moves only where the new mean is more than
    ``RECENTRE_RADIUS * sqrt(D)`` sds away (:meth:`CentreState.moves_to`): to another
    mode, or after a start that was not yet at one; on a unimodal posterior it stays.

    Example::

        >>> from pyro_csg.core.estimators import ControlVariates
        >>> from pyro_csg.core.schedules import CycleLayout
        >>> ControlVariates().refresh_window(CycleLayout(100, 0.5, 4))  # positions 45-49
        (45, 49)
    """

    name = "control_variates"

    def init(self, potential, theta: torch.Tensor) -> CentreState:
        return CentreState(centre_at(potential, theta))

    def bind(self, potential, state: CentreState) -> Gradient:
        paired = getattr(potential, "paired_value_and_grad", None)
        return control_variates(potential.value_and_grad, state.centre, paired)

    def bind_lean(self, potential, state: CentreState) -> Gradient:
        paired = potential.paired_lean_value_and_grad
        return control_variates(potential.lean_value_and_grad, state.centre, paired)

    def refresh_window(self, layout: CycleLayout) -> tuple[int, int]:
        steps, exploration = layout.steps_per_cycle, layout.num_exploration_steps
        # The centre moves after the last exploration step (the end of a cycle if none).
        last = (exploration - 1) % steps
        averaged = max(1, exploration // 10) if exploration else 1
        return (last - averaged + 1) % steps, last

    def refresh(
        self, potential, state: CentreState, theta: torch.Tensor, starts: bool, ends: bool
    ) -> CentreState:
        if starts or state.total is None:
            total, count = theta.clone(), 1
        else:
            # Out of place: a careful rerun that rejects this iterate goes back to `state`.
            total, count = state.total + theta, state.count + 1
        if ends:
            mean = total / count
            centre = centre_at(potential, mean) if state.moves_to(mean) else state.centre
            return CentreState(centre, spread=state.spread)
        return CentreState(state.centre, total, count, state.spread)

    def tuned(self, state: CentreState | None, tuning) -> CentreState | None:
        """``state`` with the posterior's spread the tuning measured (its diagonal
        preconditioner), which decides when the centre moves."""
        if state is None or tuning is None or tuning.preconditioner is None:
            return state
        return CentreState(state.centre, state.total, state.count, variances(tuning.preconditioner))

    def load_state(self, saved: dict | None, like: torch.Tensor) -> CentreState | None:
        if saved is None:
            return None
        spread = saved.get("spread")
        if spread is not None:
            spread = spread.to(device=like.device, dtype=like.dtype)
        return CentreState(Centre.from_state_dict(saved["centre"]).to(like), spread=spread)

    def __repr__(self) -> str:
        return "ControlVariates()"


CONTROL_VARIATES_PAY = 2.0
"""The noise cut (``Tuning.noise_cut``: the curvature's step over the noise-bound step)
above which :class:`Automatic` adopts control variates: they double a step's cost, so
they pay where they more than double the step."""


class Automatic:
    """Control variates where the measured noise needs them (see the module docstring):
    the plain minibatch estimator (state ``None``) until the sampler adopts a centre
    (``adopt``; state :class:`CentreState`), after which it is :class:`ControlVariates`.

    Example::

        >>> import torch
        >>> from pyro_csg.core.estimators import Automatic
        >>> from pyro_csg.core.tuning import Tuning
        >>> curvature_bound = Tuning(0.5, None, 2.0, 0.1, False, None, 0.5)
        >>> noise_bound = Tuning(0.001, None, 2.0, 0.5, True, None, 0.5)
        >>> Automatic().pays(curvature_bound), Automatic().pays(noise_bound)
        (False, True)
        >>> Automatic().pays_against(noise_bound, curvature_bound)  # 500 times the step
        True
    """

    name = "auto"

    def __init__(self) -> None:
        self._centred = ControlVariates()

    def init(self, potential, theta: torch.Tensor) -> None:
        return None

    def pays(self, tuning) -> bool:
        """Whether control variates may pay for a chain tuned as ``tuning`` with the plain
        gradient: its noise cut the step more than :data:`CONTROL_VARIATES_PAY` times."""
        return tuning is not None and tuning.noise_cut > CONTROL_VARIATES_PAY

    def pays_against(self, plain, centred) -> bool:
        """Whether they do: tuned with them (``centred``), the step is more than
        :data:`CONTROL_VARIATES_PAY` times the plain gradient's."""
        return centred.step_size > CONTROL_VARIATES_PAY * plain.step_size

    def adopt(self, potential, theta: torch.Tensor) -> CentreState:
        """The control variates' state, centred at ``theta``: one full-data pass."""
        return self._centred.init(potential, theta)

    def bind(self, potential, state: CentreState | None) -> Gradient:
        if state is None:
            return potential.value_and_grad
        return self._centred.bind(potential, state)

    def bind_lean(self, potential, state: CentreState | None) -> Gradient:
        if state is None:
            return potential.lean_value_and_grad
        return self._centred.bind_lean(potential, state)

    def refresh_window(self, layout: CycleLayout) -> tuple[int, int]:
        return self._centred.refresh_window(layout)

    def refresh(
        self, potential, state: CentreState | None, theta: torch.Tensor, starts: bool, ends: bool
    ) -> CentreState | None:
        if state is None:
            return None
        return self._centred.refresh(potential, state, theta, starts, ends)

    def tuned(self, state: CentreState | None, tuning) -> CentreState | None:
        return self._centred.tuned(state, tuning)

    def load_state(self, saved: dict | None, like: torch.Tensor) -> CentreState | None:
        return self._centred.load_state(saved, like)

    def __repr__(self) -> str:
        return "Automatic()"
