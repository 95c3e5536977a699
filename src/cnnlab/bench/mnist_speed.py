"""Time to 99% MNIST test accuracy: cnnlab's default recipe vs plain PyTorch vs Keras, in ONE process.

Machines are noisy, so the peers run in the same process on the same arrays right after cnnlab, and
the result is a ratio. Every contender is evaluated on the full test set after each epoch, and that
evaluation counts in its time. `--repeat N` runs every contender N times, in alternating
rounds, and keeps each one's fastest run: noise only ever adds time.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any, Callable

import torch

from cnnlab.bench.peers import cuda_peak_mb, peak_rss_mb, reset_peak_rss
from cnnlab.datasets.dataset import Dataset
from cnnlab.datasets.registry import load
from cnnlab.spec import zoo
from cnnlab.spec.build import new_module
from cnnlab.train.config import recipe_config
from cnnlab.train.device_data import targets_tensor, to_device_images
from cnnlab.train.fit import configure_cpu_threads, evaluate_tensors, fit, resolve_device

PEERS = {"pytorch": "pytorch_reference", "keras": "keras_reference"}


def cnnlab_run(data: Dataset, *, model: str = "seed", target: float = 0.99, device: str = "auto",
               log: Callable[[str], None] = print, **overrides: Any) -> dict[str, Any]:
    """Train `model` with cnnlab's recipe (its zoo recipe, then `overrides`) and time it to `target`."""
    dev = resolve_device(device)
    spec, recipe = zoo.resolve(model, data.input_shape, len(data.class_names))
    config = recipe_config(recipe, **{"device": str(dev), **overrides})
    module = new_module(spec, config.seed)
    x_test, y_test = to_device_images(data.x_test, dev), targets_tensor(data.y_test, dev)
    accs: list[float] = []
    times: list[float] = []
    reset_peak_rss()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        torch.cuda.synchronize(dev)
    started = time.perf_counter()

    def on_epoch(epoch: int, logs: dict[str, float]) -> None:
        accs.append(evaluate_tensors(module, x_test, y_test)[1])  # .item() inside waits for the device
        times.append(time.perf_counter() - started)
        log(f"cnnlab {model} epoch {epoch + 1}: test acc {accs[-1]:.4f}, {times[-1]:.1f} s")

    fit(module, data.x_train, data.y_train, config, on_epoch=on_epoch, should_stop=lambda: bool(accs) and accs[-1] >= target)
    reached = next((i for i, a in enumerate(accs) if a >= target), None)
    return {"name": f"cnnlab {model}", "reached": reached is not None, "epochs": len(accs), "test_acc": accs,
            "time_to_target_s": times[reached] if reached is not None else None, "train_seconds": times[-1],
            "device": str(dev), "peak_rss_mb": peak_rss_mb(), "cuda_peak_mb": cuda_peak_mb(dev),
            "recipe": f"{config.epochs} epochs, batch {config.batch_size}, {config.optimizer} "
                      f"{config.resolved_schedule} lr {config.peak_lr():g}"}


def fastest(results: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The fastest run (by time to target, then total time); None when the contender could not run."""
    results = [r for r in results if r is not None]
    if not results:
        return None
    return min(results, key=lambda r: (not r["reached"], r["time_to_target_s"] or 0, r["train_seconds"]))


def interleaved(repeat: int, contenders: dict[str, Callable[[], dict[str, Any] | None]]) -> dict[str, Any]:
    """Run every contender once per round (round-robin), `repeat` rounds, and keep each one's fastest run.

    Spreading each contender's runs over the whole benchmark lets a burst of load on a shared machine
    hit them all alike, instead of one contender's every run.
    """
    runs: dict[str, list] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, run in contenders.items():
            runs[name].append(run())
    return {name: fastest(results) for name, results in runs.items()}


def table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'contender':<22} {'reached':>7} {'epochs':>6} {'to 99% (s)':>11} {'final acc':>9} {'peak RSS MB':>11}"
             f" {'GPU peak MB':>11}"]
    for r in results:
        to_target = f"{r['time_to_target_s']:.1f}" if r["reached"] else "-"
        gpu = f"{r['cuda_peak_mb']:.0f}" if r.get("cuda_peak_mb") else "-"
        rss = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "-"
        lines.append(f"{r['name']:<22} {'yes' if r['reached'] else 'no':>7} {r['epochs']:>6} {to_target:>11} "
                     f"{r['test_acc'][-1]:>9.4f} {rss:>11} {gpu:>11}")
    return "\n".join(lines)


def speedup(ours: dict[str, Any], peer: dict[str, Any] | None) -> str:
    if peer is None:
        return "n/a"
    if not ours["reached"]:
        return "0.0"
    # A peer that never reached the target took at least all its epochs: a lower bound on the speedup.
    theirs = peer["time_to_target_s"] if peer["reached"] else peer["train_seconds"]
    return f"{theirs / ours['time_to_target_s']:.1f}" + ("" if peer["reached"] else "+")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cnnlab bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--target", type=float, default=0.99,
                        help="the test accuracy each contender trains to, a fraction (default 0.99)")
    parser.add_argument("--max-epochs", type=int, default=8, help="epochs the peers may take to reach the target")
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender; the fastest counts")
    parser.add_argument("--peers", default="pytorch,keras", help="comma-separated: pytorch, keras ('' for none)")
    parser.add_argument("--model", default="seed", help="cnnlab zoo model (the peers always train the seed CNN)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before anything imports keras
    from cnnlab.bench import peers

    dev = resolve_device(args.device)
    if dev.type == "cpu":
        configure_cpu_threads()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {dev} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    data = load("mnist")
    x_train, y_train, x_test, y_test = data.x_train[..., 0], data.y_train, data.x_test[..., 0], data.y_test

    contenders: dict[str, Callable[[], dict[str, Any] | None]] = {
        "cnnlab": lambda: cnnlab_run(data, model=args.model, target=args.target, device=str(dev))}
    for peer in [p for p in args.peers.split(",") if p]:
        if peer not in PEERS:
            parser.error(f"unknown peer {peer!r}; choose from {', '.join(PEERS)}")
        contenders[peer] = (lambda fn: lambda: fn(x_train, y_train, x_test, y_test, target=args.target,
                                                  max_epochs=args.max_epochs, device=str(dev)))(getattr(peers, PEERS[peer]))
    best = interleaved(args.repeat, contenders)
    ours, by_peer = best.pop("cnnlab"), best
    results = [ours] + [{**r, "name": r["name"] + (f" ({r['backend']})" if r.get("backend") else "")}
                        for r in by_peer.values() if r is not None]
    print(table(results))
    print(f"cnnlab recipe: {ours['recipe']}")
    print(f"speedup_vs_pytorch={speedup(ours, by_peer.get('pytorch'))} speedup_vs_keras={speedup(ours, by_peer.get('keras'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
