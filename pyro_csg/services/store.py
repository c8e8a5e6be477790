"""Retained draws streamed to disk: one netCDF file per draw, written whole, then renamed.

A run with ``checkpoint=`` writes every retained draw as it is made::

    <directory>/run.json                  the sampler, its settings, the sites
    <directory>/chain-<c>/draws/<n>.nc    draw n of chain c (n = 0, 1, ... after warm-up)
    <directory>/chain-<c>/checkpoint.pt   the chain's state (see pyro_csg.services.checkpoint)
    <directory>/chain-<c>/checks.json     after its last draw: what the checks on its draws
                                          found (the run's mark, sampler_warnings, ...)

A draw file holds each latent site's constrained value as a netCDF variable (dims
``<site>_dim_0, ...``, as ArviZ names them), the per-draw statistics as attributes
(``chain``, ``draw``, ``cycle``, ``iteration``, ``step_size``, ``potential_energy``), and,
in the group ``unconstrained``, the raw unconstrained value of every site whose transform
is not the identity (what a resumed run hands back to ``pyro.infer.MCMC``, bit for bit).

Why one file per draw: a file is written under a temporary name and renamed into place,
so a reader -- another process looking at a run in progress, or a resumed run after a
``SIGKILL`` -- sees whole draws or nothing, never a torn one; no file changes after it
appears, so readers need no lock; and memory stays at one draw whatever the run's length.
An HDF5 file appended in place has none of these properties (a killed writer can leave it
unreadable). Each file is netCDF-4 (HDF5 with dimension scales), written with ``h5py``
(which ArviZ's netCDF engine, h5netcdf, already brings); xarray reads one with
``xarray.open_dataset(".../draws/00000000.nc", engine="h5netcdf")``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["DrawWriter", "read_store", "STATS"]

STATS = (
    "cycle",
    "iteration",
    "step_size",
    "potential_energy",
    "noise_ratio",
    "backoffs",
    "rejected",
)
# Stats that draw files of older runs lack.
_MISSING = {"noise_ratio": np.nan, "backoffs": 0, "rejected": 0}
"""The per-draw statistics a draw file carries as attributes."""

_DRAW_FILE = re.compile(r"^(\d{8})\.nc$")
UNCONSTRAINED = "unconstrained"


def fsync_path(path: Path) -> None:
    """Flush a file (or a directory's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None], sync: bool = False) -> None:
    """``write`` a temporary file beside ``path``, then rename it to ``path``.

    The rename is atomic, so ``path`` holds the old content or the new, never a part.
    With ``sync`` the file and its directory are flushed to the disk first (so that the
    new content also survives a crash of the machine, not only of the process).
    """
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        write(temporary)
        if sync:
            fsync_path(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if sync:
        fsync_path(path.parent)


def _dims(name: str, ndim: int) -> tuple[str, ...]:
    return tuple(f"{name}_dim_{axis}" for axis in range(ndim))


def _numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().cpu().numpy()


class DrawWriter:
    """Writes, lists, reads back and truncates one chain's draw files.

    :param directory: the chain's ``draws`` folder (created if needed).
    :param raw_sites: the sites whose unconstrained value differs from the constrained one
        (their transform is not the identity): those are also stored unconstrained.

    Example::

        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from pyro_csg.services.store import DrawWriter
        >>> writer = DrawWriter(Path(tempfile.mkdtemp()) / "draws", raw_sites={"scale"})
        >>> writer.write(0, {"loc": torch.zeros(2), "scale": torch.ones(())},
        ...              {"loc": torch.zeros(2), "scale": torch.zeros(())},
        ...              {"chain": 0, "cycle": 0, "iteration": 10, "step_size": 0.1,
        ...               "potential_energy": 3.5})
        >>> writer.count()
        1
        >>> constrained, unconstrained, stats = writer.read(0)
        >>> float(constrained["scale"]), float(unconstrained["scale"]), stats["iteration"]
        (1.0, 0.0, 10)
    """

    def __init__(self, directory: Path, raw_sites: set[str] | frozenset[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.raw_sites = frozenset(raw_sites)
        self._unsynced: list[Path] = []

    def path(self, index: int) -> Path:
        return self.directory / f"{index:08d}.nc"

    def write(
        self,
        index: int,
        constrained: dict[str, torch.Tensor],
        unconstrained: dict[str, torch.Tensor],
        stats: dict[str, Any],
    ) -> None:
        """Write draw ``index`` (atomically: the file appears whole or not at all)."""
        import h5py

        def write(path: Path) -> None:
            with h5py.File(path, "w", track_order=True) as file:
                file.attrs["draw"] = index
                for key, value in stats.items():
                    file.attrs[key] = value
                for name, value in constrained.items():
                    _add_variable(file, name, _numpy(value))
                raw = file.create_group(UNCONSTRAINED)
                for name in sorted(self.raw_sites):
                    _add_variable(raw, name, _numpy(unconstrained[name]))

        path = self.path(index)
        atomic_write(path, write)
        self._unsynced.append(path)

    def sync(self) -> None:
        """Flush the draws written since the last call to the disk (before a checkpoint
        counts on them)."""
        for path in self._unsynced:
            fsync_path(path)
        if self._unsynced:
            fsync_path(self.directory)
        self._unsynced.clear()

    def indices(self) -> list[int]:
        return _draw_indices(self.directory)

    def count(self) -> int:
        """The number of consecutive draws ``0, 1, ...`` on disk."""
        return _contiguous(self.indices())

    def truncate(self, count: int) -> None:
        """Delete the draws from ``count`` on, and any temporary file a killed writer left."""
        for index in self.indices():
            if index >= count:
                self.path(index).unlink()
        for entry in os.listdir(self.directory):
            if ".tmp" in entry:
                (self.directory / entry).unlink(missing_ok=True)

    def read(self, index: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
        """``(constrained, unconstrained, stats)`` of draw ``index``; ``unconstrained``
        has every site (the constrained value where the transform is the identity)."""
        return read_draw(self.path(index))


def _add_variable(group, name: str, value: np.ndarray) -> None:
    """A netCDF-4 variable written with h5py: the data set, and one HDF5 dimension scale
    per axis (``<name>_dim_<axis>``, holding 0, 1, ...), as netCDF-4 lays them out. (The
    h5netcdf writer makes the same file five times slower, in its per-dimension
    bookkeeping.)"""
    scales = []
    for dim, size in zip(_dims(name, value.ndim), value.shape, strict=True):
        scale = group.create_dataset(dim, data=np.arange(size))
        scale.make_scale(dim)
        scales.append(scale)
    variable = group.create_dataset(name, data=value)
    for axis, scale in enumerate(scales):
        variable.dims[axis].attach_scale(scale)


def _draw_indices(directory: Path) -> list[int]:
    matches = (_DRAW_FILE.match(entry) for entry in os.listdir(directory))
    return sorted(int(match.group(1)) for match in matches if match)


def _contiguous(indices: Sequence[int]) -> int:
    count = 0
    for index in indices:
        if index != count:
            break
        count += 1
    return count


def read_draw(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """Read one draw file: ``(constrained, unconstrained, stats)``."""
    import h5py

    def variables(group) -> dict[str, np.ndarray]:
        return {
            name: np.asarray(item[()])
            for name, item in group.items()
            if isinstance(item, h5py.Dataset) and item.attrs.get("CLASS") != b"DIMENSION_SCALE"
        }

    with h5py.File(path, "r") as file:
        constrained = variables(file)
        stats = {key: _plain(value) for key, value in file.attrs.items()}
        unconstrained = dict(constrained)
        if UNCONSTRAINED in file:
            unconstrained.update(variables(file[UNCONSTRAINED]))
    return constrained, unconstrained, stats


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a pyro-csg run directory (it has no run.json): pass the "
            "folder given to the kernel's checkpoint="
        )
    return json.loads(path.read_text())


CHECKS = "checks.json"
"""A chain folder's file of what the checks on its draws found (written after its last
draw): the InferenceData's attrs that a run in doubt carries (``sampler_warnings``...)."""


def write_checks(folder: Path, checks: dict[str, Any]) -> None:
    """Write a chain's checks (``{attr: value}``, JSON values) into its ``folder``.

    Example::

        >>> import tempfile
        >>> from pathlib import Path
        >>> from pyro_csg.services.store import read_checks, write_checks
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_checks(folder, {"sampler_warnings": "chain 0: drift"})
        >>> read_checks([folder])
        {'sampler_warnings': 'chain 0: drift'}
    """
    content = json.dumps(checks, sort_keys=True, default=_plain)
    atomic_write(Path(folder) / CHECKS, lambda path: path.write_text(content), sync=True)


def read_checks(folders: Sequence[Path]) -> dict[str, Any]:
    """The chains' checks merged as one run's attrs: strings joined with ``"; "`` (empty
    ones left out), lists concatenated in chain order; ``{}`` where no chain wrote them
    (a run still going, killed, or written before these files existed)."""
    found = [
        json.loads((Path(folder) / CHECKS).read_text())
        for folder in folders
        if (Path(folder) / CHECKS).is_file()
    ]
    merged: dict[str, Any] = {}
    for checks in found:
        for key, value in checks.items():
            if isinstance(value, list):
                merged[key] = merged.get(key, []) + value
            elif isinstance(value, str):
                parts = [part for part in (merged.get(key, ""), value) if part]
                merged[key] = "; ".join(parts)
            else:
                merged.setdefault(key, value)
    return merged


def chain_folders(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for entry in Path(directory).iterdir():
        match = re.fullmatch(r"chain-(\d+)", entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def read_store(directory: str | os.PathLike) -> dict[str, Any]:
    """Read a run directory's draws, finished or still being written.

    Returns ``{"posterior": {site: array (chain, draw, ...)}, "stats": {name: array
    (chain, draw)}, "manifest": dict, "num_draws": [per chain], "checks": dict}`` (the
    checks' attrs the finished chains wrote, :func:`read_checks`). Each chain contributes
    its consecutive draws ``0, 1, ...``; when the chains have different numbers (a run in
    progress, or one that stopped early), all are cut to the shortest, so that the arrays
    line up.

    Example::

        >>> import tempfile, torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> from pyro_csg import CyclicalSGLD
        >>> from pyro_csg.services.store import read_store
        >>> folder = tempfile.mkdtemp()
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> kernel = CyclicalSGLD(model, steps_per_cycle=20, checkpoint=folder)
        >>> MCMC(kernel, num_samples=8, warmup_steps=0, disable_progbar=True).run()
        >>> read_store(folder)["posterior"]["z"].shape
        (1, 8)
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    chains = chain_folders(directory)
    num_chains = manifest.get("settings", {}).get("num_chains")
    if num_chains is not None:  # folders of an earlier run with more chains stay out
        chains = [(index, folder) for index, folder in chains if index < num_chains]
    if not chains:
        raise ValueError(f"{directory} has no chain folder yet: the run has not started")
    per_chain: list[list[Path]] = []
    for _, folder in chains:
        draws = folder / "draws"
        count = _contiguous(_draw_indices(draws)) if draws.is_dir() else 0
        per_chain.append([draws / f"{index:08d}.nc" for index in range(count)])
    num_draws = [len(paths) for paths in per_chain]
    shortest = min(num_draws)
    posterior: dict[str, list] = {}
    stats: dict[str, list] = {key: [] for key in STATS}
    for paths in per_chain:
        rows = [read_draw(path) for path in paths[:shortest]]
        for name in manifest["sites"]:
            posterior.setdefault(name, []).append(
                np.stack([row[0][name] for row in rows]) if rows else None
            )
        for key in STATS:
            # noise_ratio, backoffs and rejected came later: older draw files lack them.
            stats[key].append(np.array([row[2].get(key, _MISSING.get(key)) for row in rows]))
    if shortest == 0:
        raise ValueError(f"{directory} has no retained draw yet (draws per chain: {num_draws})")
    return {
        "posterior": {name: np.stack(values) for name, values in posterior.items()},
        "stats": {key: np.stack(values) for key, values in stats.items()},
        "manifest": manifest,
        "num_draws": num_draws,
        "checks": read_checks([folder for _, folder in chains]),
    }
