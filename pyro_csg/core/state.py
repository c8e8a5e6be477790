"""The explicit state of one chain: what ``sample`` reads and writes, and nothing else.

A chain of cyclical SG-MCMC is, between two draws, fully described by

* ``theta``: the flat unconstrained parameters after iteration ``k``;
* ``algorithm``: the diffusion's own state (SGHMC's momentum ``v``; nothing for SGLD);
* ``energy`` and ``grad``: ``U~(theta)`` and its gradient on the minibatch already drawn
  for iteration ``k + 1`` (the next update reads them);
* ``iteration`` (``k``), ``draws`` (draws answered) and ``step_size`` (``eta_k``);
* ``batches``: each subsampled plate's cursor (this epoch's permutation and the position
  in it);
* ``rng_state``: the state of the chain's own ``torch.Generator``, from which all of its
  Langevin noise and all of its permutations are drawn;
* ``tuning``: the automatic step size and diagonal preconditioner, once chosen
  (:class:`~pyro_csg.core.tuning.Tuning`), ``start_steps``, the optimisation stage's
  iterations, ``backoffs``, how often the automatic step was halved after the potential
  became NaN or infinite, and ``rejected``, how many proposals into a NaN or infinite
  potential were rejected (:func:`~pyro_csg.core.sampler.advance_safely`);
* ``noisy_exploration_from``: the cycle from which the exploration stage is no longer
  the paper's noise-free one (``None``: it still is): it has Langevin noise, or, with
  ``skipping_exploration``, the cycles from that one on skip it (their draws come from
  the sampling stage alone, every ``sampling_stride``-th position of it run; see
  :func:`~pyro_csg.core.sampler.choose_exploration`);
* ``batch_size``: the batch of the one subsampled plate that the chain runs where the
  start grew it (:func:`~pyro_csg.core.subsample.grown_batch`; ``None``: the model's own
  ``subsample_size``);
* ``estimator``: the gradient estimator's own state (``None`` for the plain minibatch
  estimator; for control variates their centre ``theta_hat`` with the full-data ``U`` and
  gradient there, :class:`~pyro_csg.core.estimators.CentreState`).

The potential (the traced graph and the data) is kept apart: it is rebuilt from the model
at set-up and never saved. :meth:`ChainState.state_dict` gives plain tensors, numbers and
dicts, so ``torch.save`` writes it and ``torch.load(..., weights_only=True)`` reads it.

**Save format.** :data:`STATE_FORMAT` 2 stores the estimator's state under
``"estimator"``; format 1 (no ``"format"`` key, before the estimators became objects)
stored the control variates' centre under ``"centre"`` and is still read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from .estimators import ControlVariates
from .tuning import Tuning

__all__ = ["ChainState", "STATE_FORMAT"]

STATE_FORMAT = 2
"""The version of :meth:`ChainState.state_dict`'s layout."""


@dataclass(frozen=True)
class ChainState:
    """One chain's state at a draw boundary (see the module docstring for the fields).

    Example::

        >>> import torch
        >>> from pyro_csg.core.diffusions import SGHMCState
        >>> from pyro_csg.core.state import ChainState
        >>> generator = torch.Generator().manual_seed(0)
        >>> state = ChainState(theta=torch.zeros(2), algorithm=SGHMCState(torch.ones(2)),
        ...                    energy=torch.tensor(1.5), grad=torch.ones(2), iteration=10,
        ...                    draws=2, step_size=0.01, batches=(),
        ...                    rng_state=generator.get_state())
        >>> saved = state.state_dict()
        >>> saved["format"]
        2
        >>> ChainState.from_state_dict(saved, SGHMCState).algorithm.momentum
        tensor([1., 1.])
    """

    theta: torch.Tensor
    algorithm: NamedTuple
    energy: torch.Tensor | None
    grad: torch.Tensor | None
    iteration: int
    draws: int
    step_size: float
    batches: tuple[dict, ...]
    rng_state: torch.Tensor
    tuning: Tuning | None = None
    estimator: Any = None
    start_steps: int = 0
    backoffs: int = 0
    rejected: int = 0
    noisy_exploration_from: int | None = None
    skipping_exploration: bool = False
    sampling_stride: int = 1
    batch_size: int | None = None

    @property
    def started(self) -> bool:
        """Whether the first ``U~`` and gradient have been computed."""
        return self.grad is not None

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors, numbers and dicts (the tensors are not copied)."""
        return {
            "format": STATE_FORMAT,
            "theta": self.theta,
            "algorithm": dict(self.algorithm._asdict()),
            "energy": self.energy,
            "grad": self.grad,
            "iteration": self.iteration,
            "draws": self.draws,
            "step_size": self.step_size,
            "batches": [dict(cursor) for cursor in self.batches],
            "rng_state": self.rng_state,
            "tuning": None if self.tuning is None else self.tuning.state_dict(),
            "estimator": None if self.estimator is None else self.estimator.state_dict(),
            "start_steps": self.start_steps,
            "backoffs": self.backoffs,
            "rejected": self.rejected,
            "noisy_exploration_from": self.noisy_exploration_from,
            "skipping_exploration": self.skipping_exploration,
            "sampling_stride": self.sampling_stride,
            "batch_size": self.batch_size,
        }

    @classmethod
    def from_state_dict(
        cls,
        state: dict[str, Any],
        algorithm_type: type,
        estimator: Any = None,
        like: torch.Tensor | None = None,
    ) -> ChainState:
        """Rebuild a state saved by :meth:`state_dict`; ``algorithm_type`` is the
        diffusion's state class (e.g. :class:`~pyro_csg.core.diffusions.SGHMCState`) and
        ``estimator`` the gradient estimator that rebuilds its own state
        (``load_state(saved, like)``, on the device and dtype of ``like``, by default the
        saved ``theta``'s; ``None``: control variates' if the state has a centre)."""
        format = state.get("format", 1)
        if format not in (1, STATE_FORMAT):
            raise ValueError(
                f"the saved chain state has format {format!r}; this version of pyro-csg "
                f"reads formats 1 and {STATE_FORMAT}"
            )
        saved_estimator = state.get("estimator")
        if format == 1 and state.get("centre") is not None:  # control variates' centre
            saved_estimator = {"centre": state["centre"]}
        if saved_estimator is not None and estimator is None:
            if set(saved_estimator) != {"centre"}:
                raise ValueError(
                    f"the saved state has a gradient estimator's state {sorted(saved_estimator)}: "
                    "pass the estimator that reads it"
                )
            estimator = ControlVariates()  # the one estimator with a state in this version
        noisy = state.get("noisy_exploration_from")  # absent in saves before it existed
        fields = set(algorithm_type._fields)
        saved = set(state["algorithm"])
        if fields != saved:
            raise ValueError(
                f"the saved algorithm state has fields {sorted(saved)}, but "
                f"{algorithm_type.__name__} has {sorted(fields)}: it comes from another sampler"
            )
        return cls(
            theta=state["theta"],
            algorithm=algorithm_type(**state["algorithm"]),
            energy=state["energy"],
            grad=state["grad"],
            iteration=int(state["iteration"]),
            draws=int(state["draws"]),
            step_size=float(state["step_size"]),
            batches=tuple(dict(cursor) for cursor in state["batches"]),
            rng_state=state["rng_state"],
            tuning=None if state.get("tuning") is None else Tuning.from_state_dict(state["tuning"]),
            estimator=None
            if saved_estimator is None
            else estimator.load_state(saved_estimator, state["theta"] if like is None else like),
            start_steps=int(state.get("start_steps", 0)),
            backoffs=int(state.get("backoffs", 0)),
            rejected=int(state.get("rejected", 0)),
            noisy_exploration_from=None if noisy is None else int(noisy),
            skipping_exploration=bool(state.get("skipping_exploration", False)),
            sampling_stride=int(state.get("sampling_stride", 1)),
            batch_size=None if state.get("batch_size") is None else int(state["batch_size"]),
        )
