"""Intersection over union of boxes given as x1, y1, x2, y2: the one IoU every part of labeljob uses."""

from __future__ import annotations

import numpy as np

__all__ = ["area", "box_iou", "edge_iou", "iou"]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of the boxes `a[..., 4]` and `b[..., 4]`, broadcast against each other.

    A pair whose union is 0 or not a number (an empty or padded box) has IoU 0, not NaN: a positive
    size can still give an area that underflows to 0.
    """
    a = np.moveaxis(np.asarray(a, dtype=np.float64), -1, 0)
    b = np.moveaxis(np.asarray(b, dtype=np.float64), -1, 0)
    return edge_iou(a, b, area(a), area(b))


def area(edges: np.ndarray) -> np.ndarray:
    """Area of boxes given edges first: `edges[0..3]` are the x1, y1, x2, y2 arrays."""
    return (edges[2] - edges[0]) * (edges[3] - edges[1])


def edge_iou(a: np.ndarray, b: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    """`iou` of boxes given edges first (`a[0..3]` are x1, y1, x2, y2 float arrays) with their `area`s:
    the same values to the bit. Many pairs of few boxes cost less this way: the edges of each pair are
    read from contiguous rows, and each box's area is computed once, not once per pair."""
    iw = np.asarray(np.minimum(a[2], b[2]), dtype=np.float64)  # an array even for one pair, to work in place
    iw -= np.maximum(a[0], b[0])
    np.clip(iw, 0.0, None, out=iw)
    ih = np.asarray(np.minimum(a[3], b[3]), dtype=np.float64)
    ih -= np.maximum(a[1], b[1])
    np.clip(ih, 0.0, None, out=ih)
    iw *= ih
    union = area_a + area_b
    union -= iw
    return np.divide(iw, union, out=np.zeros(np.shape(iw)), where=union > 0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes `a` (n, 4) and `b` (m, 4): entry [i, j] is the IoU of a[i] and b[j]."""
    return iou(a[:, None, :], b[None, :, :])
