"""`cnnlab explain`: Grad-CAM + saliency figures named by image and class, `explain conv --out`, `plot` with steps."""
import json

from PIL import Image

from cnnlab.cli import main


def test_grad_cam_names_the_image_and_the_predicted_class(tiny_run, tmp_path, capsys):
    assert main(["explain", str(tiny_run), "--grad-cam", "--image", "7", "--out", str(tmp_path)]) == 0
    wrote = capsys.readouterr().out.strip().removeprefix("wrote ")
    name = wrote.rsplit("/", 1)[-1]
    assert name.startswith("grad_cam_test-7_pred-") and name.endswith(".png")
    width, _ = Image.open(wrote).size
    assert width >= 1200  # four panels: image, heat map, overlay, saliency (13 in at 100 dpi)
    assert main(["explain", str(tiny_run), "--grad-cam", "--image", "7", "--class", "3", "--out", str(tmp_path)]) == 0
    second = capsys.readouterr().out.strip()
    assert second.endswith("_class-3.png") or (name.endswith("_pred-3.png") and second == f"wrote {wrote}")


def test_explain_conv_writes_into_out(tmp_path, capsys):
    assert main(["explain", "conv", "--input", "5", "--kernel", "3", "--out", str(tmp_path / "figs")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'figs' / 'conv_5_3_valid_s1.png'}" in out
    assert (tmp_path / "figs" / "conv_5_3_valid_s1.png").is_file()


def test_history_keeps_steps_and_plot_draws_them(tiny_run, tmp_path, capsys):
    history = json.loads((tiny_run / "history.json").read_text())
    xs = [row[0] for row in history["steps"]]  # train_run keeps [epochs done, loss, accuracy] points
    assert xs == sorted(xs) and xs[-1] == len(history["loss"]) and len(xs) >= 10
    assert main(["plot", str(tiny_run), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "curves.png").is_file()
