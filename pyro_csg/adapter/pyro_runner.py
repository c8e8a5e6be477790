"""What a kernel reads of Pyro's MCMC runner, which tells a kernel little.

Pyro's ``MCMC`` calls ``kernel.setup`` from ``pyro.infer.mcmc.api._gen_samples`` without
saying which chain it sets up or how many draws it will ask for; a checkpointed chain
needs its own folder, and ``num_samples=0`` must be refused before the run. They are read
from the runner's frames (:func:`runner_chain`, :func:`runner_num_samples`). And
``MCMC.summary`` counts ``diagnostics()["divergences"]``: :class:`Divergences` is that
list, made so that ``arviz.from_pyro`` cannot take it for a real run's.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
import torch

from ..core.errors import SamplerWarning

__all__ = [
    "Divergences",
    "runner_chain",
    "runner_num_samples",
    "runner_progress_bars",
    "check_run_arguments",
    "in_warmup_habit",
    "one_thread_in_worker",
    "warn_partial_cycle",
    "warmup_message",
]


class Divergences(list):
    """The retained draws flagged as diverging: those of cycles that ran away (see
    :mod:`pyro_csg.core.runaway`), as draw indices, the form Pyro's ``MCMC.summary`` counts.

    It refuses to become a NumPy array, which is what ``az.from_pyro`` does with it: that
    converter would take the observed data and the log-likelihood from one random
    minibatch, so it fails instead, with a pointer to :func:`pyro_csg.to_inference_data`.
    """

    def __array__(self, *args, **kwargs):
        raise TypeError(
            "arviz.from_pyro cannot convert a run of CyclicalSGLD or CyclicalSGHMC: it would "
            "take the observed data and the log-likelihood from one random minibatch, not "
            "the full data. Use pyro_csg.to_inference_data(mcmc) instead."
        )


def _runner_frame():
    """The frame of ``pyro.infer.mcmc.api._gen_samples`` that called ``setup`` (or
    ``sample``), if any: a few frames up the stack from here."""
    frame = sys._getframe(1)
    for _ in range(10):
        frame = frame.f_back
        if frame is None:
            return None
        if frame.f_code.co_name == "_gen_samples" and frame.f_globals.get("__name__") == (
            "pyro.infer.mcmc.api"
        ):
            return frame
    return None


def _runner_caller() -> tuple[Any, Any]:
    """``(frame, runner)``: the frame of Pyro's sampler method that called
    ``_gen_samples`` and the sampler itself (``_UnarySampler`` or ``_Worker``); ``(None,
    None)`` outside Pyro's runner."""
    frame = _runner_frame()
    caller = frame.f_back if frame is not None else None
    return caller, (caller.f_locals.get("self") if caller is not None else None)


def runner_num_samples() -> int | None:
    """The ``num_samples`` Pyro's runner will ask for (None outside Pyro's runner)."""
    frame = _runner_frame()
    return None if frame is None else frame.f_locals.get("num_samples")


def runner_progress_bars() -> list:
    """The ``tqdm`` bars of the chain being set up, when Pyro's runner draws them in this
    process (chains one after another); empty otherwise (no runner, ``disable_progbar``,
    or one process per chain, whose bars live in the parent).

    Pyro labels a bar ``Warmup`` until the first draw returns, even with
    ``warmup_steps=0``, and the kernel's start (optimisation, tuning) runs inside that
    first draw; the kernel relabels the bar so that it says what is happening.
    """
    caller, _ = _runner_caller()
    bar = caller.f_locals.get("progress_bar") if caller is not None else None
    bars = getattr(bar, "progress_bars", None) or []
    return [b for b in bars if not getattr(b, "disable", True)]


def one_thread_in_worker() -> None:
    """One torch thread for a chain that Pyro's runner set up in a process of its own
    (``num_chains`` above one with enough CPUs). torch's OpenMP thread pool does not
    survive the fork that made the process (the child hangs at its first parallel op,
    NUTS's chains as well), and each chain has a core of its own there anyway."""
    _, runner = _runner_caller()
    if type(runner).__name__ == "_Worker":
        torch.set_num_threads(1)


def runner_chain() -> tuple[int, int | None]:
    """``(chain index, number of chains)`` of the ``pyro.infer.MCMC`` chain being set up.

    Pyro does not tell a kernel which chain it runs, but a checkpointed chain needs its
    own folder. ``setup`` is called from ``pyro.infer.mcmc.api._gen_samples``, itself
    called by ``_UnarySampler.run`` (chains one after another in this process; its local
    ``i`` is the chain) or by ``_Worker.run`` (one process per chain; ``self.chain_id``,
    and the number of chains is not known there). Outside Pyro's runner: chain 0 of an
    unknown number.
    """
    caller, runner = _runner_caller()
    if type(runner).__name__ == "_UnarySampler":
        return int(caller.f_locals.get("i", 0)), int(runner.num_chains)
    if type(runner).__name__ == "_Worker":
        return int(runner.chain_id), None
    return 0, None


def check_run_arguments(warmup_steps: Any, samples_per_cycle: int) -> tuple[int, bool]:
    """``warmup_steps`` as an int, and whether Pyro's runner is running the chain (not
    ``MCMC``'s probe of the transforms); refuses ``num_samples=0``."""
    num_samples = runner_num_samples()
    if (
        isinstance(warmup_steps, (bool, np.bool_))
        or not isinstance(warmup_steps, (int, np.integer))
        or warmup_steps < 0
    ):
        raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    if num_samples == 0:
        raise ValueError(
            "MCMC(num_samples=0) keeps no draw (Pyro would fail after the run with "
            "'stack expects a non-empty TensorList'): give num_samples >= 1, e.g. "
            f"num_cycles * samples_per_cycle = 10 * {samples_per_cycle}"
        )
    return int(warmup_steps), num_samples is not None


def warn_partial_cycle(warmup_steps: int, samples_per_cycle: int, num_params: int) -> None:
    """Warn about a warm-up that is not whole cycles (not for a potential without
    parameters, where there is nothing to keep or throw away)."""
    if warmup_steps % samples_per_cycle and num_params:
        warnings.warn(
            f"warmup_steps={warmup_steps} is not a multiple of samples_per_cycle="
            f"{samples_per_cycle}: warm-up counts retained draws, so the first kept "
            "cycle is a partial one. Pass warmup_steps=0 or whole cycles "
            "(num_cycles * samples_per_cycle).",
            SamplerWarning,
            stacklevel=4,
        )


def in_warmup_habit(warmup_steps: int, start_steps: int, kernel) -> bool:
    """Whether the warm-up throws away more than one cycle's draws after a start that
    the optimisation stage already converged (NUTS's habit, ``MCMC``'s default
    ``warmup_steps=num_samples``, carried over where nothing is adapted in warm-up)."""
    return start_steps > 0 and warmup_steps > kernel.samples_per_cycle


def warmup_message(
    name: str, warmup_steps: int, start_steps: int, kernel, num_samples: int | None
) -> str:
    """The warning for :func:`in_warmup_habit`: what was thrown away and what to pass
    (``num_samples``: the run's, when known, to recognise ``MCMC``'s default)."""
    per_cycle = kernel.samples_per_cycle
    cycles = warmup_steps / per_cycle
    default = (
        " (MCMC's default warmup_steps is num_samples: as many draws as the run keeps)"
        if num_samples is not None and warmup_steps == num_samples
        else ""
    )
    return (
        f"{name}: warmup_steps={warmup_steps} throws away {warmup_steps} draws, "
        f"{cycles:g} cycles of {kernel.steps_per_cycle} iterations{default}, after an "
        f"optimisation stage that already brought the chain to the posterior ({start_steps} "
        "Adam steps). There is nothing to adapt in warm-up (every cycle restarts with its "
        "own exploration stage), so those cycles cost time and give nothing: pass "
        f"warmup_steps=0, or warmup_steps={per_cycle} to drop the first cycle."
    )
