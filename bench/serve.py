"""Serving throughput: `cnnlab serve` (micro-batched) against a plain FastAPI + torch endpoint, under load.

    PYTHONPATH=src python bench/serve.py [--run runs/NAME] [--seconds 20] [--connections 1 50]

Both servers run the same seed-CNN run (trained here on 3,000 MNIST images unless --run names one), one
uvicorn worker each, and answer the same request: POST of one 28x28 MNIST test PNG as an image/png body.
The plain endpoint is written the obvious way: one request = one decode + one forward pass. The load
generator is wrk (apt-get install wrk) with a Lua script, else a small asyncio client (slower: it shares
the CPU with the server it measures). Prints requests/s, p50, p99 and errors per server and concurrency.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

PLAIN_APP = '''
import io, os
import numpy as np, torch
from fastapi import FastAPI, Request
from PIL import Image
from cnnlab.models import load_model

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
model = load_model(os.environ["BENCH_RUN"]).module.eval()
app = FastAPI()

@app.post("/predict")
async def predict(request: Request):
    img = Image.open(io.BytesIO(await request.body())).convert("L").resize((28, 28))
    x = torch.from_numpy(np.asarray(img, np.float32) / 255.0)[None, None]
    with torch.no_grad():
        probs = torch.softmax(model(x), 1)[0]
    return {"probabilities": probs.tolist(), "top": int(probs.argmax())}
'''

WRK_LUA = '''
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/png"
local f = io.open("{png}", "rb"); wrk.body = f:read("*a"); f:close()
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout, summary.errors.status, latency:percentile(50),
    latency:percentile(99), summary.duration))
end
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, png: bytes) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, data=png, headers={"Content-Type": "image/png"})
            with urllib.request.urlopen(req, timeout=2) as r:
                json.loads(r.read())
                return
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {proc.communicate()}") from None
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within 90 s")


def train_tiny(root: Path) -> Path:
    from cnnlab.datasets.registry import load
    from cnnlab.runs import run_folder
    from cnnlab.spec import zoo
    from cnnlab.train.config import TrainConfig
    data = load("mnist")
    small = replace(data, x_train=data.x_train[:3000], y_train=data.y_train[:3000],
                    x_test=data.x_test[:1000], y_test=data.y_test[:1000])
    spec, _ = zoo.resolve("seed", small.input_shape, 10)
    folder, _, _ = run_folder.train_run(small, spec, TrainConfig(epochs=1, batch_size=32, device="cpu", seed=0),
                                        root / "seed-mnist-bench", model_name="seed")
    return folder


def run_wrk(url: str, lua: Path, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{seconds}s",
                          "--timeout", "5s", "-s", str(lua), url], capture_output=True, text=True, check=True).stdout
    n, sock_errors, status_errors, p50, p99, micros = map(int, re.search(r"RESULT (.*)", out).group(1).split())
    return {"rps": n / (micros / 1e6), "p50_ms": p50 / 1000, "p99_ms": p99 / 1000,
            "errors": sock_errors + status_errors, "requests": n}


def run_asyncio(url: str, png: bytes, connections: int, seconds: int) -> dict[str, float]:
    import httpx

    async def main() -> dict[str, float]:
        latencies: list[float] = []
        errors = 0
        stop = time.perf_counter() + seconds

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                started = time.perf_counter()
                try:
                    r = await client.post(url, content=png, headers={"Content-Type": "image/png"})
                    errors += r.status_code != 200
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=5) as client:
            started = time.perf_counter()
            await asyncio.gather(*(worker(client) for _ in range(connections)))
            wall = time.perf_counter() - started
        ms = np.asarray(latencies) * 1000
        return {"rps": len(ms) / wall, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                "errors": errors, "requests": len(ms)}

    return asyncio.run(main())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a trained seed-CNN run folder (default: train one on 3,000 MNIST images)")
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--connections", type=int, nargs="+", default=[1, 50])
    p.add_argument("--threads", type=int, default=1, help="torch threads in each server (default %(default)s)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnlab-bench-serve-"))
    run = Path(args.run) if args.run else train_tiny(work)
    from cnnlab.datasets.registry import load
    buf = io.BytesIO()
    Image.fromarray(load("mnist").x_test[0][:, :, 0]).save(buf, format="PNG")
    png = buf.getvalue()
    (work / "digit.png").write_bytes(png)
    (work / "plain_app.py").write_text(PLAIN_APP)
    lua = work / "post.lua"
    lua.write_text(WRK_LUA.replace("{png}", str(work / "digit.png")))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "BENCH_RUN": str(run),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), str(work)])}
    servers = {
        "cnnlab serve": ([sys.executable, "-m", "cnnlab", "serve", str(run), "--runs", str(work / "runs")],
                         "/api/predict"),
        "plain FastAPI": ([sys.executable, "-c", "import sys, uvicorn, plain_app; uvicorn.run(plain_app.app, "
                           "host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')"], "/predict"),
    }
    use_wrk = shutil.which("wrk") is not None
    print(f"load generator: {'wrk' if use_wrk else 'asyncio + httpx'}; {args.seconds} s per point; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; run {run}")
    results: dict[tuple[str, int], dict[str, float]] = {}
    for name, (command, path) in servers.items():
        port = free_port()
        if name == "cnnlab serve":
            command = [*command, "--port", str(port)]
        else:
            command = [*command, str(port)]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                cwd=work)
        try:
            url = f"http://127.0.0.1:{port}{path}"
            wait_up(url, proc, png)
            for c in args.connections:
                r = run_wrk(url, lua, c, args.seconds) if use_wrk else run_asyncio(url, png, c, args.seconds)
                results[name, c] = r
                print(f"{name:14s} {c:3d} conn: {r['rps']:8.0f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                      f"p99 {r['p99_ms']:7.1f} ms  errors {r['errors']:.0f} of {r['requests']:.0f}", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    for c in args.connections:
        ratio = results["cnnlab serve", c]["rps"] / max(results["plain FastAPI", c]["rps"], 1e-9)
        print(f"ratio cnnlab/plain at {c} connections: {ratio:.2f}x")
    print(f"load average {os.getloadavg()[0]:.1f} at the end (other work on this machine counts against both)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
