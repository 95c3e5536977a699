"""Classification metrics from integer labels: accuracy, confusion matrix, per-class report (numpy)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of labels predicted exactly."""
    y_true, y_pred = _labels(y_true, y_pred)
    return float(np.mean(y_true == y_pred)) if y_true.size else 0.0


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (n_classes, n_classes) int64: row = true class, column = predicted class."""
    y_true, y_pred = _labels(y_true, y_pred)
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    for what, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"{what} holds labels outside 0..{n_classes - 1}: min {y.min()}, max {y.max()}")
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


@dataclass(frozen=True)
class ClassReport:
    """Per-class precision, recall, F1 and support (true count), each of length n_classes."""

    class_names: list[str]
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    accuracy: float

    def macro(self) -> tuple[float, float, float]:
        """Unweighted mean over classes of (precision, recall, F1)."""
        return float(self.precision.mean()), float(self.recall.mean()), float(self.f1.mean())

    def weighted(self) -> tuple[float, float, float]:
        """Support-weighted mean over classes of (precision, recall, F1)."""
        w = self.support / max(int(self.support.sum()), 1)
        return float(w @ self.precision), float(w @ self.recall), float(w @ self.f1)

    def to_dict(self) -> dict:
        """JSON-ready: {"classes": [{"name", "precision", "recall", "f1", "support"}], "accuracy", ...}."""
        rows = [
            {"name": n, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for n, p, r, f, s in zip(self.class_names, self.precision, self.recall, self.f1, self.support)
        ]
        return {
            "classes": rows,
            "accuracy": self.accuracy,
            "macro_avg": dict(zip(("precision", "recall", "f1"), self.macro())),
            "weighted_avg": dict(zip(("precision", "recall", "f1"), self.weighted())),
        }

    def format(self, digits: int = 3) -> str:
        """Plain-text table, one row per class, then accuracy and the two averages."""
        width = max([len(n) for n in self.class_names] + [len("weighted avg")])
        head = f"{'':>{width}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>8}"
        lines = [head, ""]
        row = "{:>{w}}  {:>9.{d}f}  {:>9.{d}f}  {:>9.{d}f}  {:>8d}"
        for n, p, r, f, s in zip(self.class_names, self.precision, self.recall, self.f1, self.support):
            lines.append(row.format(n, p, r, f, int(s), w=width, d=digits))
        total = int(self.support.sum())
        lines += ["", f"{'accuracy':>{width}}  {'':>9}  {'':>9}  {self.accuracy:>9.{digits}f}  {total:>8d}"]
        lines.append(row.format("macro avg", *self.macro(), total, w=width, d=digits))
        lines.append(row.format("weighted avg", *self.weighted(), total, w=width, d=digits))
        return "\n".join(lines)


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str] | int
) -> ClassReport:
    """Precision = TP / predicted, recall = TP / true, F1 = their harmonic mean, per class.

    A ratio with a zero denominator (a class never predicted, or absent) is reported as 0,
    as scikit-learn does by default. `class_names` may be a count, naming classes "0", "1", ...
    """
    names = [str(i) for i in range(class_names)] if isinstance(class_names, int) else list(class_names)
    cm = confusion_matrix(y_true, y_pred, len(names))
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = int(cm.sum())
    acc = float(tp.sum() / total) if total else 0.0
    return ClassReport(names, precision, recall, f1, support, acc)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(den), where=den > 0)


def _labels(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be 1-D and the same length, got {y_true.shape} and {y_pred.shape}"
        )
    for what, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{what} must hold integer class indices, got dtype {y.dtype}")
    return y_true.astype(np.int64), y_pred.astype(np.int64)


def confusion_text(cm: np.ndarray, class_names: Sequence[str]) -> str:
    """The confusion matrix as a plain-text table: rows are the true classes, columns the predicted ones."""
    cm = np.asarray(cm)
    names = [str(n) for n in class_names]
    if cm.shape != (len(names), len(names)):
        raise ValueError(f"confusion matrix must be ({len(names)}, {len(names)}) for {len(names)} class names, got {cm.shape}")
    corner = "true \\ predicted"
    first = max([len(n) for n in names] + [len(corner)])
    width = max([len(n) for n in names] + [len(str(int(cm.max()))) if cm.size else 1])
    lines = [f"{corner:<{first}}  " + "  ".join(f"{n:>{width}}" for n in names)]
    for name, row in zip(names, cm):
        lines.append(f"{name:<{first}}  " + "  ".join(f"{int(v):>{width}d}" for v in row))
    return "\n".join(lines)
