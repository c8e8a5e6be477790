"""What one chain of a run has kept, and how a stopped run resumes.

A :class:`ChainRecord` holds a chain's committed :class:`~pyro_csg.core.state.ChainState`
and what the chain has made: its retained draws (in memory, or in the draw store with
``checkpoint=``) and their statistics. Its rule: a draw is stored (:meth:`keep`) before
the state that made it is committed (:meth:`commit`), so that an interruption at any
moment leaves the last committed state consistent with the store.

Resuming (:meth:`open_checkpoint`, :meth:`continue_loaded`): the saved state replaces the
chain's, and the draws made before the checkpoint are handed to the caller again from
the store (:meth:`replay`) before sampling goes on. Data-parallel, rank 0 alone reads
and writes the store and hands the other ranks what it read (``share``,
:class:`~pyro_csg.services.distributed.RankShare`). :meth:`stopped_early` keeps what a
run made when it stops with an exception and says, in the exception's note, where the
draws are and how to resume.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import NonFiniteError, StateMismatchError
from ..core.parameters import FlatLayout, LatentSite
from ..core.state import ChainState
from .checkpoint import ChainFiles, Checkpoint, CheckpointError, compare_settings, data_digest
from .distributed import RankShare
from .store import STATS

__all__ = ["ChainRecord", "verify_potential"]

Restore = Callable[[dict[str, Any]], ChainState]
"""Turns a saved state (``ChainState.state_dict()``) into the chain's state, on its device."""


class ChainRecord:
    """One chain's committed state, its kept draws and statistics, and its resume.

    :param int index: the chain's index in the run.
    :param sites: the latent sites (for constrained draws and the store).
    :param state: the chain's state before its first draw.
    :param int warmup_steps: how many of the run's first draws are thrown away.
    :param share: this rank's share of a data-parallel run (``None``: one process).
    """

    def __init__(
        self,
        index: int,
        sites: tuple[LatentSite, ...],
        state: ChainState,
        warmup_steps: int,
        share: RankShare | None = None,
    ) -> None:
        self.index, self.sites, self.warmup_steps, self.share = index, sites, warmup_steps, share
        self.flat = FlatLayout(sites)
        self.state = state
        self.draws_at_start = state.draws  # > 0 when continuing a loaded state
        self.replay_until = 0  # calls answered from the store after a resume
        self.replayed = 0
        self.files: ChainFiles | None = None
        self.kept_thetas: list[torch.Tensor] | None = []  # in memory, when no store
        self.stats: dict[str, list] = {key: [] for key in STATS}
        self.checkpointed_at = -1  # state.draws at the last checkpoint
        self.verify = False  # a resumed state: check it against the model first
        self._settings: dict[str, Any] = {}
        self._data: tuple[tuple, dict] | None = None  # digested on first use of settings
        self.last_draw: dict[str, torch.Tensor] | None = None

    # -- settings ----------------------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        """What a saved state of this chain must agree on to be resumed (JSON-able), with
        the digest of the model's data (:func:`~pyro_csg.services.checkpoint.data_digest`)
        taken on first use: a run that never checkpoints, saves its ``state_dict`` or
        checks its ranks does not read its data for it (a SHA-1 of every byte: 0.7 s at
        N = 1e7 rows of 10 features)."""
        if self._data is not None:
            args, kwargs = self._data
            self._data = None
            self._settings["data"] = data_digest(args, kwargs)
        return self._settings

    def set_settings(self, settings: dict[str, Any], args: tuple, kwargs: dict) -> None:
        """The settings, and the model's arguments for their ``"data"`` digest, taken
        when :attr:`settings` is first read."""
        self._settings, self._data = settings, (tuple(args), dict(kwargs))

    # -- counting ----------------------------------------------------------------------------
    @property
    def calls(self) -> int:
        """Draws answered in this run (replayed ones included)."""
        if self.replayed < self.replay_until:
            return self.replayed
        return self.state.draws - self.draws_at_start

    @property
    def kept(self) -> int:
        """Retained (post-warm-up) draws of this run so far."""
        return max(0, self.calls - self.warmup_steps)

    @property
    def replaying(self) -> bool:
        return self.replayed < self.replay_until

    # -- recording ---------------------------------------------------------------------------
    def keep(self, state: ChainState, draw: dict[str, torch.Tensor], stats: dict) -> None:
        """Store the retained draw that ``state`` (not yet committed) made."""
        kept = self.kept
        if self.files is not None:
            constrained = {
                site.name: site.transform.inv(value)
                for site, value in zip(self.sites, draw.values(), strict=True)
            }
            self.files.writer.write(kept, constrained, draw, {"chain": self.index, **stats})
        else:
            del self.kept_thetas[kept:]
            self.kept_thetas.append(state.theta)
        for key in STATS:
            del self.stats[key][kept:]
            self.stats[key].append(stats[key])

    def commit(self, state: ChainState, draw: dict[str, torch.Tensor], per_cycle: int) -> None:
        """From here on the draw counts; a checkpoint at the end of every cycle."""
        self.state = state
        self.last_draw = draw
        if self.files is not None and state.draws % per_cycle == 0:
            self.save_checkpoint()

    def constrained_draws(self) -> dict[str, torch.Tensor]:
        """The retained draws so far, constrained, stacked along a leading draw dim."""
        kept = self.kept
        if self.files is not None:
            rows = [self.files.writer.read(n)[0] for n in range(kept)]
            return {
                site.name: torch.as_tensor(np.stack([row[site.name] for row in rows]))
                if rows
                else torch.zeros((0, *site.shape), dtype=site.dtype)
                for site in self.sites
            }
        thetas = self.kept_thetas[:kept]
        flat = torch.stack(thetas) if thetas else self.state.theta.new_zeros((0, self.flat.size))
        parts = flat.split(self.flat.sizes, dim=-1)
        return {
            site.name: site.transform.inv(
                part.reshape(kept, *site.unconstrained_shape).to(site.dtype)
            )
            for site, part in zip(self.sites, parts, strict=True)
        }

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        self.files.save(self.state.state_dict(), kept=self.kept)
        self.checkpointed_at = self.state.draws

    def finish(self) -> None:
        """After the chain's last draw: its final checkpoint, if the last is older."""
        if self.files is not None and self.checkpointed_at != self.state.draws:
            self.save_checkpoint()

    def _restored(self, restore: Restore, saved: dict[str, Any]) -> None:
        try:
            self.state = restore(saved)
        except StateMismatchError as error:
            raise CheckpointError(str(error)) from None

    def _resume_from(self, restore: Restore, saved: dict[str, Any]) -> None:
        """A checkpoint's state: the draws up to it are replayed, then sampling goes on."""
        self._restored(restore, saved)
        self.draws_at_start = 0
        self.replay_until = self.state.draws
        self.checkpointed_at = self.state.draws
        self.verify = self.state.started

    def resume(
        self,
        checkpoint: Checkpoint | None,
        loaded: dict[str, Any] | None,
        manifest: dict[str, Any],
        restore: Restore,
    ) -> None:
        """Resume from ``checkpoint`` (its folder is opened, or created with
        ``manifest``) or from a ``loaded`` state dict, if either is given."""
        if checkpoint is not None:
            self.open_checkpoint(checkpoint, manifest, restore)
        elif loaded is not None:
            self.continue_loaded(loaded, restore)

    def open_checkpoint(
        self, checkpoint: Checkpoint, manifest: dict[str, Any], restore: Restore
    ) -> None:
        """Open (or resume) the chain's folder of ``checkpoint``; rank 0 alone when
        data-parallel, handing the other ranks what it resumed."""
        share = self.share
        if share is None:
            self._open_files(checkpoint, manifest, restore)
        elif share.writes:
            try:
                self._open_files(checkpoint, manifest, restore)
            except Exception as error:
                share.broadcast_object({"error": f"{type(error).__name__}: {error}"})
                raise
            resumed = self.replay_until > 0 or self.state.draws > 0
            share.broadcast_object(
                {"state": self.state.state_dict() if resumed else None, "error": None}
            )
        else:
            received = share.broadcast_object(None)
            if received["error"] is not None:
                raise CheckpointError(f"rank 0 could not open the checkpoint: {received['error']}")
            if received["state"] is not None:
                self._resume_from(restore, received["state"])

    def _open_files(self, checkpoint: Checkpoint, manifest: dict, restore: Restore) -> None:
        raw_sites = frozenset(site.name for site in self.sites if not site.is_identity)
        files = ChainFiles(checkpoint, self.index, self.settings, manifest, raw_sites)
        self.files = files
        self.kept_thetas = None  # the store keeps the draws
        saved = files.load() if checkpoint.resume else None
        if saved is None:
            files.writer.truncate(0)
            return
        self._resume_from(restore, saved["state"])
        kept, on_disk = int(saved["kept"]), files.writer.count()
        if on_disk < kept:
            raise CheckpointError(
                f"the checkpoint in {files.folder} counts {kept} draws but only {on_disk} "
                "are on disk: the folder was changed by hand. Start over with "
                f"checkpoint=pyro_csg.Checkpoint({str(files.root)!r}, resume=False)."
            )
        files.writer.truncate(kept)  # draws made after the checkpoint are made again

    def continue_loaded(self, loaded: dict[str, Any], restore: Restore) -> None:
        """Go on from a kernel's ``state_dict()`` (its settings must match)."""
        chains = loaded["chains"]
        if self.index not in chains:
            raise ValueError(
                f"the loaded state_dict has chain(s) {sorted(chains)}, not chain {self.index}"
            )
        ignored = ("warmup_steps", "num_chains")
        current = {k: v for k, v in self.settings.items() if k not in ignored}
        compare_settings(loaded["settings"], current, Path("the loaded state_dict"))
        self._restored(restore, chains[self.index])
        self.draws_at_start = self.state.draws
        self.verify = self.state.started

    # -- replay ------------------------------------------------------------------------------
    def replay(self) -> dict[str, torch.Tensor]:
        """A resumed run: the unconstrained draw the first run made at this call, read from
        the store (the last draw again during warm-up, which the caller throws away)."""
        call = self.replayed
        if call < self.warmup_steps:
            draw = self.last_draw
        else:
            row = None
            if self.files is not None:
                _, unconstrained, stats = self.files.writer.read(call - self.warmup_steps)
                row = (unconstrained, stats)
            if self.share is not None:  # rank 0 reads the store for every rank
                row = self.share.broadcast_object(row)
            unconstrained, stats = row
            device = self.state.theta.device
            draw = {
                site.name: torch.from_numpy(unconstrained[site.name]).to(device)
                for site in self.sites
            }
            if self.kept_thetas is not None:
                self.kept_thetas.append(self.flat.flatten(draw))
            for key in STATS:
                self.stats[key].append(stats[key])
        self.replayed += 1
        self.last_draw = draw
        return draw

    # -- early stops -------------------------------------------------------------------------
    def stopped_early(self, error: BaseException, per_cycle: int) -> None:
        """Keep what the run made: checkpoint the last committed state, say in the
        error's note where the draws are, and hand them over on a NonFiniteError."""
        if getattr(error, "_pyro_csg_noted", False):
            return
        files = self.files
        if files is not None and self.state.started and self.checkpointed_at != self.state.draws:
            try:
                self.save_checkpoint()
            except Exception as failure:  # noqa: BLE001 -- report, keep the first error
                error.add_note(f"pyro-csg: writing the checkpoint failed too: {failure!r}")
        if files is not None:
            # A stop between a draw's file and its commit leaves one draw the state has not
            # counted (a resume makes it again): off the disk, so the store, the checkpoint
            # and get_samples() agree on what the run kept.
            try:
                files.writer.truncate(self.kept)
            except OSError as failure:
                error.add_note(f"pyro-csg: clearing an uncommitted draw failed: {failure!r}")
        error.add_note(self._stop_note(isinstance(error, KeyboardInterrupt), per_cycle))
        error._pyro_csg_noted = True
        if isinstance(error, NonFiniteError):
            error.samples = self.constrained_draws()
            error.num_draws = self.kept

    def _stop_note(self, interrupted: bool, per_cycle: int) -> str:
        kept, files = self.kept, self.files
        note = (
            f"pyro-csg: chain {self.index} stopped after {kept} retained draw(s) "
            f"({kept // per_cycle} complete cycle(s) of {per_cycle})."
        )
        if kept:
            note += " kernel.get_samples() returns them"
            if files is not None:
                note += (
                    f"; they are also on disk in {files.folder}, and "
                    f"pyro_csg.to_inference_data({str(files.root)!r}) reads them"
                )
            note += "."
        warmup = " of the chain, warm-up included" if self.warmup_steps else ""
        if files is not None and self.checkpointed_at >= 0:
            if interrupted:
                return note + (
                    " Run the same script again to resume after draw "
                    f"{self.checkpointed_at}{warmup} (the checkpoint {files.path})."
                )
            return note + (
                f" The checkpoint {files.path} is after draw {self.checkpointed_at}"
                f"{warmup}: a run with the same settings resumes there; one with other "
                "settings (say a smaller step_size) needs another folder or "
                "pyro_csg.Checkpoint(..., resume=False)."
            )
        if files is None:
            note += (
                " Pass checkpoint='<folder>' to the kernel to stream the draws to disk and "
                "resume after a stop."
            )
        return note


def verify_potential(chain, state: ChainState) -> None:
    """A resumed chain: the potential at the saved parameters, on the saved batch, must be
    what was saved (else the model or its data changed); ``chain`` is the
    :class:`~pyro_csg.core.sampler.Chain` the state belongs to."""
    potential = chain.potential
    if not getattr(potential, "compiled", False):
        return  # an eager potential may be stochastic: nothing to compare
    centre = getattr(state.estimator, "centre", None)
    if centre is not None:
        # Control variates: U~ at the state differs from the raw U~ by U(theta_hat) minus
        # its estimate, and a changed prior may cancel out of it; the full-data potential
        # at the centre does not hide such a change.
        energy, _ = potential.full_value_and_grad(centre.theta)
        saved = centre.energy
    else:
        energy, _ = chain.gradient(state)(state.theta, [cursor.last() for cursor in chain.batches])
        saved = state.energy
    if not torch.allclose(energy, saved, rtol=1e-4, atol=1e-6 * float(saved.abs()) + 1e-6):
        raise CheckpointError(
            f"the potential at the saved parameters is {float(energy):.6g} with this model "
            f"and data, but was {float(saved):.6g} when the state was saved: the model "
            "changed, so the saved chain cannot go on with it. Start over (for a "
            "checkpoint: resume=False, or another folder)."
        )
