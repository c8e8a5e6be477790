"""The cycle regrouping that the ArviZ conversion, the cycle diagnostics and the plots share.

A run's draws come ``samples_per_cycle`` to a cycle; regrouped, each complete cycle
becomes one "chain" of ``samples_per_cycle`` draws (so that ArviZ's between-chain
statistics compare cycles).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .arviz_lines import group

__all__ = ["complete_cycles", "regroup", "scalar_elements", "cycle_layout"]


def complete_cycles(
    cycles: np.ndarray, per_cycle: int
) -> tuple[np.ndarray, list[int]]:
    """The draw positions of the complete cycles (same for every chain), and the others."""
    labels, counts = np.unique(cycles, return_counts=True)
    complete = labels[counts == per_cycle]
    incomplete = labels[counts != per_cycle].tolist()
    keep = np.flatnonzero(np.isin(cycles, complete))
    return keep, incomplete


def regroup(array: np.ndarray, keep: np.ndarray, per_cycle: int) -> np.ndarray:
    """``(chain, draw, ...)`` -> ``(chain * cycle, draw within cycle, ...)``."""
    array = array[:, keep]
    chains, draws = array.shape[:2]
    return array.reshape(chains * (draws // per_cycle), per_cycle, *array.shape[2:])


def scalar_elements(variable) -> list[tuple[str, np.ndarray]]:
    """``(label, values (chain, draw))`` for each scalar element of a posterior variable,
    labelled as ``az.summary`` does (``w[0,1]``)."""
    values = variable.transpose("chain", "draw", ...).values
    extra = values.shape[2:]
    flat = values.reshape(values.shape[0], values.shape[1], -1)
    result = []
    for element in range(flat.shape[2]):
        label = str(variable.name)
        if extra:
            label += "[" + ",".join(map(str, np.unravel_index(element, extra))) + "]"
        result.append((label, flat[:, :, element]))
    return result


def cycle_layout(
    idata, var_names: Sequence[str] | None = None
) -> tuple[Any, np.ndarray, np.ndarray]:
    """The posterior (its ``var_names``, default all) regrouped as (chain x cycle, draw),
    with each group's chain and cycle."""
    posterior = group(idata, "posterior")
    if posterior is None:
        raise ValueError("the InferenceData has no posterior group")
    if var_names is not None:
        missing = [name for name in var_names if name not in posterior.data_vars]
        if missing:
            raise ValueError(
                f"var_names {missing} are not in the posterior; "
                f"it has {list(posterior.data_vars)}"
            )
        posterior = posterior[list(var_names)]
    if "cycle" not in posterior.coords:
        raise ValueError(
            "cycle_summary needs an InferenceData from pyro_csg.to_inference_data "
            "(its posterior has no 'cycle' coordinate)"
        )
    if posterior["cycle"].dims == ("chain",):
        return posterior, posterior["mcmc_chain"].values, posterior["cycle"].values
    cycles = posterior["cycle"].values
    per_cycle = int(
        posterior.attrs.get("samples_per_cycle", np.unique(cycles, return_counts=True)[1].max())
    )
    keep, _ = complete_cycles(cycles, per_cycle)
    complete = np.unique(cycles[keep])
    num_chains = posterior.sizes["chain"]
    import xarray as xr

    variables = {}
    for name, variable in posterior.data_vars.items():
        values = regroup(variable.transpose("chain", "draw", ...).values, keep, per_cycle)
        variables[name] = (("chain", "draw", *variable.dims[2:]), values)
    regrouped = xr.Dataset(
        variables,
        coords={
            name: posterior.coords[name]
            for name in posterior.coords
            if name not in ("chain", "draw", "cycle", "iteration")
        },
    )
    regrouped = regrouped.assign_coords(
        chain=np.arange(regrouped.sizes["chain"]), draw=np.arange(per_cycle)
    )
    return (
        regrouped,
        np.repeat(np.arange(num_chains), len(complete)),
        np.tile(complete, num_chains),
    )
