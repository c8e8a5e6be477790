"""The data sets that scikit-learn ships (no download), and a fixed train/test split."""

from __future__ import annotations

import torch


def load_bundled(loader: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``features`` (float32) and ``labels`` of ``sklearn.datasets.<loader>``."""
    try:
        import sklearn.datasets
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "the examples need scikit-learn (it ships their data): pip install 'pyro-csg[demo]'"
        ) from error
    features, labels = getattr(sklearn.datasets, loader)(return_X_y=True)
    return torch.tensor(features, dtype=torch.float32), torch.as_tensor(labels)


def fixed_split(n: int, test_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, test)`` indices: a permutation drawn from its own generator seeded with
    ``seed``, so the split does not depend on (or disturb) the global random state."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[test_size:], order[:test_size]
