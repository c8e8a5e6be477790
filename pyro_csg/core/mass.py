"""The preconditioner ``G`` as a linear map: diagonal (a vector) or dense (a matrix).

The automatic step measures ``G`` once, at the start (:mod:`pyro_csg.core.tuning`). A
diagonal ``G`` (the default) is held as the vector of its diagonal, ``1 / h`` with ``h ~
diag(grad^2 U)``; a dense one (``full_mass=True``) as a ``(D, D)`` square root ``R`` of
``G = H^-1`` (``G = R R^T``), the inverse of the Hessian measured there, its eigenvalues
floored. The root, not ``G``, is kept: ``G`` formed in float32 from a Hessian whose
condition number is 1e6 or more is not reliably positive definite (a Cholesky factor
then fails), where ``R (R^T g)`` always is. Every use goes through the small functions
here, which keep the diagonal case's arithmetic as it was (``G * g``, ``sqrt(G) * xi``),
so that a diagonal run's draws do not depend on this module.

The preconditioned updates take ``G grad U~`` and ``R xi``; in the coordinates ``z =
R^-1 theta`` the posterior's Hessian is ``R^T H R``, close to the identity where ``G``
fits, which is where the step is measured.

Why dense: where parameters are identified only in combinations (a level and offsets
of which only the sums are pinned by the data, a ridge), the Hessian's stiff and soft
directions are not the coordinates, and a diagonal ``G`` can only follow the stiff
ones: the soft ones move at the stiff ones' step (the logistic-growth model of
``benchmarks/defaults.py``: a Hessian with condition number 2.4e6, draws 0.05 to 0.1
times as wide as NUTS's along the prior-pinned direction). Pyro's NUTS needs
``full_mass=True`` there too.
"""

from __future__ import annotations

import torch

__all__ = [
    "DENSE_FLOOR",
    "dense_preconditioner",
    "is_dense",
    "mass_times",
    "root_of",
    "root_times",
    "root_transpose_times",
    "scaled_condition",
    "variances",
    "whitened",
]

DENSE_FLOOR = 1e-6
"""A dense preconditioner's eigenvalues (of the Hessian in the diagonal's scaled
coordinates) are floored at this fraction of the largest: the soft directions get at
most a million times the stiffest one's scale, and a negative or zero curvature (a
saddle, a flat direction) the floor's."""


def is_dense(mass: torch.Tensor) -> bool:
    """Whether ``mass`` is a dense preconditioner's root ``R`` (a matrix) rather than the
    diagonal ``G``."""
    return mass.dim() == 2


def root_of(mass: torch.Tensor) -> torch.Tensor:
    """``R`` with ``G = R R^T``: ``sqrt(G)`` for a diagonal, the held root for a dense one.

    Example::

        >>> import torch
        >>> from pyro_csg.core.mass import root_of
        >>> root_of(torch.tensor([4.0, 9.0]))
        tensor([2., 3.])
    """
    return mass if is_dense(mass) else mass.sqrt()


def mass_times(mass: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """``G vector`` (``R (R^T vector)`` for a dense one).

    Example::

        >>> import torch
        >>> from pyro_csg.core.mass import mass_times
        >>> root = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # G = [[4, 2], [2, 2]]
        >>> mass_times(root, torch.tensor([1.0, 0.0]))
        tensor([4., 2.])
    """
    return mass @ (vector @ mass) if is_dense(mass) else vector * mass


def root_times(root: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """``R vector`` (the injected noise, a shift of one posterior sd)."""
    return root @ vector if root.dim() == 2 else vector * root


def root_transpose_times(root: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """``R^T vector`` (a gradient in the coordinates ``z = R^-1 theta``); a batch of
    vectors in the last dimension."""
    return vector @ root if root.dim() == 2 else root * vector


def whitened(root: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """``R^-1 vector`` (a displacement in posterior sds along ``G``'s axes).

    Example::

        >>> import torch
        >>> from pyro_csg.core.mass import whitened
        >>> whitened(torch.tensor([[2.0, 0.0], [1.0, 1.0]]), torch.tensor([2.0, 3.0]))
        tensor([1., 2.])
    """
    if root.dim() == 2:
        return torch.linalg.solve(root, vector.unsqueeze(-1)).squeeze(-1)
    return vector / root


def variances(mass: torch.Tensor) -> torch.Tensor:
    """``diag(G)``: each coordinate's posterior variance as ``G`` sees it."""
    return (mass * mass).sum(-1) if is_dense(mass) else mass


def dense_preconditioner(hessian: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The root ``R`` of ``G = H^-1`` from a measured Hessian (symmetrised), computed in
    float64 in the coordinates scaled by ``scale`` (a diagonal preconditioner's root,
    which makes the eigenvalues comparable), the eigenvalues floored at
    :data:`DENSE_FLOOR` times the largest::

        S = diag(scale),  S H S = Q diag(lambda) Q^T,  R = S Q diag(max(lambda, f))^-1/2

    Example::

        >>> import torch
        >>> from pyro_csg.core.mass import dense_preconditioner
        >>> H = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
        >>> root = dense_preconditioner(H, torch.ones(2))
        >>> torch.allclose(root @ root.T @ H, torch.eye(2), atol=1e-6)
        True
    """
    scale64 = scale.double()
    scaled = scale64.unsqueeze(1) * hessian.double() * scale64.unsqueeze(0)
    values, vectors = torch.linalg.eigh((scaled + scaled.T) / 2)
    largest = float(values.max()) if values.numel() else 1.0
    floor = max(DENSE_FLOOR * largest, torch.finfo(torch.float64).tiny ** 0.5)
    values = torch.where(torch.isfinite(values), values, torch.full_like(values, floor))
    root = scale64.unsqueeze(1) * vectors * values.clamp_min(floor).rsqrt().unsqueeze(0)
    return root.to(hessian.dtype)


def scaled_condition(hessian: torch.Tensor, scale: torch.Tensor) -> float:
    """The condition number of ``S H S`` (``S = diag(scale)``, the diagonal
    preconditioner's root): how stiff the stiffest direction is against the softest
    once the diagonal has done what it can. ``inf`` where the softest curvature is below
    the measurement's resolution (within :data:`DENSE_FLOOR` of the largest, of either
    sign: float32 differences at the stiff directions' scale); ``nan`` at a saddle (a
    curvature more negative than that: no mode here, a funnel's neck).

    Example::

        >>> import torch
        >>> from pyro_csg.core.mass import scaled_condition
        >>> H = torch.tensor([[1.0, 0.99], [0.99, 1.0]])  # a ridge: 1.99 against 0.01
        >>> round(scaled_condition(H, torch.ones(2)))
        199
        >>> scaled_condition(torch.tensor([[1.0, 0.0], [0.0, -0.5]]), torch.ones(2))
        nan
    """
    scaled = scale.unsqueeze(1) * hessian * scale.unsqueeze(0)
    values = torch.linalg.eigvalsh(((scaled + scaled.T) / 2).double())
    if not bool(torch.isfinite(values).all()) or float(values.max()) <= 0:
        return float("nan")
    largest, smallest = float(values.max()), float(values.min())
    if smallest < -DENSE_FLOOR * largest:
        return float("nan")
    return largest / smallest if smallest > DENSE_FLOOR * largest else float("inf")
