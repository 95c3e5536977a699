"""The speed benchmark's own logic on tiny data: result shape, early stop at the target, the ratio line."""
import dataclasses

from cnnlab.bench import mnist_speed


def tiny(mnist):
    return dataclasses.replace(mnist, x_train=mnist.x_train[:512], y_train=mnist.y_train[:512],
                               x_test=mnist.x_test[:256], y_test=mnist.y_test[:256])


def test_cnnlab_run_stops_at_the_target(mnist):
    logs = []
    r = mnist_speed.cnnlab_run(tiny(mnist), target=0.0, device="cpu", log=logs.append, epochs=3, batch_size=128)
    assert r["reached"] and r["epochs"] == 1 and len(logs) == 1
    assert r["time_to_target_s"] == r["train_seconds"] > 0
    r = mnist_speed.cnnlab_run(tiny(mnist), target=1.01, device="cpu", log=logs.append, epochs=2, batch_size=128)
    assert not r["reached"] and r["epochs"] == 2 and r["time_to_target_s"] is None


def test_speedup_line():
    ours = {"reached": True, "time_to_target_s": 10.0}
    assert mnist_speed.speedup(ours, {"reached": True, "time_to_target_s": 45.0}) == "4.5"
    assert mnist_speed.speedup(ours, {"reached": False, "time_to_target_s": None, "train_seconds": 80.0}) == "8.0+"
    assert mnist_speed.speedup(ours, None) == "n/a"
    assert mnist_speed.speedup({"reached": False}, {"reached": True, "time_to_target_s": 1.0}) == "0.0"


def test_table_lists_every_contender():
    rows = [{"name": "cnnlab seed", "reached": True, "epochs": 1, "time_to_target_s": 12.3, "test_acc": [0.991],
             "peak_rss_mb": 700.0, "cuda_peak_mb": None},
            {"name": "pytorch", "reached": False, "epochs": 8, "time_to_target_s": None, "test_acc": [0.989],
             "peak_rss_mb": None, "cuda_peak_mb": None}]
    text = mnist_speed.table(rows)
    assert "cnnlab seed" in text and "12.3" in text and "0.9890" in text


def test_interleaved_rounds_keep_each_fastest_run():
    order, times = [], {"a": iter([5.0, 3.0]), "b": iter([2.0, 4.0])}

    def contender(name):
        def run():
            order.append(name)
            t = next(times[name])
            return {"name": name, "reached": True, "time_to_target_s": t, "train_seconds": t}
        return run

    best = mnist_speed.interleaved(2, {"a": contender("a"), "b": contender("b"), "none": lambda: None})
    assert order == ["a", "b", "a", "b"]
    assert best["a"]["time_to_target_s"] == 3.0 and best["b"]["time_to_target_s"] == 2.0 and best["none"] is None
