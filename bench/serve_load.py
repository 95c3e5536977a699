"""`cnnlab serve` under 20 concurrent uploads of 49-megapixel PNGs: memory budget, responsiveness, stopping.

    PYTHONPATH=src python bench/serve_load.py [--run runs/NAME] [--seconds 20] [--clients 20] [--side 7000]

Loopback only, bounded in time. Starts `cnnlab serve` on a free 127.0.0.1 port (the seed CNN trained here on
2,000 MNIST images unless --run names a run), generates PNGs of --side x --side pixels at run time (flat
paper with a dark stroke: ~150 KB each, ~1 GB each to decode as an MNIST-style digit), and for --seconds
keeps --clients uploads in flight, each with a client deadline of --deadline seconds. Meanwhile one client
asks GET /api/runs every 0.1 s. Then it sends SIGTERM with uploads still in flight and times the exit.

Prints, and checks against the issue's bounds: 5xx other than 503 (must be 0), requests answered (200),
refused with 503 (with Retry-After) or refused otherwise, requests that missed their deadline (must be 0),
the slowest GET /api/runs (must be < 1 s), the server's peak RSS (VmHWM, must be < 3 GB) and the time
from SIGTERM to exit (must be < 5 s). Exit status 1 when a bound is missed.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from PIL import Image, ImageDraw


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_tiny(root: Path) -> Path:
    from cnnlab.datasets.registry import load
    from cnnlab.runs import run_folder
    from cnnlab.spec import zoo
    from cnnlab.train.config import TrainConfig
    data = load("mnist")
    small = replace(data, x_train=data.x_train[:2000], y_train=data.y_train[:2000],
                    x_test=data.x_test[:500], y_test=data.y_test[:500])
    spec, _ = zoo.resolve("seed", small.input_shape, 10)
    folder, _, _ = run_folder.train_run(small, spec, TrainConfig(epochs=1, batch_size=32, device="cpu", seed=0),
                                        root / "seed-mnist-load", model_name="seed", figures=False)
    return folder


def big_pngs(side: int, count: int) -> list[bytes]:
    """PNGs of side x side pixels: light paper, one dark stroke each (a different one, so no two are alike)."""
    out = []
    for k in range(count):
        img = Image.new("RGB", (side, side), (250 - k, 248, 240))
        ImageDraw.Draw(img).line([(side // 2 + 50 * k, side // 6), (side // 2, side * 5 // 6)], fill=(20, 20, 20),
                                 width=max(1, side // 30))
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=9)
        out.append(buf.getvalue())
    return out


def request(port: int, method: str, path: str, body: bytes | None, timeout: float) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "image/png"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        reply = conn.getresponse()
        reply.read()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}
    finally:
        conn.close()


class Load:
    """Upload clients and the GET /api/runs probe; counts what came back."""

    def __init__(self, port: int, pngs: list[bytes], deadline: float):
        self.port, self.pngs, self.deadline = port, pngs, deadline
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.late = 0  # answered after the client's deadline, or never
        self.no_retry_after = 0
        self.latencies: list[float] = []
        self.probe: list[float] = []
        self.probe_failures = 0

    def upload_forever(self, k: int) -> None:
        n = 0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status, headers = request(self.port, "POST", "/api/predict", self.pngs[(k + n) % len(self.pngs)],
                                          self.deadline)
                key = str(status)
            except OSError as exc:  # a timeout is a missed deadline; a reset after SIGTERM is not counted
                status, headers, key = 0, {}, f"no answer ({type(exc).__name__})"
            took = time.monotonic() - started
            n += 1
            if self.stop.is_set() and status == 0:
                return
            with self.lock:
                self.statuses[key] += 1
                self.latencies.append(took)
                self.late += status == 0 or took > self.deadline
                self.no_retry_after += status == 503 and "retry-after" not in headers
            if status == 503:
                time.sleep(min(1.0, float(headers.get("retry-after", 1))))  # as a polite client would

    def probe_forever(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status, _ = request(self.port, "GET", "/api/runs", None, 5.0)
                ok = status == 200
            except OSError:
                ok = False
            took = time.monotonic() - started
            if self.stop.is_set():
                return
            with self.lock:
                self.probe.append(took)
                self.probe_failures += not ok
            time.sleep(0.1)


def peak_rss(pid: int) -> int:
    """The process's peak resident set size in bytes (VmHWM), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def wait_until_up(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.communicate()}")
        try:
            if request(port, "GET", "/api/runs", None, 2.0)[0] == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("the server did not answer within 120 s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", help="run folder to serve (default: train the seed CNN on 2,000 MNIST images)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--side", type=int, default=7000, help="PNG width and height (default 7000: 49 megapixels)")
    p.add_argument("--deadline", type=float, default=30.0, help="each upload's client deadline in seconds")
    args = p.parse_args()
    if not (0 < args.seconds <= 120 and 0 < args.clients <= 64 and 0 < args.side <= 7071):
        raise SystemExit("--seconds must be in (0, 120], --clients in 1..64, --side in 1..7071 (50 megapixels)")

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else train_tiny(Path(tmp))
        pngs = big_pngs(args.side, 4)
        print(f"{len(pngs)} PNGs of {args.side}x{args.side} pixels, {min(map(len, pngs)):,}-"
              f"{max(map(len, pngs)):,} bytes; run {run.name}", flush=True)
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(run), "--port", str(port),
                                 "--runs", str(run.parent)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        wait_until_up(port, proc)
        idle_rss = peak_rss(proc.pid)
        load = Load(port, pngs, args.deadline)
        threads = [threading.Thread(target=load.upload_forever, args=(k,), daemon=True) for k in range(args.clients)]
        threads.append(threading.Thread(target=load.probe_forever, daemon=True))
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        rss = peak_rss(proc.pid)
        with load.lock:  # what came back while the server ran, before SIGTERM
            statuses, late, no_retry = dict(load.statuses), load.late, load.no_retry_after
            probe, probe_failures, latencies = list(load.probe), load.probe_failures, list(load.latencies)
        sent_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # uploads still in flight
        try:
            proc.wait(30)
            exit_s = time.monotonic() - sent_term
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            exit_s = float("inf")
        load.stop.set()
        stderr = proc.stderr.read() if proc.stderr else ""

    other_5xx = sum(n for s, n in statuses.items() if s.isdigit() and 500 <= int(s) < 600 and s != "503")
    result = {"requests": sum(statuses.values()), "statuses": statuses, "other_5xx": other_5xx,
              "late_or_unanswered": late, "503_without_retry_after": no_retry,
              "upload_seconds_max": round(max(latencies, default=0.0), 2),
              "runs_probes": len(probe), "runs_probe_failures": probe_failures,
              "runs_seconds_max": round(max(probe, default=float("inf")), 3),
              "idle_rss_mb": round(idle_rss / 2**20), "peak_rss_mb": round(rss / 2**20),
              "sigterm_exit_seconds": round(exit_s, 2), "exit_code": proc.returncode}
    checks = {"no 5xx but 503": other_5xx == 0, "every request within its deadline": late == 0,
              "503s carry Retry-After": no_retry == 0, "some uploads answered 200": statuses.get("200", 0) > 0,
              "GET /api/runs always < 1 s": probe_failures == 0 and result["runs_seconds_max"] < 1.0,
              "peak RSS < 3 GB": rss < 3 * 2**30, "SIGTERM exit < 5 s": exit_s < 5.0}
    print(json.dumps(result, indent=1))
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    if stderr.strip():
        print("server stderr (last lines):\n" + "\n".join(stderr.strip().splitlines()[-8:]))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
