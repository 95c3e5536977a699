"""The photo head (cnnlab.train.head): multinomial logistic regression against scikit-learn's, and the C its
cross-validation picks. Features are generated here: Gaussian classes in 64 dimensions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.train.head import (
    HeadOptions,
    balanced_weights,
    cross_validate,
    fit_head,
    fit_logistic,
    standardizer,
    stratified_folds,
)

sklearn_linear = pytest.importorskip("sklearn.linear_model")


def _blobs(n: int, k: int = 3, d: int = 64, spread: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * spread / np.sqrt(d) * 4
    y = np.arange(n) % k
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float64), y


@pytest.mark.parametrize("c", [0.01, 1.0])
def test_same_c_gives_scikit_learns_probabilities(c):
    x, y = _blobs(240)
    z = torch.from_numpy(x)
    w, b = fit_logistic(z, torch.from_numpy(y), 3, c, tol=1e-10, max_iter=1000)
    ours = torch.softmax(z @ w.T + b, 1).numpy()
    ref = sklearn_linear.LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x, y)
    assert np.abs(ours - ref.predict_proba(x)).max() < 1e-4


def test_sample_weights_match_scikit_learns_class_weights():
    x, y = _blobs(200)
    keep = (y != 2) | (np.arange(len(y)) % 4 == 0)  # class 2 four times rarer
    x, y = x[keep], y[keep]
    z = torch.from_numpy(x)
    w, b = fit_logistic(z, torch.from_numpy(y), 3, 0.1, balanced_weights(y, 3).double(), tol=1e-10, max_iter=1000)
    ref = sklearn_linear.LogisticRegression(C=0.1, class_weight="balanced", tol=1e-10, max_iter=10000).fit(x, y)
    assert np.abs(torch.softmax(z @ w.T + b, 1).numpy() - ref.predict_proba(x)).max() < 1e-4


def test_folded_standardisation_gives_the_standardised_models_probabilities():
    x, y = _blobs(150)
    raw = torch.from_numpy(x * 5 + 3).float()
    head = fit_head(raw, y, 3, HeadOptions(c_grid=(0.1,)))
    mean, std = standardizer(raw)
    ref = sklearn_linear.LogisticRegression(C=0.1, tol=1e-8, max_iter=10000).fit(((raw - mean) / std).numpy(), y)
    ours = torch.softmax(raw @ head.weight.T + head.bias, 1).numpy()
    assert np.abs(ours - ref.predict_proba(((raw - mean) / std).numpy())).max() < 2e-3


def test_cv_picks_strong_l2_for_noise_and_weak_l2_for_separable_classes():
    x, y = _blobs(150, d=64, spread=0.0)  # labels unrelated to the features
    noise = cross_validate(torch.from_numpy(x).float(), y, 3)
    assert noise.c <= 0.01 and noise.log_loss[noise.best] < np.log(3) + 0.02
    x, y = _blobs(150, d=8, spread=3.0)  # a few informative dimensions, well separated
    clear = cross_validate(torch.from_numpy(x).float(), y, 3)
    assert clear.c >= 0.3 and clear.accuracy[clear.best] > 0.9
    assert clear.log_loss[clear.best] == min(clear.log_loss)


def test_cv_agrees_with_scikit_learns_cross_validated_loss_per_c():
    x, y = _blobs(200, spread=1.0)
    z = torch.from_numpy(x)
    folds = stratified_folds(y, 5, seed=0)
    ours = cross_validate(z, y, 3, HeadOptions(c_grid=(0.01, 0.1, 1.0), tol=1e-9, max_iter=2000))
    for c, loss in zip(ours.c_grid, ours.log_loss):
        total = 0.0
        for k in range(5):
            fit = sklearn_linear.LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x[folds != k], y[folds != k])
            p = fit.predict_proba(x[folds == k])
            total -= np.log(p[np.arange(len(p)), y[folds == k]]).sum()
        assert abs(loss - total / len(y)) < 1e-4


def test_groups_stay_in_one_fold_and_only_scored_rows_count():
    x, y = _blobs(60, spread=0.0)  # nothing to learn but each photo's own label
    z = torch.from_numpy(np.concatenate([x, x + 0.01])).float()
    yy, groups = np.concatenate([y, y]), np.concatenate([np.arange(60), np.arange(60)])
    scored = np.arange(120) < 60
    grouped = cross_validate(z, yy, 3, HeadOptions(c_grid=(10.0,)), groups=groups, scored=scored)
    leaky = cross_validate(z, yy, 3, HeadOptions(c_grid=(10.0,)))  # a photo's twin in the training folds
    assert leaky.accuracy[0] > 0.85 and grouped.accuracy[0] < 0.6


def test_folds_are_stratified_and_too_small_classes_are_refused():
    y = np.repeat([0, 1, 2], [50, 10, 3])
    folds = stratified_folds(y, 5)
    assert all(np.bincount(folds[y == 1], minlength=5).tolist() == [2] * 5 for _ in [0])
    assert cross_validate(torch.randn(63, 4), y, 3, HeadOptions(c_grid=(1.0,))).folds == 3
    with pytest.raises(ValueError, match="at least 2 photos of every class, the smallest class has 1"):
        cross_validate(torch.randn(4, 4), np.array([0, 0, 1, 1 - 1 + 2]), 3)
    with pytest.raises(ValueError, match="head folds must be"):
        HeadOptions(folds=1)
