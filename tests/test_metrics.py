"""metrics.py against brute-force counting loops."""
import numpy as np
import pytest

from cnnlab.explain import metrics
from cnnlab.explain.metrics import accuracy, classification_report, confusion_matrix


def labels(n=500, k=6, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    return y, p


def test_confusion_matrix_brute_force():
    y, p = labels()
    cm = confusion_matrix(y, p, 6)
    want = np.zeros((6, 6), int)
    for t, q in zip(y, p):
        want[t, q] += 1
    np.testing.assert_array_equal(cm, want)
    assert cm.sum() == len(y)
    assert np.trace(cm) / len(y) == pytest.approx(accuracy(y, p))
    assert accuracy(y, p) == pytest.approx(sum(int(t == q) for t, q in zip(y, p)) / len(y))


def test_confusion_matrix_rejects_bad_labels():
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(np.array([0.0, 1.0]), np.array([0.0, 1.0]), 3)


def test_report_brute_force():
    y, p = labels(k=4, seed=1)
    p[p == 3] = 0  # class 3 is never predicted: precision 0 by convention, not NaN
    rep = classification_report(y, p, ["a", "b", "c", "d"])
    for c in range(4):
        tp = sum(int(t == c and q == c) for t, q in zip(y, p))
        npred, ntrue = int(np.sum(p == c)), int(np.sum(y == c))
        prec = tp / npred if npred else 0.0
        rec = tp / ntrue if ntrue else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        assert (rep.precision[c], rep.recall[c], rep.f1[c]) == pytest.approx((prec, rec, f1))
        assert rep.support[c] == ntrue
    assert rep.precision[3] == 0.0
    assert rep.accuracy == pytest.approx(accuracy(y, p))
    assert rep.weighted()[1] == pytest.approx(rep.accuracy)  # weighted recall is accuracy
    text = rep.format()
    assert "precision" in text and "weighted avg" in text and len(text.splitlines()) == 2 + 4 + 4
    assert rep.to_dict()["classes"][0]["name"] == "a"
    assert classification_report(y, p, 4).class_names == ["0", "1", "2", "3"]


def test_confusion_text_rows_are_true_columns_predicted():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 10, 500), rng.integers(0, 10, 500)
    names = [str(i) for i in range(10)]
    cm = metrics.confusion_matrix(y_true, y_pred, 10)
    lines = metrics.confusion_text(cm, names).splitlines()
    assert lines[0].split()[-10:] == names and len(lines) == 11
    table = np.array([[int(v) for v in line.split()[1:]] for line in lines[1:]])
    expected = np.zeros((10, 10), int)  # counted by hand: row = truth, column = prediction
    for t, p in zip(y_true, y_pred):
        expected[t, p] += 1
    np.testing.assert_array_equal(table, expected)
    assert [line.split()[0] for line in lines[1:]] == names
