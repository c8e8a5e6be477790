"""The two ArviZ lines, behind one set of calls.

ArviZ 0.x (Python 3.11 and older) stores a run in ``arviz.InferenceData``; ArviZ 1.x
(Python >= 3.12: ``arviz-base``, ``arviz-stats``, ``arviz-plots``) stores it in an
``xarray.DataTree`` with the same groups. The package builds, reads and annotates runs
only through this module, so that everything else is written once:

* :func:`build` calls the installed line's own ``from_dict`` (their signatures differ:
  0.x takes one keyword per group, 1.x one dict of groups);
* :func:`group` reads a group as an ``xarray.Dataset`` from an ``InferenceData``, a
  ``DataTree`` (under either line: xarray ships it) or a bare posterior ``Dataset``;
* :func:`set_group` writes one back, in the container's own way.

ArviZ's statistics (``ess``, ``rhat``, ``summary``, ``loo``) take an ``xarray.Dataset``
or the container in both lines, under the same names (1.x re-exports ``arviz_stats``'s),
so the package calls them directly on what :func:`group` returns.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["arviz", "arviz_major", "build", "group", "set_group", "group_names"]


@functools.cache
def arviz():
    """``import arviz``, without 0.x's import-time FutureWarning about the 1.x refactor:
    the package supports both lines, so the notice asks nothing of its users (the
    README's "Versions" says how to move to 1.x)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        import arviz

    return arviz


def arviz_major() -> int:
    """The installed ArviZ's major version: 0 or 1."""
    return int(str(arviz().__version__).split(".")[0])


def build(
    groups: Mapping[str, Mapping[str, np.ndarray] | None],
    *,
    coords: Mapping[str, Any] | None = None,
    dims: Mapping[str, list[str]] | None = None,
):
    """``InferenceData`` (0.x) or ``DataTree`` (1.x) from ``{group: {variable: array}}``;
    groups given as ``None`` are left out. ``posterior``, ``sample_stats`` and
    ``log_likelihood`` arrays start with ``(chain, draw)``; ``observed_data`` has none."""
    az = arviz()
    present = {name: dict(values) for name, values in groups.items() if values}
    with warnings.catch_warnings():
        # 0.x warns about (chain, draw) shapes with fewer draws than chains, which a run
        # of one cycle per chain (group_by="cycle") has by design.
        warnings.simplefilter("ignore", UserWarning)
        if arviz_major() >= 1:
            return az.from_dict(present, coords=coords, dims=dims)
        return az.from_dict(**present, coords=coords, dims=dims)


def _is_tree(data) -> bool:
    import xarray as xr

    return isinstance(data, xr.DataTree)


def group_names(data) -> list[str]:
    """The groups of an ``InferenceData`` or ``DataTree`` (``["posterior"]`` for a
    ``Dataset``)."""
    import xarray as xr

    if isinstance(data, xr.Dataset):
        return ["posterior"]
    if _is_tree(data):
        return list(data.children)
    return list(data.groups())


def group(data, name: str):
    """Group ``name`` as an ``xarray.Dataset``, or ``None`` when there is none.

    ``data`` is an ``arviz.InferenceData``, an ``xarray.DataTree`` or, standing for its
    posterior alone, an ``xarray.Dataset``.
    """
    import xarray as xr

    if isinstance(data, xr.Dataset):
        return data if name == "posterior" else None
    if _is_tree(data):
        return data[name].to_dataset() if name in data.children else None
    if hasattr(data, "groups") and name in data.groups():
        return getattr(data, name)
    if hasattr(data, "get_samples") and hasattr(data, "kernel"):
        raise TypeError(
            f"got the {type(data).__name__} itself: convert the run first, with "
            "idata = pyro_csg.to_inference_data(mcmc), and pass idata"
        )
    if not hasattr(data, "groups"):
        raise TypeError(
            "expected an arviz.InferenceData, an xarray.DataTree or a posterior "
            f"xarray.Dataset (e.g. from pyro_csg.to_inference_data), got {type(data).__name__}"
        )
    return None


def set_group(data, name: str, dataset) -> None:
    """Replace group ``name`` of an ``InferenceData`` or ``DataTree`` by ``dataset``."""
    if _is_tree(data):
        data[name] = dataset
    else:
        setattr(data, name, dataset)
