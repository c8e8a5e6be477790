"""The flat parameter vector and the potentials the sampler core works on.

The sampler moves one flat vector ``theta``: the latent sites' unconstrained values
concatenated in sorted site order (:class:`FlatLayout`), so that every update is a few
whole-vector operations. A *potential* is anything with
``value_and_grad(theta, indices) -> (U~, grad U~)`` and a tuple ``plates`` of the
subsampled plates whose minibatch ``indices`` it reads (:class:`Potential`); a plain
torch function ``theta, indices -> (U~, grad U~)`` becomes one with
:func:`as_potential`, a function of a dict of site tensors with
:class:`FunctionPotential`. The Pyro model's potential (:mod:`pyro_csg.adapter.potential`)
is one more such object.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch.distributions.transforms import (
    ComposeTransform,
    IndependentTransform,
    Transform,
    _InverseTransform,
)

from .subsample import SubsamplePlate

__all__ = [
    "LatentSite",
    "FlatLayout",
    "Potential",
    "BasePotential",
    "FunctionPotential",
    "GradientPotential",
    "as_potential",
]


def _is_identity(transform: Transform) -> bool:
    if isinstance(transform, _InverseTransform):
        return _is_identity(transform.inv)
    if isinstance(transform, IndependentTransform):
        return _is_identity(transform.base_transform)
    if isinstance(transform, ComposeTransform):
        return all(_is_identity(part) for part in transform.parts)
    return False


@dataclass(frozen=True)
class LatentSite:
    """A latent sample site: its name, shapes and map to unconstrained space.

    ``shape`` is the constrained value's shape, ``unconstrained_shape`` that of
    ``transform(value)`` (the default: the same). They differ for transforms that change
    the dimension: a ``K``-simplex has ``K - 1`` unconstrained coordinates
    (``StickBreakingTransform``), a ``d x d`` correlation Cholesky factor ``d (d - 1) / 2``
    (``CorrCholeskyTransform``). The flat parameter vector holds unconstrained values.

    Example::

        >>> import torch
        >>> from torch.distributions import biject_to, constraints
        >>> from pyro_csg.core.parameters import LatentSite
        >>> site = LatentSite("scale", torch.Size([2]), biject_to(constraints.positive).inv,
        ...                   torch.float32)
        >>> site.numel, site.is_identity
        (2, False)
        >>> weights = LatentSite("p", torch.Size([3]), biject_to(constraints.simplex).inv,
        ...                      torch.float32, torch.Size([2]))
        >>> weights.numel
        2
    """

    name: str
    shape: torch.Size
    transform: Transform  # constrained -> unconstrained
    dtype: torch.dtype
    unconstrained_shape: torch.Size | None = None

    def __post_init__(self) -> None:
        if self.unconstrained_shape is None:
            object.__setattr__(self, "unconstrained_shape", self.shape)

    @property
    def numel(self) -> int:
        """The number of unconstrained coordinates (its length in the flat vector)."""
        return math.prod(self.unconstrained_shape)

    @property
    def is_identity(self) -> bool:
        return _is_identity(self.transform)


class FlatLayout:
    """Packs a dict of site tensors into one flat vector and back (as views).

    Example::

        >>> import torch
        >>> from torch.distributions.transforms import ComposeTransform
        >>> from pyro_csg.core.parameters import FlatLayout, LatentSite
        >>> layout = FlatLayout([LatentSite("a", torch.Size([2]), ComposeTransform([]),
        ...                                 torch.float32)])
        >>> layout.flatten({"a": torch.tensor([1.0, 2.0])}), layout.size
        (tensor([1., 2.]), 2)
    """

    def __init__(self, sites: Sequence[LatentSite]) -> None:
        self.sites = tuple(sites)
        self.slices: dict[str, slice] = {}
        start = 0
        for site in self.sites:
            self.slices[site.name] = slice(start, start + site.numel)
            start += site.numel
        self.size = start
        self.sizes = [site.numel for site in self.sites]

    def labels(self) -> list[str]:
        """A name per flat coordinate: the site's, with the (unconstrained) index when
        it has several, as ``az.summary`` labels elements (``"w[0, 1]"``)."""
        names = []
        for site in self.sites:
            shape = tuple(site.unconstrained_shape)
            if site.numel == 1:
                names.append(site.name)
                continue
            for index in torch.cartesian_prod(*(torch.arange(n) for n in shape)).reshape(
                site.numel, len(shape)
            ):
                names.append(f"{site.name}[{', '.join(str(int(i)) for i in index)}]")
        return names

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        # One split (whose backward is one concatenation), then a view per site.
        parts = flat.split_with_sizes(self.sizes)
        return {
            site.name: part.view(site.unconstrained_shape).to(site.dtype)
            for site, part in zip(self.sites, parts, strict=True)
        }

    def flatten(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        missing = [site.name for site in self.sites if site.name not in params]
        if missing:
            raise ValueError(
                f"initial_params is missing the latent site(s) {missing}; "
                f"expected {[site.name for site in self.sites]}"
            )
        parts = []
        for site in self.sites:
            value = torch.as_tensor(params[site.name])
            if value.shape != site.unconstrained_shape:
                raise ValueError(
                    f"initial_params['{site.name}'] has shape {tuple(value.shape)}, "
                    f"expected {tuple(site.unconstrained_shape)} (unconstrained, one chain)"
                )
            parts.append(value.detach().reshape(-1))
        if not parts:  # a potential without parameters (Pyro's HMC runs one too)
            return torch.zeros(0)
        return torch.cat(parts)


@runtime_checkable
class Potential(Protocol):
    """What the sampler core needs of a potential.

    ``value_and_grad(theta, indices) -> (U~, grad U~)``, both detached, with ``indices``
    one minibatch per entry of ``plates`` (:class:`~pyro_csg.core.subsample.SubsamplePlate`;
    empty for a potential that reads no data plate). A potential whose
    ``full_value_and_grad(theta)`` gives the full-data ``(U, grad U)`` can be used with
    control variates (:mod:`pyro_csg.core.estimators`); ``deterministic = True`` says
    that ``value_and_grad`` has no noise of its own when ``plates`` is empty.
    """

    plates: tuple[SubsamplePlate, ...]

    def value_and_grad(
        self, theta: torch.Tensor, indices: Sequence[torch.Tensor] = ()
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class BasePotential:
    """A potential over named sites: ``value_and_grad`` by autograd through ``__call__``
    (a subclass's ``U~(theta; indices)``), and the sites' flat layout."""

    plates: tuple[SubsamplePlate, ...] = ()
    compiled: bool = False
    deterministic: bool = False  # a potential_fn may draw noise of its own

    def __init__(self, sites: Sequence[LatentSite]) -> None:
        self.sites = tuple(sites)
        self.layout = FlatLayout(self.sites)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.layout.unflatten(flat)

    def flatten(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.layout.flatten(params)

    def __call__(self, flat: torch.Tensor, indices: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        raise NotImplementedError

    def eager_value_and_grad(
        self, flat: torch.Tensor, indices: Sequence[torch.Tensor] = (), keep_from: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U~, grad U~)`` through autograd; ``keep_from > 0`` drops the first
        ``keep_from`` data of the (single) subsampled plate's window from the likelihood."""
        flat = flat.detach().requires_grad_()
        energy = self(flat, indices, keep_from) if keep_from else self(flat, indices)
        if not energy.requires_grad:  # no parameters, or none that the potential reads
            return energy.detach(), torch.zeros_like(flat)
        (grad,) = torch.autograd.grad(energy, flat, allow_unused=True)
        return energy.detach(), torch.zeros_like(flat) if grad is None else grad

    def value_and_grad(
        self, flat: torch.Tensor, indices: Sequence[torch.Tensor] = ()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U~(theta; indices), grad U~(theta; indices))``, both detached."""
        return self.eager_value_and_grad(flat, indices)


class FunctionPotential(BasePotential):
    """A user's ``potential_fn(params: dict) -> scalar``, possibly itself stochastic.

    Example::

        >>> import torch
        >>> from pyro_csg.core.parameters import FunctionPotential
        >>> potential = FunctionPotential(lambda p: 0.5 * (p["z"] ** 2).sum(),
        ...                               {"z": torch.zeros(2)})
        >>> energy, grad = potential.value_and_grad(torch.tensor([1.0, 2.0]))
        >>> float(energy), grad.tolist()
        (2.5, [1.0, 2.0])
    """

    def __init__(
        self, potential_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor], initial_params
    ) -> None:
        sites = []
        for name in sorted(initial_params):
            value = torch.as_tensor(initial_params[name])
            if not value.is_floating_point():
                raise ValueError(
                    f"initial_params['{name}'] must be a floating-point tensor, got {value.dtype}"
                )
            sites.append(LatentSite(name, value.shape, ComposeTransform([]), value.dtype))
        super().__init__(sites)
        self.potential_fn = potential_fn

    def __call__(self, flat: torch.Tensor, indices: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        energy = self.potential_fn(self.unflatten(flat))
        if isinstance(energy, (int, float)) and not isinstance(energy, bool):
            # A constant (Pyro's potential of a model without latent sites is 0).
            energy = torch.tensor(float(energy), dtype=flat.dtype, device=flat.device)
        if not isinstance(energy, torch.Tensor) or energy.numel() != 1:
            raise ValueError(
                "potential_fn must return a scalar tensor (the potential energy), got "
                f"{type(energy).__name__}"
                + (f" of shape {tuple(energy.shape)}" if isinstance(energy, torch.Tensor) else "")
            )
        return energy.reshape(())


class GradientPotential:
    """A plain torch function ``(theta, indices) -> (U~, grad U~)`` as a potential.

    Example::

        >>> import torch
        >>> from pyro_csg.core.parameters import GradientPotential
        >>> potential = GradientPotential(lambda theta, indices: ((theta**2).sum() / 2, theta))
        >>> potential.value_and_grad(torch.ones(2), [])[1]
        tensor([1., 1.])
    """

    deterministic = False  # the function may draw noise of its own

    def __init__(
        self,
        value_and_grad: Callable[
            [torch.Tensor, Sequence[torch.Tensor]], tuple[torch.Tensor, torch.Tensor]
        ],
        plates: Sequence[SubsamplePlate] = (),
    ) -> None:
        self.value_and_grad = value_and_grad
        self.plates = tuple(plates)


def as_potential(potential) -> Potential:
    """``potential`` itself if it has ``value_and_grad``, else a callable
    ``(theta, indices) -> (U~, grad U~)`` wrapped by :class:`GradientPotential`.

    Example::

        >>> from pyro_csg.core.parameters import as_potential
        >>> as_potential(lambda theta, indices: (theta.sum(), theta)).plates
        ()
    """
    if hasattr(potential, "value_and_grad"):
        return potential
    if callable(potential):
        return GradientPotential(potential)
    raise TypeError(
        "potential must have value_and_grad(theta, indices) or be a callable "
        f"(theta, indices) -> (U~, grad U~), got {type(potential).__name__}"
    )
