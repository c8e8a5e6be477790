"""Data-parallel steps over ``torch.distributed``: one chain, its minibatch split over ranks.

Launched with ``torchrun --nproc_per_node=R script.py`` (or any initialised process
group), every rank builds the same kernel and runs the same chain. The model's
``subsample_size`` ``B`` is the *global* batch: every rank draws the same permutation
from a generator seeded identically on every rank, rank ``r`` takes the ``r``-th share
``b_r`` of ``b = B / R`` consecutive indices of each batch, and evaluates its own
potential, in which the plate scales the likelihood by ``N / b``::

    U_r(theta) = -log p(z) - (N / b) * sum_{i in b_r} log p(y_i | z) - log |det J|

Their mean is the global batch's potential ``U~(theta; b_0 + ... + b_{R-1})``, so one
``all_reduce`` of the flat vector ``[U_r, grad U_r]`` per step (a sum, divided by ``R``)
gives every rank the same ``U~`` and gradient; the Langevin noise comes from the shared
generator, so every rank makes the same update and holds the same chain. Rank 0 writes
the draws and checkpoints; a resumed run broadcasts them to the others.

Collectives that fail (a rank died, or the process group's ``timeout`` passed) raise
:class:`RankLostError` on the ranks left, never a hang beyond that timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["RankShare", "RankLostError", "resolve_process_group"]


class RankLostError(RuntimeError):
    """A collective with the other ranks failed: one died, stopped or timed out.

    Example::

        >>> from pyro_csg.services.distributed import RankLostError
        >>> issubclass(RankLostError, RuntimeError)
        True
    """


@dataclass(frozen=True)
class RankShare:
    """This rank's place in a data-parallel chain: its process group, rank and size.

    Example (a process group of one, as ``torchrun --nproc_per_node=1`` makes)::

        >>> import torch, torch.distributed as dist
        >>> from pyro_csg.services.distributed import RankShare
        >>> share = RankShare(group=None, rank=1, world_size=2, source=0)
        >>> [idx.tolist() for idx in share.take([torch.arange(8)])]
        [[4, 5, 6, 7]]
    """

    group: Any  # a torch.distributed ProcessGroup; None for the default group
    rank: int
    world_size: int
    source: int  # the global rank of the group's rank 0 (the writer)

    @property
    def writes(self) -> bool:
        """Whether this rank writes the draws and checkpoints (the group's rank 0)."""
        return self.rank == 0

    def take(self, indices: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """This rank's share of each plate's global batch: its ``B / R`` consecutive
        indices."""
        shares = []
        for index in indices:
            size = index.shape[0] // self.world_size
            shares.append(index[self.rank * size : (self.rank + 1) * size])
        return shares

    def mean(self, energy: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ranks' mean ``U~`` and gradient, in one ``all_reduce`` (any shapes: a
        paired evaluation sends two of each)."""
        count = energy.numel()
        buffer = torch.cat([energy.reshape(-1).to(grad.dtype), grad.reshape(-1)])
        self._collective(dist.all_reduce, buffer)
        buffer /= self.world_size
        return buffer[:count].reshape(energy.shape).to(energy.dtype), buffer[count:].reshape(
            grad.shape
        )

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The ranks' sum of ``tensor`` (in place)."""
        self._collective(dist.all_reduce, tensor)
        return tensor

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` on every rank (in place)."""
        self._collective(dist.broadcast, tensor, src=self.source)
        return tensor

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        box = [value]
        self._collective(dist.broadcast_object_list, box, src=self.source)
        return box[0]

    def check_same(self, settings: dict[str, Any], what: str) -> None:
        """Raise on every rank unless every rank has rank 0's ``settings``."""
        reference = self.broadcast_object(settings)
        differing = [key for key in reference if reference.get(key) != settings.get(key)]
        flags = torch.zeros(self.world_size, dtype=torch.int32)
        flags[self.rank] = bool(differing)
        if dist.get_backend(self.group) == "nccl":
            flags = flags.cuda()
        self.sum(flags)
        odd = flags.nonzero().flatten().tolist()
        if odd:
            mine = f" (this rank differs in {differing})" if differing else ""
            raise ValueError(
                f"the data-parallel ranks must run one chain on the same {what}, but rank(s) "
                f"{odd} differ from rank 0{mine}: give every rank the same model, "
                "arguments and settings (each rank loads all the data; the kernel splits "
                "the batches)"
            )

    def _collective(self, operation, *args, **kwargs) -> None:
        try:
            operation(*args, group=self.group, **kwargs)
        except RuntimeError as error:
            first_line = (str(error).splitlines() or [""])[0]
            raise RankLostError(
                f"rank {self.rank} of {self.world_size}: the data-parallel chain's "
                f"{operation.__name__} with the other ranks failed ({type(error).__name__}: "
                f"{first_line}). Another rank died or stopped, or did not answer within the "
                "process group's timeout (init_process_group(timeout=...)). Relaunch the same "
                "command: with checkpoint= the run resumes after its last checkpoint."
            ) from error


def resolve_process_group(process_group: Any) -> RankShare | None:
    """The :class:`RankShare` the kernels use, from their ``process_group`` argument.

    ``None`` (the default): data-parallel over the default process group when one is
    initialised with more than one rank (as under ``torchrun``), else a plain run.
    ``False``: never (each rank runs its own chain, say for chains spread over ranks).
    A ``ProcessGroup``: data-parallel over that group.

    Example::

        >>> from pyro_csg.services.distributed import resolve_process_group
        >>> resolve_process_group(None) is None  # no process group initialised here
        True
    """
    if process_group is False:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        if process_group is None:
            return None
        raise ValueError(
            f"process_group={process_group!r} was given but torch.distributed is not "
            "initialised: launch with torchrun and call "
            "torch.distributed.init_process_group() first, or drop process_group"
        )
    group = None if process_group is None or process_group is True else process_group
    world_size = dist.get_world_size(group)
    if world_size == 1:
        return None
    source = 0 if group is None else dist.get_global_rank(group, 0)
    return RankShare(group, dist.get_rank(group), world_size, source)
