"""Minibatch indices for the subsampled plates of a Pyro model.

A model declares its data plate as Pyro users already do::

    with pyro.plate("data", N, subsample_size=B) as idx:
        pyro.sample("obs", dist.Normal(f(x[idx]), sigma), obs=y[idx])

The kernels feed each such plate its indices through :class:`EpochBatches`: every epoch
a fresh random permutation of ``range(N)`` is cut into ``N // B`` consecutive batches of
exactly ``B`` indices. Each datum is used once per epoch; when ``B`` does not divide
``N`` the ``N mod B`` indices left at the end of a permutation sit that epoch out (a
different few each epoch, as with ``DataLoader(shuffle=True, drop_last=True)``). Every
batch is then a uniformly random subset of size ``B``, so with the plate's own scale
``N / B`` the minibatch potential is an unbiased estimate of the full-data one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SubsamplePlate", "EpochBatches"]


@dataclass(frozen=True)
class SubsamplePlate:
    """A ``pyro.plate`` with ``subsample_size < size``, as found in the model's trace.

    Example::

        >>> from pyro_csg.subsample import SubsamplePlate
        >>> SubsamplePlate("data", size=1000, subsample_size=50, device="cpu")
        SubsamplePlate(name='data', size=1000, subsample_size=50, device='cpu')
    """

    name: str
    size: int
    subsample_size: int
    device: str | torch.device

    @property
    def batches_per_epoch(self) -> int:
        return self.size // self.subsample_size

    def window(self, start: int) -> torch.Tensor:
        """The ``subsample_size`` consecutive indices from ``start``, on the plate's device."""
        return torch.arange(start, start + self.subsample_size, device=self.device)


class EpochBatches:
    """Successive minibatches of one plate: a new random permutation every epoch.

    Uses the global torch generator of the plate's device, so ``pyro.set_rng_seed``
    makes the sequence reproducible.

    Example::

        >>> import torch
        >>> from pyro_csg.subsample import EpochBatches, SubsamplePlate
        >>> _ = torch.manual_seed(0)
        >>> batches = EpochBatches(SubsamplePlate("data", 6, 2, "cpu"))
        >>> epoch = torch.cat([batches.next() for _ in range(3)])
        >>> sorted(epoch.tolist())
        [0, 1, 2, 3, 4, 5]
    """

    def __init__(self, plate: SubsamplePlate) -> None:
        self.plate = plate
        self.epoch = -1
        self._permutation: torch.Tensor | None = None
        self._position = plate.batches_per_epoch  # forces a permutation on first use

    def next(self) -> torch.Tensor:
        """The next batch: a tensor of ``subsample_size`` distinct indices."""
        plate = self.plate
        if self._position >= plate.batches_per_epoch:
            self._permutation = torch.randperm(plate.size, device=plate.device)
            self._position = 0
            self.epoch += 1
        start = self._position * plate.subsample_size
        self._position += 1
        return self._permutation[start : start + plate.subsample_size]
