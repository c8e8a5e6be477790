"""Scores of predictive distributions: accuracy, negative log-likelihood, calibration and
the disagreement between ensemble members.

``probs`` are class probabilities of shape ``(n, C)`` (rows summing to 1) and ``labels``
integer classes of shape ``(n,)``.
"""

from __future__ import annotations

import torch

__all__ = ["accuracy", "negative_log_likelihood", "expected_calibration_error", "disagreement"]

# Probabilities are clamped here before the log so that one confidently wrong member
# cannot make the NLL infinite (as in most published tables).
_EPS = 1e-12


def _check(probs: torch.Tensor, labels: torch.Tensor) -> None:
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"probs must be (n, C) and labels (n,), got {tuple(probs.shape)} and "
            f"{tuple(labels.shape)}"
        )


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of points whose most probable class is the label.

    Example::

        >>> import torch
        >>> from pyro_csg.examples.metrics import accuracy
        >>> accuracy(torch.tensor([[0.9, 0.1], [0.4, 0.6]]), torch.tensor([0, 0]))
        0.5
    """
    _check(probs, labels)
    return float((probs.argmax(-1) == labels).float().mean())


def negative_log_likelihood(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of ``-log probs[i, labels[i]]`` (nats per point).

    Example::

        >>> import torch
        >>> from pyro_csg.examples.metrics import negative_log_likelihood
        >>> round(negative_log_likelihood(torch.tensor([[0.5, 0.5]]), torch.tensor([1])), 4)
        0.6931
    """
    _check(probs, labels)
    picked = probs.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    return float(-picked.clamp_min(_EPS).log().mean())


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, num_bins: int = 15
) -> float:
    """Expected calibration error (Guo et al., 2017) over ``num_bins`` equal-width bins of
    confidence ``max_c probs[i, c]``: ``sum_b (n_b / n) * |accuracy_b - confidence_b|``.

    Example::

        >>> import torch
        >>> from pyro_csg.examples.metrics import expected_calibration_error
        >>> probs = torch.tensor([[0.8, 0.2]] * 10)
        >>> labels = torch.tensor([0] * 8 + [1] * 2)
        >>> round(expected_calibration_error(probs, labels), 6)
        0.0
    """
    _check(probs, labels)
    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).float()
    # Bin b holds confidences in (b / num_bins, (b + 1) / num_bins].
    bins = (confidence * num_bins).ceil().long().clamp(1, num_bins) - 1
    error = torch.zeros(())
    for b in bins.unique():
        members = bins == b
        error += (
            members.float().mean() * (correct[members].mean() - confidence[members].mean()).abs()
        )
    return float(error)


def disagreement(predictions: torch.Tensor) -> torch.Tensor:
    """Pairwise disagreement of ensemble members: entry ``(i, j)`` is the share of points
    on which member ``i``'s predicted class differs from member ``j``'s.

    :param predictions: predicted classes, shape ``(members, n)``.

    Example::

        >>> import torch
        >>> from pyro_csg.examples.metrics import disagreement
        >>> disagreement(torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0]]))
        tensor([[0.0000, 0.2500],
                [0.2500, 0.0000]])
    """
    if predictions.ndim != 2:
        raise ValueError(f"predictions must be (members, n), got {tuple(predictions.shape)}")
    return (predictions.unsqueeze(1) != predictions.unsqueeze(0)).float().mean(-1)
