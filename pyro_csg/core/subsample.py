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

import math
from dataclasses import dataclass

import torch

__all__ = [
    "SubsamplePlate",
    "EpochBatches",
    "windows",
    "grown_batch",
    "GROW_FROM",
    "GROWTH_MARGIN",
    "MAX_GROWTH",
    "MAX_GROWN_BATCH",
    "MAX_GROWN_WORK",
]

GROW_FROM = 2.0
"""The cut (``1 / (eta_1 lambda_max)``: how many times below the mean curvature's bound
the minibatch noise and the stiffest single batch put the automatic step) from which a
chain runs larger batches (:func:`grown_batch`): where the noise at least halves the step
(as for control variates, ``CONTROL_VARIATES_PAY``). Growing costs no more data per unit
of Langevin time at any cut; the noise warning comes at a cut that remains above
``pyro_csg.core.sampler.NOISE_WARNING_CUT`` (10)."""
GROWTH_MARGIN = 4.0
"""A grown batch is this many times the one at which the curvature, not the noise, would
bound the step: there the noise ratio is still up to ``NOISE_RATIO_LIMIT`` (1/2) at the
sampling stage's first step, and a control variate's noise grows away from the centre.
Measured on a hierarchical logistic regression (50 group intercepts, ``tau``,
``B = 50`` of 5,000; cSGHMC seed 2, 200 draws, NUTS's reference): grown to the bound
(698 rows, control variates on) ``tau`` was 0.49 sds high and 1.22 times too wide, with
no warning; four times as large (2,792), every element within 0.20 sds."""
MAX_GROWTH = 64
"""By default a batch grows to at most this many times the plate's ``subsample_size``."""
MAX_GROWN_BATCH = 65_536
"""And to at most this many indices (the most one call of the full-data pass evaluates)."""
MAX_GROWN_WORK = 2**20
"""And to at most this many parameter-datum products a step (``B' D``, the arithmetic of
a linear predictor's gradient): below it a step costs about its fixed overhead on one
core (the traced graph's ops: 100 to 200 us on the benchmarks' models), so growing costs
little; a network's batch is there already (the MLP of ``benchmarks/overhead.py``: 128
rows of 7,510 weights, 0.96e6) and keeps its step's cost."""


@dataclass(frozen=True)
class SubsamplePlate:
    """A ``pyro.plate`` with ``subsample_size < size``, as found in the model's trace.

    Example::

        >>> from pyro_csg.core.subsample import SubsamplePlate
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

    The permutations come from ``generator`` (the chain's own ``torch.Generator``; the
    kernels own one per chain), drawn on the generator's device and moved to the plate's.
    Without one they come from the global generator of the plate's device. The cursor
    (permutation, position, epoch) is saved and restored with :meth:`state_dict` and
    :meth:`load_state_dict`.

    Example::

        >>> import torch
        >>> from pyro_csg.core.subsample import EpochBatches, SubsamplePlate
        >>> generator = torch.Generator().manual_seed(0)
        >>> batches = EpochBatches(SubsamplePlate("data", 6, 2, "cpu"), generator)
        >>> epoch = torch.cat([batches.next() for _ in range(3)])
        >>> sorted(epoch.tolist())
        [0, 1, 2, 3, 4, 5]
        >>> saved = batches.state_dict()
        >>> after = batches.next()
        >>> batches.load_state_dict(saved)
        >>> torch.equal(batches.next(), after)
        False
    """

    def __init__(self, plate: SubsamplePlate, generator: torch.Generator | None = None) -> None:
        self.plate = plate
        self.generator = generator
        self.epoch = -1
        self._permutation: torch.Tensor | None = None
        self._position = plate.batches_per_epoch  # forces a permutation on first use

    def next(self) -> torch.Tensor:
        """The next batch: a tensor of ``subsample_size`` distinct indices."""
        plate = self.plate
        if self._position >= plate.batches_per_epoch:
            if self.generator is None:
                self._permutation = torch.randperm(plate.size, device=plate.device)
            else:
                self._permutation = torch.randperm(
                    plate.size, generator=self.generator, device=self.generator.device
                ).to(plate.device)
            self._position = 0
            self.epoch += 1
        start = self._position * plate.subsample_size
        self._position += 1
        return self._permutation[start : start + plate.subsample_size]

    def last(self) -> torch.Tensor | None:
        """The batch that :meth:`next` returned last (``None`` before the first)."""
        if self._permutation is None:
            return None
        start = (self._position - 1) * self.plate.subsample_size
        return self._permutation[start : start + self.plate.subsample_size]

    def state_dict(self) -> dict:
        """The cursor: ``{"permutation", "position", "epoch"}`` (the permutation is not
        copied: it is never modified in place)."""
        return {"permutation": self._permutation, "position": self._position, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        """Restore a cursor saved by :meth:`state_dict`."""
        permutation = state["permutation"]
        if permutation is not None:
            if permutation.shape != (self.plate.size,):
                raise ValueError(
                    f"the saved permutation of plate '{self.plate.name}' has "
                    f"{permutation.numel()} indices, the plate has size {self.plate.size}"
                )
            permutation = permutation.to(self.plate.device)
        self._permutation = permutation
        self._position = int(state["position"])
        self.epoch = int(state["epoch"])


def windows(plate: SubsamplePlate) -> list[tuple[int, int]]:
    """``(start, keep_from)`` of each window of ``B`` indices covering ``range(N)``.

    The walk shared by the full-data passes (the log-likelihood for ArviZ, the
    control variates' full gradient): Pyro insists that a conditioned subsample has
    exactly ``B`` indices, so the data is visited in windows ``[0, B), [B, 2B), ...``
    and, when ``B`` does not divide ``N``, a last window ``[N - B, N)``.

    The window is ``range(start, start + B)``; its first ``keep_from`` entries were
    already covered by the previous window.

    Example::

        >>> from pyro_csg.core.subsample import windows
        >>> from pyro_csg.core.subsample import SubsamplePlate
        >>> windows(SubsamplePlate("data", size=10, subsample_size=4, device="cpu"))
        [(0, 0), (4, 0), (6, 2)]
    """
    size, batch = plate.size, plate.subsample_size
    starts = list(range(0, size - batch + 1, batch))
    result = [(start, 0) for start in starts]
    covered = starts[-1] + batch
    if covered < size:
        result.append((size - batch, covered - (size - batch)))
    return result


def grown_batch(plate: SubsamplePlate, cut: float, most: int | None = None, dim: int = 1) -> int:
    """The batch a chain runs on ``plate`` when its minibatches put the automatic step
    ``cut`` times below the mean curvature's bound: the plate's ``B`` below
    :data:`GROW_FROM`, else ``ceil(GROWTH_MARGIN * B * cut)``, at most ``N`` and ``most``
    (``None``: the default bounds, :data:`MAX_GROWTH` ``B``, :data:`MAX_GROWN_BATCH` and
    :data:`MAX_GROWN_WORK` over ``dim`` parameters); ``B`` where that is not twice ``B``.

    Why it pays: the noise variance of ``grad U~`` falls as ``1 / B``, so where it bounds
    the step, ``eta ~ c B`` and the data read per unit of Langevin time, ``B / eta``, is
    the same whatever ``B``; the larger batch covers that time in ``1 / cut`` of the
    steps (each step's fixed cost paid that much less often), up to the batch at which
    the curvature bounds the step again (:data:`GROWTH_MARGIN` past it, for the noise
    the step still meets there), beyond which a larger batch only costs. A
    chain whose step the noise cut tenfold or more otherwise barely moves in its cycles
    (``benchmarks/defaults.py``'s hierarchical regression, 60 group effects, ``B = 100``
    of 3,000: 21 sds off after 50 cycles). Where a step's arithmetic, not its fixed
    cost, sets its time (a network), the default bounds keep the batch: growing it
    would cost each step as much more, and the noise warning says so.

    Example::

        >>> from pyro_csg.core.subsample import SubsamplePlate, grown_batch
        >>> plate = SubsamplePlate("data", size=3000, subsample_size=100, device="cpu")
        >>> grown_batch(plate, 1.5), grown_batch(plate, 2.5), grown_batch(plate, 436.0)
        (100, 1000, 3000)
        >>> grown_batch(plate, 436.0, most=500), grown_batch(plate, 436.0, dim=7510)
        (500, 100)
    """
    batch = plate.subsample_size
    if not cut >= GROW_FROM:
        return batch
    if most is None:
        most = min(MAX_GROWTH * batch, MAX_GROWN_BATCH, MAX_GROWN_WORK // max(dim, 1))
    grown = min(plate.size, most, math.ceil(GROWTH_MARGIN * batch * cut))
    return grown if grown >= 2 * batch else batch
