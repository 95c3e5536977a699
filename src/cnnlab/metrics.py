"""Keras's `keras.metrics`: stateful metric objects (`update_state`, `result`, `reset_state`) and their strings.

    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy", keras.metrics.AUC(), "precision"])

Values follow Keras 3's definitions (a prediction counts as positive when it is above the threshold; AUC's
thresholds and Riemann sums are Keras's), computed in float64 numpy over the batches seen since the last reset.
History and `evaluate(return_dict=True)` name each metric as Keras does: a string as given ("acc" stays
"acc"), an object by its `name` (auc, auc_1 for a second AUC in one session).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from cnnlab.backend import auto_name


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _squeeze_label(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Integer labels (N, ...) or (N, ..., 1) against predictions (N, ..., C): the trailing 1 goes."""
    return y_true[..., 0] if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1 else y_true


class Metric:
    """Base of the metric objects: `m.update_state(y_true, y_pred)`, `m.result()`, `m.reset_state()`, `m(y_true, y_pred)`."""

    default_name = "metric"

    def __init__(self, name: str | None = None, dtype: Any = None):
        self.name = name or auto_name(self.default_name)
        self.reset_state()

    def reset_state(self) -> None:
        raise NotImplementedError

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        raise NotImplementedError

    def result(self) -> np.float32:
        raise NotImplementedError

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> np.float32:
        self.update_state(y_true, y_pred, sample_weight)
        return self.result()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"


class MeanMetric(Metric):
    """A mean of per-sample values (each sample's own values averaged first), weighted by `sample_weight`."""

    def reset_state(self) -> None:
        self.total, self.count = 0.0, 0.0

    def values(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        values = self.values(_np(y_true), _np(y_pred))
        if not len(values):
            return
        per_sample = values.reshape(len(values), -1).mean(1) if values.ndim > 1 else values
        weight = np.ones(len(per_sample)) if sample_weight is None else _np(sample_weight).reshape(len(per_sample))
        self.total += float((per_sample * weight).sum())
        self.count += float(weight.sum())

    def result(self) -> np.float32:
        return np.float32(self.total / self.count if self.count else 0.0)


class Accuracy(MeanMetric):
    """How often predictions equal the labels exactly (`keras.metrics.Accuracy`)."""
    default_name = "accuracy"

    def values(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return (y_true.reshape(y_pred.shape) == y_pred).astype(np.float64)


class BinaryAccuracy(MeanMetric):
    default_name = "binary_accuracy"

    def __init__(self, name: str | None = None, dtype: Any = None, threshold: float = 0.5):
        self.threshold = threshold
        super().__init__(name, dtype)

    def values(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        y_true = y_true.reshape(y_pred.shape) if y_true.size == y_pred.size else y_true
        return ((y_pred > self.threshold) == y_true).astype(np.float64).mean(-1)


class CategoricalAccuracy(MeanMetric):
    default_name = "categorical_accuracy"

    def values(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return (y_true.argmax(-1) == y_pred.argmax(-1)).astype(np.float64)


class SparseCategoricalAccuracy(MeanMetric):
    """Integer labels (N,), (N, 1), or per pixel (N, H, W) / (N, H, W, 1), against (N, ..., classes)."""
    default_name = "sparse_categorical_accuracy"

    def values(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return (_squeeze_label(y_true, y_pred) == y_pred.argmax(-1)).astype(np.float64)


def _in_top_k(labels: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """Whether each label's score is among the k highest of its row (ties count for the label, as Keras's torch)."""
    scores = y_pred.reshape(-1, y_pred.shape[-1])
    own = np.take_along_axis(scores, labels.reshape(-1, 1).astype(np.int64), 1)
    return ((scores > own).sum(1) < k).astype(np.float64).reshape(labels.shape)


class TopKCategoricalAccuracy(MeanMetric):
    default_name = "top_k_categorical_accuracy"

    def __init__(self, k: int = 5, name: str | None = None, dtype: Any = None):
        self.k = k
        super().__init__(name, dtype)

    def values(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return _in_top_k(y_true.argmax(-1), y_pred, self.k)


class SparseTopKCategoricalAccuracy(TopKCategoricalAccuracy):
    default_name = "sparse_top_k_categorical_accuracy"

    def values(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return _in_top_k(_squeeze_label(y_true, y_pred), y_pred, self.k)


class _Confusion(Metric):
    """True/false positives and negatives at one or more thresholds: a prediction above a threshold is positive."""

    def __init__(self, thresholds: Any = None, name: str | None = None, dtype: Any = None):
        self.thresholds = np.atleast_1d(np.asarray(0.5 if thresholds is None else thresholds, dtype=np.float64))
        super().__init__(name, dtype)

    def reset_state(self) -> None:
        self.tp, self.fp, self.tn, self.fn = (np.zeros(len(self.thresholds)) for _ in range(4))

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        pred, true = _np(y_pred), _np(y_true).astype(bool)
        true = true.reshape(pred.shape) if true.size == pred.size else np.broadcast_to(true, pred.shape)
        weight = (np.ones(pred.shape) if sample_weight is None
                  else np.broadcast_to(_np(sample_weight).reshape(-1, *[1] * (pred.ndim - 1)), pred.shape))
        pred, true, weight = pred.ravel(), true.ravel(), weight.ravel()
        above = pred[None, :] > self.thresholds[:, None]  # (thresholds, values)
        self.tp += (above & true) @ weight
        self.fp += (above & ~true) @ weight
        self.fn += (~above & true) @ weight
        self.tn += (~above & ~true) @ weight


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


class Precision(_Confusion):
    """tp / (tp + fp) at `thresholds` (0.5): a float, or one value per threshold for a list."""
    default_name = "precision"

    def result(self) -> Any:
        out = _ratio(self.tp, self.tp + self.fp).astype(np.float32)
        return out[0] if out.size == 1 else out


class Recall(_Confusion):
    default_name = "recall"

    def result(self) -> Any:
        out = _ratio(self.tp, self.tp + self.fn).astype(np.float32)
        return out[0] if out.size == 1 else out


class AUC(_Confusion):
    """Area under the ROC (or PR) curve from `num_thresholds` evenly spaced thresholds, as Keras approximates it."""
    default_name = "auc"

    def __init__(self, num_thresholds: int = 200, curve: str = "ROC", summation_method: str = "interpolation",
                 name: str | None = None, dtype: Any = None, thresholds: Any = None):
        if curve.upper() not in ("ROC", "PR"):
            raise ValueError(f"AUC curve must be 'ROC' or 'PR', got {curve!r}")
        if summation_method not in ("interpolation", "minoring", "majoring"):
            raise ValueError(f"AUC summation_method must be 'interpolation', 'minoring' or 'majoring', "
                             f"got {summation_method!r}")
        if thresholds is None:
            if not isinstance(num_thresholds, int) or num_thresholds < 2:
                raise ValueError(f"AUC num_thresholds must be an integer > 1, got {num_thresholds!r}")
            inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
        else:
            inner = sorted(float(t) for t in thresholds)
        self.curve, self.summation_method = curve.upper(), summation_method
        self.num_thresholds = len(inner) + 2
        super().__init__([-1e-7, *inner, 1.0 + 1e-7], name, dtype)

    def result(self) -> np.float32:
        tp, fp, tn, fn = self.tp, self.fp, self.tn, self.fn
        if self.curve == "PR" and self.summation_method == "interpolation":
            return np.float32(self._interpolated_pr())
        recall = _ratio(tp, tp + fn)
        x, y = (_ratio(fp, fp + tn), recall) if self.curve == "ROC" else (recall, _ratio(tp, tp + fp))
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2
        elif self.summation_method == "minoring":
            heights = np.minimum(y[:-1], y[1:])
        else:
            heights = np.maximum(y[:-1], y[1:])
        return np.float32(((x[:-1] - x[1:]) * heights).sum())

    def _interpolated_pr(self) -> float:
        """Davis & Goadrich's interpolation between thresholds: precision varies as TP over predicted positives."""
        tp, p = self.tp, self.tp + self.fp
        dtp, dp = tp[:-1] - tp[1:], p[:-1] - p[1:]
        slope = _ratio(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - slope * p[1:]
        both = (p[:-1] > 0) & (p[1:] > 0)
        ratio = np.where(both, _ratio(p[:-1], np.maximum(p[1:], 0)), 1.0)
        return float(_ratio(slope * (dtp + intercept * np.log(ratio)), np.maximum(tp[1:] + self.fn[1:], 0)).sum())


# Strings compile takes; "accuracy" and "acc" pick the accuracy that fits the loss (as Keras does).
BY_NAME: dict[str, type[Metric]] = {
    "binary_accuracy": BinaryAccuracy, "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy, "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy, "precision": Precision, "recall": Recall,
    "auc": AUC,
}
ACCURACY_FOR_LOSS = {"binary_crossentropy": BinaryAccuracy, "categorical_crossentropy": CategoricalAccuracy,
                     "sparse_categorical_crossentropy": SparseCategoricalAccuracy}


def get(identifier: str | Metric, loss: str = "sparse_categorical_crossentropy") -> Metric:
    """The metric object for a compile entry: an object as it is, a string by Keras's name (named as given)."""
    if isinstance(identifier, Metric):
        return identifier
    if identifier in ("accuracy", "acc"):
        return ACCURACY_FOR_LOSS.get(loss, SparseCategoricalAccuracy)(name=identifier)
    if not isinstance(identifier, str) or identifier not in BY_NAME:
        raise ValueError(f"unknown metric {identifier!r}; cnnlab has 'accuracy', 'acc', {', '.join(map(repr, BY_NAME))} "
                         "and the cnnlab.metrics objects")
    return BY_NAME[identifier](name=identifier)


__all__ = ["AUC", "Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "Metric", "Precision", "Recall",
           "SparseCategoricalAccuracy", "SparseTopKCategoricalAccuracy", "TopKCategoricalAccuracy", "get"]
