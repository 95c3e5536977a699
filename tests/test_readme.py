"""The README runs as written: its ```bash and ```python blocks, in order, in a temporary folder.

A line that cannot run here says so in the README itself with `(readme-test: skip, REASON)`; nothing
is substituted. The commands run with `CNNLAB_DATA` in a temporary cache and `cnnlab` meaning this checkout.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = re.compile(r"\(readme-test: skip, ([^)]+)\)")


def blocks() -> list[tuple[str, str]]:
    return re.findall(r"^```(bash|python)\n(.*?)^```$", README.read_text(), flags=re.MULTILINE | re.DOTALL)


def runnable(code: str) -> str:
    """The block without the lines it marks as skipped."""
    return "\n".join(line for line in code.splitlines() if not SKIP.search(line))


def test_every_skip_gives_a_reason_and_something_runs():
    found = blocks()
    assert len(found) >= 6
    for _, code in found:
        for reason in SKIP.findall(code):
            assert len(reason.strip()) >= 5, reason
    assert sum(bool(runnable(code).strip()) for _, code in found) >= 4


@pytest.mark.slow
def test_readme_blocks_run_in_order(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "cnnlab"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cnnlab "$@"\n')
    shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "CNNLAB_DATA": str(tmp_path / "cache"), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "KERAS_BACKEND": "torch"}
    for i, (lang, code) in enumerate(blocks()):
        code = runnable(code)
        if not code.strip():
            continue
        cmd = ["bash", "-e", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"README block {i} ({lang}) failed:\n{code}\n--- output\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert (work / "runs" / "mnist" / "model.onnx").is_file()
    assert (work / "runs" / "threes-and-eights" / "history.json").is_file()
