"""Intersection over union of boxes given as x1, y1, x2, y2: the one IoU every part of labeljob uses."""

from __future__ import annotations

import numpy as np

__all__ = ["box_iou", "iou"]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of the boxes `a[..., 4]` and `b[..., 4]`, broadcast against each other.

    A pair whose union is 0 or not a number (an empty or padded box) has IoU 0, not NaN: a positive
    size can still give an area that underflows to 0.
    """
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros(np.shape(inter)), where=union > 0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes `a` (n, 4) and `b` (m, 4): entry [i, j] is the IoU of a[i] and b[j]."""
    return iou(a[:, None, :], b[None, :, :])
