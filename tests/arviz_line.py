"""What the tests need to run under either ArviZ line (0.x on Python 3.11, 1.x on >= 3.12)."""

import xarray as xr

from pyro_csg.analysis.arviz_lines import arviz, arviz_major, group, group_names

az = arviz()
ARVIZ_1 = arviz_major() >= 1

__all__ = ["az", "ARVIZ_1", "elpd", "posterior", "posterior_with_cycles", "group", "group_names"]


def elpd(loo) -> float:
    """The ELPD of an ``az.loo`` result: ``elpd_loo`` under 0.x, ``elpd`` under 1.x."""
    return float(loo.elpd if ARVIZ_1 else loo.elpd_loo)


def posterior(variables: dict) -> xr.Dataset:
    """A posterior ``Dataset`` of ``(chain, draw, ...)`` arrays, dims named as ArviZ names
    them (``x_dim_0``), under either line."""
    data = {
        name: (("chain", "draw", *[f"{name}_dim_{i}" for i in range(value.ndim - 2)]), value)
        for name, value in variables.items()
    }
    return xr.Dataset(data)


def posterior_with_cycles(variables: dict, cycle) -> xr.Dataset:
    """:func:`posterior` with a ``cycle`` coordinate along ``draw`` (what the cycle
    diagnostics read)."""
    return posterior(variables).assign_coords(cycle=("draw", cycle))
