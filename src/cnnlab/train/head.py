"""The photo classifier's head: multinomial logistic regression on pooled features, its L2 chosen by k-fold CV.

What a statistician fits on a few thousand x 1280 features: every training photo is used, the strength of the
L2 penalty is chosen by stratified k-fold cross-validation over a log grid (the held-out log loss decides), and
the model is refitted on all of them with the chosen strength. The objective is scikit-learn's
`LogisticRegression`'s (multinomial, unpenalised intercept): sum_i w_i * CE_i + ||W||^2 / (2 C), solved by
full-batch L-BFGS in torch on standardised features (fitted C's are then comparable across backbones and the
solver converges in tens of steps); the standardisation is folded back into the weights, so the Dense layer
works on the raw features. Rows may come in groups (a photo and its mirror image): a group stays in one fold,
and only the first row of each group (the photo as it is) is scored.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

STD_FLOOR = 0.1  # of the median feature spread, see `standardizer`
# C = 1e-3 .. 1e2 in half decades: 1e-3 leaves the head near the class priors on 1280 features, 1e2 is almost
# unpenalised; cross-validation on three real collections picked 0.01-3.2 (issue 22)
C_GRID = tuple(float(c) for c in np.logspace(-3, 2, 11))


@dataclass(frozen=True)
class HeadOptions:
    """How the head is fitted; the defaults need no tuning (the CV does it)."""
    folds: int = 5  # stratified; fewer when the smallest class has fewer photos (at least 2)
    c_grid: tuple[float, ...] = C_GRID
    max_iter: int = 150  # L-BFGS iterations a fit; warm starts along the grid need far fewer
    tol: float = 1e-4  # on the largest gradient entry of the mean loss (scikit-learn's default tolerance)
    patience: int = 2  # grid points past the lowest CV loss before the walk stops: weak L2 is the costly end

    def __post_init__(self) -> None:
        if not (isinstance(self.patience, int) and self.patience >= 1):
            raise ValueError(f"head patience must be a whole number >= 1, got {self.patience!r}")
        if not (isinstance(self.folds, int) and self.folds >= 2):
            raise ValueError(f"head folds must be a whole number >= 2, got {self.folds!r}")
        if not self.c_grid or any(not (isinstance(c, (int, float)) and c > 0) for c in self.c_grid):
            raise ValueError(f"head c_grid must be positive numbers, got {self.c_grid!r}")


@dataclass
class CVResult:
    """Cross-validated log loss and accuracy per C (pooled over the held-out folds), and the C they choose."""
    c_grid: list[float]
    log_loss: list[float]
    accuracy: list[float]
    folds: int
    best: int = field(init=False)

    def __post_init__(self) -> None:
        self.best = int(np.argmin(self.log_loss))

    @property
    def c(self) -> float:
        return self.c_grid[self.best]

    def to_dict(self) -> dict[str, object]:
        return {"folds": self.folds, "c_grid": self.c_grid, "cv_log_loss": self.log_loss, "cv_accuracy": self.accuracy,
                "c": self.c, "best_cv_log_loss": self.log_loss[self.best], "best_cv_accuracy": self.accuracy[self.best]}


def standardizer(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) per feature, the std floored at STD_FLOOR x the median spread.

    A feature nearly constant on the training photos (a ReLU6 channel that fires on one of them) would otherwise
    get a raw weight of w / std ~ 1e5 and swing the logits on any new photo where it fires a little.
    """
    mean, std = features.mean(0), features.std(0)
    return mean, std.clamp_min(max(STD_FLOOR * float(std.median()), 1e-6))


def fit_logistic(z: torch.Tensor, y: torch.Tensor, n_classes: int, c: float, sample_weight: torch.Tensor | None = None,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None, max_iter: int = 300, tol: float = 1e-5
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (K, D), b (K,)) minimising sum_i w_i CE(z_i W^T + b, y_i) + ||W||^2 / (2c), by full-batch L-BFGS.

    The objective is divided by the number of rows so the tolerances mean the same at any size.
    """
    n, d = z.shape
    w = torch.zeros((n_classes, d), dtype=z.dtype) if init is None else init[0].clone()
    b = torch.zeros(n_classes, dtype=z.dtype) if init is None else init[1].clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    per_row = None if sample_weight is None else sample_weight.to(z.dtype)
    penalty = 1.0 / (2.0 * c * n)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=tol,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        ce = F.cross_entropy(z @ w.T + b, y, reduction="none")
        loss = (ce.mean() if per_row is None else (ce * per_row).sum() / n) + penalty * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def stratified_folds(y: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold number (0..folds-1) of each row: every class spread evenly over the folds, in a seeded order."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    offset = 0
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        fold[rows] = (np.arange(len(rows)) + offset) % folds  # offset: small classes do not all start in fold 0
        offset += len(rows)
    return fold


def fold_count(y: np.ndarray, wanted: int) -> int:
    """`wanted`, or fewer when the smallest class could not put a photo in every fold (never below 2)."""
    smallest = int(np.bincount(y).min()) if len(y) else 0
    if smallest < 2:
        raise ValueError(f"cross-validation needs at least 2 photos of every class, the smallest class has {smallest}")
    return min(wanted, smallest)


def cross_validate(z: torch.Tensor, y: np.ndarray, n_classes: int, options: HeadOptions = HeadOptions(),
                   seed: int = 0, groups: np.ndarray | None = None, scored: np.ndarray | None = None,
                   sample_weight: torch.Tensor | None = None) -> CVResult:
    """Held-out log loss and accuracy of each C of the grid, pooled over stratified folds.

    groups: rows with the same group number share a fold (a photo and its mirror image); the folds are drawn
    over the groups, labelled by `y` of their first row. scored: the rows whose held-out predictions count (the
    photos as they are); default all. The grid is walked from strong to weak L2, each fold's fit warm-started from
    its previous one, and stops `options.patience` points past the lowest pooled loss.
    """
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    scored = np.ones(len(y), dtype=bool) if scored is None else np.asarray(scored, dtype=bool)
    first = np.unique(groups, return_index=True)[1]
    folds = fold_count(y[first], options.folds)
    group_fold = dict(zip(groups[first].tolist(), stratified_folds(y[first], folds, seed).tolist()))
    fold = np.array([group_fold[g] for g in groups.tolist()])
    t = torch.as_tensor(y, dtype=torch.long)
    parts = [(np.flatnonzero(fold != k), np.flatnonzero((fold == k) & scored)) for k in range(folds)]
    warm: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * folds
    grid, losses, accuracies = sorted(options.c_grid), [], []
    n = int(scored.sum())
    with one_thread():
        for c in grid:
            loss, correct = 0.0, 0
            for k, (train, held) in enumerate(parts):
                sw = None if sample_weight is None else sample_weight[train]
                warm[k] = fit_logistic(z[train], t[train], n_classes, c, sw, warm[k], options.max_iter, options.tol)
                logits = z[held] @ warm[k][0].T + warm[k][1]
                loss += float(F.cross_entropy(logits, t[held], reduction="sum"))
                correct += int((logits.argmax(1) == t[held]).sum())
            losses.append(loss / n)
            accuracies.append(correct / n)
            if len(losses) - 1 - int(np.argmin(losses)) >= options.patience:
                break  # risen `patience` times past its lowest: weaker L2 only overfits more (and costs more)
    return CVResult([float(c) for c in grid[:len(losses)]], losses, accuracies, folds)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread: these matrices are small, and on a busy machine a second thread waiting at every
    barrier made an L-BFGS fit 7x slower (measured on 3,409 x 1280 features, 2 shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Head:
    """The fitted head on raw features: logits = features @ weight.T + bias; `cv` is how its C was chosen."""
    weight: torch.Tensor  # (K, D)
    bias: torch.Tensor  # (K,)
    cv: CVResult


def fit_head(features: torch.Tensor, y: np.ndarray, n_classes: int, options: HeadOptions = HeadOptions(),
             seed: int = 0, groups: np.ndarray | None = None, scored: np.ndarray | None = None,
             sample_weight: torch.Tensor | None = None, cv: CVResult | None = None) -> Head:
    """Choose C by `cross_validate` (unless `cv` gives it), refit on every row, fold the standardisation back."""
    mean, std = standardizer(features)
    z = (features - mean) / std
    if cv is None:
        cv = cross_validate(z, y, n_classes, options, seed, groups, scored, sample_weight)
    with one_thread():
        w, b = fit_logistic(z, torch.as_tensor(y, dtype=torch.long), n_classes, cv.c, sample_weight,
                            max_iter=options.max_iter, tol=options.tol)
    weight = w / std  # (K, D) on raw features
    return Head(weight, b - weight @ mean, cv)


def balanced_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Per-row weights n / (K n_class): every class counts alike in the loss (scikit-learn's 'balanced')."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return torch.as_tensor(len(y) / (n_classes * counts[y]), dtype=torch.float32)

