"""Fine-tuning the pretrained backbone on a photo folder (`train --fine-tune`), its augmentation, and the rule that
decides between the pretrained backbone and a CNN from scratch (`transfer_decision`).

Photos are real (crops of scikit-image's chelsea the cat and cup of coffee); the references are the ImageNet
weights the backbone starts from, the head-only run of the same folder, and the torch module's own counts.
"""
from __future__ import annotations

import json

import numpy as np
import photo_support
import pytest
import torch
from PIL import Image

from cnnlab import cli
from cnnlab.backbones import load_pretrained
from cnnlab.cli.commands import build_parser
from cnnlab.cli.train import train_choices_of
from cnnlab.models import load_model
from cnnlab.runs import model_file
from cnnlab.runs.photos import PhotoOptions, train_photos
from cnnlab.spec.summary import summary_dict
from cnnlab.train.augment import random_resized_crop
from cnnlab.train.fine_tune import FineTuneOptions, fine_tune_epochs
from cnnlab.train.head import HeadOptions
from cnnlab.train.transfer import TransferDecision, TransferRequest, transfer_decision

skimage_data = pytest.importorskip("skimage.data")
LITE0_WEIGHTS, LITE0_BN_STATS, HEAD_2 = 3_371_008, 42_016, 1280 * 2 + 2


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """train/ 16 and test/ 8 crops a class (the head holds 20% of train/ out for validation)."""
    root = tmp_path_factory.mktemp("ft") / "cat_or_coffee"
    return photo_support.photo_folder(root, {"cat": skimage_data.chelsea(), "coffee": skimage_data.coffee()})


@pytest.fixture(scope="module")
def close_ups(tmp_path_factory):
    """The same photos as small crops (4-10% of the side): fur, cup, table, some of them alike, so the head alone
    leaves a validation loss the second stage can work on."""
    root = tmp_path_factory.mktemp("ft") / "close_ups"
    return photo_support.photo_folder(root, {"cat": skimage_data.chelsea(), "coffee": skimage_data.coffee()},
                                      keep=(0.04, 0.1))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache folder for the module: the photos' features are computed once, read back by the later runs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_DATA", str(tmp_path_factory.mktemp("cache")))
        yield


# an L2 far too strong (C 1e-4): a head near the class priors, which leaves the second stage room to work
WEAK_HEAD = PhotoOptions(steps=("lite0",), flip=False, head=HeadOptions(c_grid=(1e-4,)))


def _digits_folder(root):
    """Small gray images, as MNIST's: the seed CNN's kind of data."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_the_rule_photos_to_the_backbone_digits_and_chosen_models_from_scratch(photos, tmp_path):
    photo = transfer_decision(TransferRequest(str(photos)))
    assert photo.use and "median short side" in photo.reason and "--no-transfer" in photo.reason
    digits = transfer_decision(TransferRequest(str(_digits_folder(tmp_path / "digits"))))
    assert not digits.use and "small images: median short side 28 px" in digits.reason
    chose = transfer_decision(TransferRequest(str(photos), chosen=("--model", "--epochs")))
    assert not chose.use and "as chosen (--model, --epochs" in chose.reason
    assert transfer_decision(TransferRequest(str(photos), transfer=False)) == transfer_decision(
        TransferRequest(str(photos), transfer=False, chosen=("--model",)))  # refused: nothing else matters
    assert transfer_decision(TransferRequest("mnist")) == TransferDecision(False, "")  # a built-in set: nothing to say
    forced = transfer_decision(TransferRequest(str(tmp_path / "digits"), fine_tune=True))
    assert forced.use and "fine-tuned (--fine-tune)" in forced.reason  # asked for: even small images
    gray = transfer_decision(TransferRequest(str(photos)), gray=True)
    assert not gray.use and "all gray" in gray.reason and "--color rgb" not in gray.reason
    assert "--color rgb" in transfer_decision(TransferRequest(str(photos), transfer=True), gray=True).reason


@pytest.mark.parametrize("request_, message", [
    (TransferRequest("x", transfer=False, fine_tune=True), "cannot go with --no-transfer"),
    (TransferRequest("mnist", fine_tune=True), "'mnist' is not a folder"),
    (TransferRequest("mnist", transfer=True), "--transfer trains on a folder"),
])
def test_the_rule_refuses_contradictions(request_, message):
    with pytest.raises(ValueError, match=message):
        transfer_decision(request_)


def test_the_rule_refuses_a_forced_transfer_with_a_from_scratch_recipe(photos):
    with pytest.raises(ValueError, match=r"--fine-tune .* which --optimizer, --model would change"):
        transfer_decision(TransferRequest(str(photos), fine_tune=True, chosen=("--optimizer", "--model")))


def test_cli_flags_map_onto_the_rule_and_the_fine_tune_options(photos):
    def args(*flags):
        return train_choices_of(build_parser().parse_args(["train", "--data", str(photos), *flags]))
    assert args().transfer_request() == TransferRequest(str(photos))
    assert args("--model", "lenet", "--epochs", "3", "--early-stopping", "2", "--flip",
                "--color", "grayscale").transfer_request().chosen == (
        "--epochs", "--early-stopping", "--model", "--color grayscale", "--flip")
    tuned = args("--fine-tune", "--epochs", "3", "--lr", "3e-5", "--batch-size", "16", "--device", "cpu", "--seed", "2")
    assert tuned.transfer_request() == TransferRequest(str(photos), fine_tune=True)  # those flags set the stage
    assert tuned.fine_tune_options() == FineTuneOptions(epochs=3, lr=3e-5, batch_size=16)
    assert args().fine_tune_options() is None and args("--fine-tune").fine_tune_options() == FineTuneOptions()


def test_cli_says_why_it_refuses(photos, capsys):
    assert cli.main(["train", "--data", str(photos), "--fine-tune", "--optimizer", "sgd"]) == 1
    assert "--fine-tune trains a pretrained EfficientNet-Lite with its own recipe" in capsys.readouterr().err


def test_random_resized_crop_keeps_part_of_each_image_and_mirrors_about_half():
    ramp = torch.linspace(0, 1, 64).expand(32, 3, 64, 64).contiguous()  # value = horizontal position
    gen = torch.Generator().manual_seed(0)
    out = random_resized_crop(ramp, min_area=0.3, generator=gen)
    assert out.shape == ramp.shape
    span = out[:, 0, 0, -1] - out[:, 0, 0, 0]  # a crop's share of the width; negative: mirrored
    assert 0.42 < span.abs().min() and span.abs().max() <= 1 and (span.abs() < 0.9).sum() > 16  # sqrt(0.3 * 3/4) ~ 0.47
    assert 8 <= (span < 0).sum() <= 24
    same = random_resized_crop(ramp, min_area=1.0, ratio=(1.0, 1.0), flip=False)  # the whole image: unchanged
    torch.testing.assert_close(same, ramp, atol=1e-5, rtol=0)
    torch.testing.assert_close(random_resized_crop(ramp, 0.3, generator=torch.Generator().manual_seed(0)), out)
    with pytest.raises(ValueError, match="float"):
        random_resized_crop(ramp.to(torch.uint8))


def test_fine_tune_epochs_follow_the_data_size_and_options_are_checked():
    assert [fine_tune_epochs(n) for n in (26, 200, 500, 1000, 100_000)] == [10, 10, 4, 2, 2]
    with pytest.raises(ValueError, match="fine-tune lr must be a positive number, got 0"):
        FineTuneOptions(lr=0)
    with pytest.raises(ValueError, match="fine-tune epochs must be a positive whole number, got 0"):
        FineTuneOptions(epochs=0)


def test_fine_tune_trains_only_the_top_and_saves_a_trainable_backbone(photos, tmp_path, cache, capsys):
    """From a weak head the second stage lowers the validation loss, so it is kept."""
    lines: list[str] = []
    out, _, evaluation = train_photos(photos, tmp_path / "tuned", options=WEAK_HEAD,
                                      fine_tune_options=FineTuneOptions(epochs=1, batch_size=8, head_lr=1e-2),
                                      say=lines.append)
    said = "\n".join(lines)
    assert "fine-tune: stages 6-7 (5 MBConv blocks) + head conv, 2,644,384 weights" in said
    assert "Adam lr 0.0001 backbone, 0.01 head" in said and "1 epoch of batch 8" in said and "kept epoch 1 of 1" in said
    tuned = json.loads((out / "config.json").read_text())["transfer"]["fine_tune"]
    assert tuned["improved"] and tuned["val_loss_after"] < tuned["val_loss_before"]

    model = load_model(out)
    assert model.spec.layers[0].trainable
    info = summary_dict(model.spec)
    assert (info["trainable_params"], info["non_trainable_params"]) == (LITE0_WEIGHTS + HEAD_2, LITE0_BN_STATS)
    assert json.loads((out / "summary.json").read_text())["trainable_params"] == LITE0_WEIGHTS + HEAD_2
    module = model_file.read_model(out).module()
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    stats = sum(b.numel() for n, b in module.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert (trainable, stats) == (info["trainable_params"], info["non_trainable_params"])

    imagenet = load_pretrained("lite0")  # every weight and BN statistic (and batch count) the backbone started from
    saved = module[0].net.state_dict()
    top = ("stages.5.", "stages.6.", "head.")
    assert set(saved) == {k for k in imagenet if not k.startswith("classifier.")}  # (the run has no ImageNet top)
    changed = {k for k in saved if not torch.equal(saved[k], imagenet[k])}
    assert changed and all(k.startswith(top) and ".bn." not in k for k in changed)  # stem, stages 1-5, all BN: as they were
    assert all(any(k.startswith(t) for k in changed) for t in top)

    # the saved file alone gives the run's test metrics
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)  # the run scored fp32 features of the fine-tuned backbone
    assert evaluated["test_accuracy"] == evaluation.accuracy
    assert evaluated["test_loss"] == pytest.approx(evaluation.loss, abs=1e-4)
    cat = str(next((photos / "test" / "cat").iterdir()))
    assert cli.main(["predict", str(out), cat, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["class"] == "cat"


def test_fine_tune_that_makes_validation_worse_is_undone(photos, tmp_path, cache):
    """Learning rates of 10 wreck the network on the first step; the run must come out as the head-only one."""
    lines: list[str] = []
    tuned, _, _ = train_photos(photos, tmp_path / "tuned", options=WEAK_HEAD, say=lines.append,
                               fine_tune_options=FineTuneOptions(epochs=1, batch_size=8, lr=10, head_lr=10))
    record = json.loads((tuned / "config.json").read_text())["transfer"]["fine_tune"]
    assert not record["improved"] and not record["history"]["val_loss"][1] <= record["history"]["val_loss"][0]
    assert any("kept the head alone, backbone unchanged" in line for line in lines)
    saved = model_file.read_model(tuned)
    assert not saved.spec.layers[0].trainable
    imagenet = load_pretrained("lite0")  # the wrecked backbone was put back as it was
    for key, value in saved.module()[0].net.state_dict().items():
        torch.testing.assert_close(value, imagenet[key], rtol=0, atol=0)


def test_fine_tune_is_skipped_when_the_head_leaves_nothing_to_gain(photos, tmp_path, cache):
    """A nearly unpenalised head (C 1e4, fitted to a tight tolerance) reaches a validation loss of ~0 on these easy photos: no epoch could be
    kept, so none runs, and the backbone stays ImageNet's."""
    lines: list[str] = []
    strong = PhotoOptions(steps=("lite0",), flip=False, head=HeadOptions(c_grid=(1e4,), tol=1e-8, max_iter=1000))
    out, _, _ = train_photos(photos, tmp_path / "tuned", options=strong, say=lines.append,
                             fine_tune_options=FineTuneOptions(epochs=1, batch_size=8))
    printed = "\n".join(lines)
    assert "fine-tune: skipped, the head alone already has val loss 0.0000" in printed and "epoch 1/" not in printed
    assert not model_file.read_model(out).spec.layers[0].trainable


def test_cli_fine_tune_end_to_end(close_ups, tmp_path, cache, capsys):
    assert cli.main(["train", "--data", str(close_ups), "--fine-tune", "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert "then its top stages fine-tuned (--fine-tune)" in printed
    assert "+ head conv," in printed and "weights (BatchNorm frozen" in printed
    assert "Adam lr 0.0001 backbone, 0.001 head, cosine; 1 epoch of batch 32" in printed
    assert "fine-tune epoch 1/1: loss" in printed and "val_loss" in printed
    record = json.loads((tmp_path / "run" / "config.json").read_text())["transfer"]["fine_tune"]
    assert record["val_loss_after"] <= record["val_loss_before"]  # never worse than the head alone
    assert ("kept epoch 1 of 1" in printed) == record["improved"] != ("kept the head alone" in printed)
    model = model_file.read_model(tmp_path / "run")
    assert model.spec.layers[0].trainable == record["improved"]
    info, module = summary_dict(model.spec), model.module()
    assert info["trainable_params"] == sum(p.numel() for p in module.parameters() if p.requires_grad)
    cat = str(next((close_ups / "test" / "cat").iterdir()))
    assert cli.main(["predict", str(tmp_path / "run"), cat, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["class"] in ("cat", "coffee")
