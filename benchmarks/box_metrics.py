"""Detection metrics for consolidated boxes against truth: Hungarian-matched P/R/F1, matched IoU, COCO AP.

An image's boxes are `Boxes(xyxy (n, 4), labels (n,), scores (n,))`. Matching is one-to-one per image
and class (Hungarian on IoU, pairs with IoU >= threshold); COCO AP uses the scores as confidence.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from orchestrator.consolidation import box_iou


@dataclass
class Boxes:
    xyxy: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Boxes:
        return cls(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0))

    def subset(self, keep: np.ndarray) -> Boxes:
        return Boxes(self.xyxy[keep], self.labels[keep], self.scores[keep])


def match(truth: Boxes, found: Boxes, threshold: float, by_class: bool = True) -> tuple[np.ndarray, ...]:
    """Truth indexes, found indexes and IoUs of the one-to-one matched pairs (maximum total IoU over
    pairs with IoU >= threshold; same label only when `by_class`)."""
    if not len(truth.xyxy) or not len(found.xyxy):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    iou = box_iou(truth.xyxy, found.xyxy)
    if by_class:
        iou = np.where(truth.labels[:, None] == found.labels[None, :], iou, 0.0)
    iou = np.where(iou >= threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    good = iou[rows, cols] > 0
    return rows[good], cols[good], iou[rows[good], cols[good]]


def detection_metrics(truth: list[Boxes], found: list[Boxes]) -> dict[str, float]:
    """P, R, F1 at IoU 0.5 and 0.75; IoU of pairs matched at 0.5 (mean, p25, share >= .75, >= .9);
    label accuracy of class-agnostic matches at 0.5."""
    n_truth = sum(len(t.xyxy) for t in truth)
    n_found = sum(len(f.xyxy) for f in found)
    out: dict[str, float] = {}
    matched_iou = np.zeros(0)
    for threshold, tag in ((0.5, "50"), (0.75, "75")):
        ious = [match(t, f, threshold)[2] for t, f in zip(truth, found, strict=True)]
        tp = sum(len(i) for i in ious)
        precision = tp / n_found if n_found else 1.0
        recall = tp / n_truth if n_truth else 1.0
        out[f"P{tag}"], out[f"R{tag}"] = precision, recall
        out[f"F1_{tag}"] = 2 * tp / (n_found + n_truth) if n_found + n_truth else 1.0
        if threshold == 0.5:
            matched_iou = np.concatenate(ious) if ious else np.zeros(0)
    out["mIoU"] = float(matched_iou.mean()) if len(matched_iou) else 0.0
    out["IoU_p25"] = float(np.percentile(matched_iou, 25)) if len(matched_iou) else 0.0
    out["IoU_ge75"] = float((matched_iou >= 0.75).mean()) if len(matched_iou) else 0.0
    out["IoU_ge90"] = float((matched_iou >= 0.9).mean()) if len(matched_iou) else 0.0
    same = total = 0
    for t, f in zip(truth, found, strict=True):
        rows, cols, _ = match(t, f, 0.5, by_class=False)
        same += int((t.labels[rows] == f.labels[cols]).sum())
        total += len(rows)
    out["label_acc"] = same / total if total else 1.0
    return out


def coco_ap(truth: list[Boxes], found: list[Boxes], n_labels: int) -> dict[str, float]:
    """COCO AP (IoU .50:.95), AP50 and AP75 with faster-coco-eval (matches pycocotools exactly)."""
    from faster_coco_eval import COCO, COCOeval_faster

    images, annotations, detections = [], [], []
    for i, (t, f) in enumerate(zip(truth, found, strict=True)):
        images.append({"id": i + 1, "width": 1, "height": 1})
        for box, label in zip(t.xyxy, t.labels, strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
        for box, label, score in zip(f.xyxy, f.labels, f.scores, strict=True):
            detections.append(
                {
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                    "score": float(score),
                }
            )
    if not detections:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    categories = [{"id": c + 1, "name": str(c)} for c in range(n_labels)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO({"images": images, "annotations": annotations, "categories": categories})
        dt = gt.loadRes(detections)
        evaluator = COCOeval_faster(gt, dt, "bbox", print_function=lambda *a, **k: None)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"AP": float(stats[0]), "AP50": float(stats[1]), "AP75": float(stats[2])}
