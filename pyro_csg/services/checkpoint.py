"""Checkpoints and resume: a run directory that survives ``SIGKILL``, Ctrl-C and errors.

``CyclicalSGHMC(model, ..., checkpoint="runs/bnn")`` (or ``checkpoint=Checkpoint(...)``)
makes the kernel

* write every retained draw to ``runs/bnn/chain-<c>/draws/`` as it is made (see
  :mod:`pyro_csg.services.store`);
* write the chain's state (:class:`~pyro_csg.core.state.ChainState`) to
  ``runs/bnn/chain-<c>/checkpoint.pt`` at the end of every cycle, at the end of the run,
  and when the run stops early (Ctrl-C, ``NonFiniteError``, an error in the model); the
  file is written under a temporary name, flushed to the disk and renamed, so it is always
  the old checkpoint or the new one, never a torn one;
* on the next run of the same script, resume: the draws made before the checkpoint are
  read back from the store and handed to ``pyro.infer.MCMC`` again, and sampling goes on
  from the saved state. On the CPU the final draws are bit for bit those of a run that
  was never interrupted; at most the draws of one cycle are made twice.

A resume is refused, with the setting named, when the checkpoint comes from another
sampler, other hyperparameters, another ``warmup_steps``, other latent sites or plates,
other data or another number of chains; the potential at the saved parameters is also
recomputed and compared, which catches a changed model. ``Checkpoint(path,
resume=False)`` starts over (deleting that chain's old draws).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .store import CHECKS, DrawWriter, atomic_write, read_manifest

__all__ = ["Checkpoint", "CheckpointError"]

_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed by this run; the message says why.

    Example::

        >>> from pyro_csg.services.checkpoint import CheckpointError
        >>> issubclass(CheckpointError, ValueError)
        True
    """


class Checkpoint:
    """Where a run keeps its checkpoints and its draws, and whether it resumes.

    :param directory: a folder (created if needed). It must be empty, missing, or a
        folder an earlier run of these kernels wrote (with its ``run.json``).
    :param bool resume: continue from the checkpoint found there (default True); False
        deletes the chain's earlier draws and checkpoint and starts over.

    Example::

        >>> import tempfile, torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> from pyro_csg import Checkpoint, CyclicalSGLD
        >>> folder = tempfile.mkdtemp()
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> def run():
        ...     pyro.set_rng_seed(0)
        ...     kernel = CyclicalSGLD(model, steps_per_cycle=20,
        ...                           checkpoint=Checkpoint(folder))
        ...     mcmc = MCMC(kernel, num_samples=8, warmup_steps=0, disable_progbar=True)
        ...     mcmc.run()
        ...     return mcmc.get_samples()["z"]
        >>> first = run()
        >>> again = run()  # resumes: every draw is read back from the folder
        >>> torch.equal(first, again)
        True
    """

    def __init__(self, directory: str | os.PathLike, resume: bool = True) -> None:
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(
                f"checkpoint must be a folder path or a pyro_csg.Checkpoint, got "
                f"{type(directory).__name__}"
            )
        if not isinstance(resume, bool):
            raise TypeError(f"resume must be True or False, got {resume!r}")
        self.directory = Path(directory)
        self.resume = resume

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.directory)!r}, resume={self.resume})"


def as_checkpoint(value: str | os.PathLike | Checkpoint | None) -> Checkpoint | None:
    if value is None or isinstance(value, Checkpoint):
        return value
    return Checkpoint(value)


def data_digest(args: tuple, kwargs: dict) -> str:
    """A SHA-1 of the model's arguments: tensors and arrays by their bytes, shapes and
    dtypes; numbers, strings and None by value; containers element by element; other
    objects (modules, functions) by their type name only."""
    digest = hashlib.sha1()

    def visit(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            digest.update(f"tensor{tuple(value.shape)}{value.dtype}".encode())
            digest.update(value.contiguous().view(torch.uint8).numpy().tobytes())
        elif isinstance(value, np.ndarray):
            digest.update(f"array{value.shape}{value.dtype}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        elif isinstance(value, (list, tuple)):
            digest.update(f"{type(value).__name__}{len(value)}".encode())
            for item in value:
                visit(item)
        elif isinstance(value, dict):
            digest.update(f"dict{len(value)}".encode())
            for key in sorted(value, key=str):
                digest.update(repr(key).encode())
                visit(value[key])
        elif value is None or isinstance(value, (bool, int, float, str, np.generic)):
            digest.update(repr(value).encode())
        else:
            digest.update(type(value).__qualname__.encode())

    visit(tuple(args))
    visit(dict(kwargs))
    return digest.hexdigest()


def _same(saved: Any, current: Any) -> bool:
    if isinstance(saved, float) and isinstance(current, float):
        return saved == current or (math.isnan(saved) and math.isnan(current))
    return saved == current


def compare_settings(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Raise :class:`CheckpointError` naming the first setting that differs."""
    for key in current:
        if key in saved and not _same(saved[key], current[key]):
            raise CheckpointError(
                f"the checkpoint in {where} was made with {key} = {saved[key]!r}, but this run "
                f"has {key} = {current[key]!r}, so it cannot resume it. Run with the same "
                f"settings to resume, or pass checkpoint=pyro_csg.Checkpoint({str(where)!r}, "
                "resume=False) to start over (deleting its draws), or use another folder."
            )


class ChainFiles:
    """One chain's checkpoint and draws in a run directory (used by the kernels).

    :param checkpoint: the run directory and resume flag.
    :param int chain: the chain's index (its folder is ``chain-<chain>``).
    :param dict settings: what must match for a resume (sampler, hyperparameters, ...).
    :param dict manifest: what ``run.json`` records for readers (sites, hyperparameters).
    :param raw_sites: sites whose draws are also stored unconstrained.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        chain: int,
        settings: dict[str, Any],
        manifest: dict[str, Any],
        raw_sites: frozenset[str],
    ) -> None:
        self.root = checkpoint.directory
        self.folder = self.root / f"chain-{chain}"
        self.path = self.folder / "checkpoint.pt"
        self.chain = chain
        self.settings = settings
        self._prepare_root(checkpoint, manifest)
        if not checkpoint.resume and self.folder.exists():
            shutil.rmtree(self.folder)
        for leftover in self.folder.glob("*.tmp*"):  # a checkpoint a killed run did not finish
            leftover.unlink()
        # The checks of an earlier run describe its draws: a run that goes on writes its own.
        (self.folder / CHECKS).unlink(missing_ok=True)
        self.writer = DrawWriter(self.folder / "draws", raw_sites)

    def _prepare_root(self, checkpoint: Checkpoint, manifest: dict[str, Any]) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise CheckpointError(f"checkpoint={str(root)!r} is a file, not a folder")
        if root.is_dir() and any(root.iterdir()):
            try:
                saved = read_manifest(root)
            except FileNotFoundError:
                raise CheckpointError(
                    f"checkpoint={str(root)!r} is a folder that holds other files and no "
                    "run.json: it was not made by these kernels. Give an empty or new folder."
                ) from None
            if checkpoint.resume:
                compare_settings(saved.get("settings", {}), self.settings, root)
        root.mkdir(parents=True, exist_ok=True)
        content = json.dumps({"format": _FORMAT, "settings": self.settings, **manifest}, indent=1)
        atomic_write(root / "run.json", lambda path: path.write_text(content), sync=True)

    def load(self) -> dict[str, Any] | None:
        """The saved checkpoint (``{"settings", "state", "kept", ...}``) or None."""
        if not self.path.is_file():
            return None
        saved = torch.load(self.path, map_location="cpu", weights_only=True)
        if saved.get("format") != _FORMAT:
            raise CheckpointError(
                f"{self.path} has checkpoint format {saved.get('format')!r}; this version of "
                f"pyro-csg reads format {_FORMAT}"
            )
        compare_settings(saved["settings"], self.settings, self.root)
        return saved

    def save(self, state_dict: dict[str, Any], kept: int) -> None:
        """Write the checkpoint atomically, after the draws it counts on are on disk."""
        self.writer.sync()
        content = {
            "format": _FORMAT,
            "settings": self.settings,
            "chain": self.chain,
            "kept": kept,
            "state": state_dict,
        }
        atomic_write(self.path, lambda path: torch.save(content, path), sync=True)
