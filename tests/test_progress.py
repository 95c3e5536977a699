"""Progress output in pipes and logs, the step_every rule, the label-smoothing floor, per-step history."""
import io
import math
import subprocess
import sys

import pytest
import torch

from cnnlab.train import progress


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def drive(steps, every, seconds_per_step, epochs=1):
    stream, clock = io.StringIO(), FakeClock()
    on_step, on_epoch, close = progress.progress_callbacks("auto", epochs, stream=stream, clock=clock)
    for epoch in range(epochs):
        for step in range(1, steps + 1):
            clock.now += seconds_per_step
            if step % every == 0 or step == steps:
                on_step(epoch, step, {"loss": 1.0, "accuracy": 0.5, "steps": steps, "seen": step * 128})
        on_epoch(epoch, {"loss": 1.0, "accuracy": 0.5, "seconds": steps * seconds_per_step})
    close()
    return stream.getvalue().splitlines()


def test_pipe_gets_a_line_every_tenth_of_an_epoch():
    lines = drive(469, progress.step_every(60000, 128), seconds_per_step=0.01)
    step_lines = [ln for ln in lines if " step " in ln]
    assert 9 <= len(step_lines) <= 11, lines  # 10% of 469 steps is reachable with reports every 20 steps
    assert "img/s" in step_lines[-1] and "loss 1.0000" in step_lines[-1] and "/469" in step_lines[-1]
    assert lines[-1].startswith("epoch 1/1  loss")


def test_pipe_gets_a_line_every_ten_seconds_on_slow_epochs():
    lines = drive(1000, 1, seconds_per_step=1.0)  # a 1000 s epoch: a line each 10 s beats each 100 steps
    assert len([ln for ln in lines if " step " in ln]) >= 90


def test_verbose_2_is_one_line_per_epoch_and_0_is_silent():
    stream = io.StringIO()
    on_step, on_epoch, _ = progress.progress_callbacks(2, 3, stream=stream)
    assert on_step is None
    on_epoch(0, {"loss": 1.0, "accuracy": 0.5})
    assert stream.getvalue().count("\n") == 1
    assert progress.progress_callbacks(0, 3, stream=stream)[:2] == (None, None)
    with pytest.raises(ValueError, match="verbose"):
        progress.progress_callbacks(3, 1)


def test_step_every_reaches_ten_percent():
    for n, batch in ((60000, 128), (6000, 128), (100, 128), (5000, 32)):
        steps = math.ceil(n / batch)
        every = progress.step_every(n, batch)
        assert every == 1 or every <= steps * progress.LINE_FRACTION


def test_smoothed_floor_is_the_loss_of_the_smoothed_target_itself():
    for eps, k in ((0.1, 10), (0.2, 2)):
        target = torch.full((1, k), eps / k)
        target[0, 3 % k] += 1 - eps
        loss = torch.nn.functional.cross_entropy(target.log(), torch.tensor([3 % k]), label_smoothing=eps)
        assert progress.smoothed_loss_floor(eps, k) == pytest.approx(loss.item(), rel=1e-5)
    assert progress.smoothed_loss_floor(0.0, 10) == 0.0


@pytest.mark.slow
def test_cnnlab_train_piped_shows_progress_lines(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--subset", "3000", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300, check=True)
    lines = (out.stdout + out.stderr).splitlines()
    step_lines = [ln for ln in lines if ln.startswith("epoch 1/1  step")]
    assert len(step_lines) >= 3, lines
    assert "label smoothing 0.1: its floor is about 0.500" in out.stdout
    import json
    steps = json.loads((tmp_path / "r" / "history.json").read_text())["steps"]
    assert len(steps) >= 10 and steps[-1][0] == 1.0
