"""`cnnlab explain` and `cnnlab plot`: arguments, and glue from a run folder to explain + plots."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnlab import explain
from cnnlab.datasets.dataset import Dataset
from cnnlab.explain import plots
from cnnlab.runs import model_file, run_folder
from cnnlab.runs.open_model import OpenedModel, open_model
from cnnlab.spec.summary import summary_dict


def add_explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder, .safetensors or .keras file, imagenet (the pretrained classifier); "
                   "or the word 'conv' for the conv arithmetic")
    p.add_argument("--filters", metavar="LAYER", help="draw the learned kernels of this conv layer (e.g. conv2d)")
    p.add_argument("--maps", metavar="LAYERS", help="response maps of 'all' or comma-separated layers for --image "
                   "(a pretrained backbone: each of its stages; one of them: efficientnet_lite0/block3)")
    p.add_argument("--image", help="a test-set index (train with --split train) or an image file")
    p.add_argument("--split", choices=["train", "test"], default="test",
                   help="the split --image N is taken from: test (default) or train")
    p.add_argument("--grad-cam", action="store_true", help="Grad-CAM and saliency of --image, in one figure")
    p.add_argument("--class", dest="class_", help="class name or index for Grad-CAM (default: the predicted one)")
    p.add_argument("--top-losses", type=int, metavar="K",
                   help="the K test images with the largest loss (the least probability on their true class)")
    p.add_argument("--out", metavar="DIR", help="output folder for the PNGs (default: the run folder's explain/; "
                   "for 'explain conv' the current folder)")
    conv = p.add_argument_group("explain conv (no model needed)")
    conv.add_argument("--input", type=int, default=5, help="input side (default 5)")
    conv.add_argument("--kernel", type=int, default=3, help="kernel side (default 3)")
    conv.add_argument("--padding", choices=["valid", "same"], default="valid",
                      help="valid (default: no padding) or same (zeros around, output side = input side / stride)")
    conv.add_argument("--stride", type=int, help="step between windows (default 1 for a conv, the pool size for --pool)")
    conv.add_argument("--pool", type=int, metavar="SIZE", help="explain max pooling of this size instead")
    conv.add_argument("--in-channels", type=int, help="input channels; with --filters-count, also print the conv's parameter count")
    conv.add_argument("--filters-count", type=int, dest="n_filters",
                      help="output channels (filters); with --in-channels, also print the parameter count")


def add_plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder (or the model file inside one)")
    p.add_argument("--out", metavar="DIR", help="output folder for curves.png and the confusion PNGs (default: the run folder)")


def run(args: argparse.Namespace) -> int:
    if args.run == "conv":
        return _conv(args)
    saved = open_model(args.run)
    module = saved.module
    out = Path(args.out) if args.out else _run_dir(args.run) / "explain"
    wrote: list[Path] = []
    if args.filters:
        kernels = explain.filters(module, args.filters)
        wrote.append(plots.save_png(plots.filters_grid(kernels, args.filters), out / f"filters_{args.filters}.png"))
    if args.maps or args.grad_cam:
        if args.image is None:
            raise ValueError("--maps and --grad-cam need --image (a dataset index or an image file)")
        image, label, tag, truth = _image(args, saved)
        if args.maps:
            wrote += _maps(module, saved, image, args.maps, out, label)
        if args.grad_cam:
            wrote.append(_grad_cam(module, saved, image, args.class_, out, tag, truth))
    if args.top_losses:
        data = _dataset(args, saved, "--top-losses")
        evaluation = run_folder.evaluate(module, saved.spec, data.x_test, data.y_test, saved.class_names)
        top = explain.top_losses(evaluation.probs, data.y_test, args.top_losses)
        wrote.append(plots.save_png(plots.top_losses_grid(data.x_test, top, saved.class_names), out / "top_losses.png"))
        for i, t, p, prob in zip(top.index, top.y_true, top.y_pred, top.prob):
            print(f"test #{i}: true {saved.class_names[t]}, predicted {saved.class_names[p]} ({prob:.3f})")
    if not wrote:
        raise ValueError("say what to explain: --filters LAYER, --maps all --image N, --grad-cam --image N, "
                         "or --top-losses K")
    for path in wrote:
        print(f"wrote {path}")
    return 0


def _dataset(args: argparse.Namespace, saved: OpenedModel, what: str) -> Dataset:
    if saved.run_folder is None:  # no dataset recorded
        raise ValueError(f"{what} needs the dataset of a run folder, and {args.run} is not one; "
                         "give --image an image file instead")
    return run_folder.dataset_of_run(saved.run_folder, preprocessing=saved.preprocessing)


def class_index(value: str, class_names: Sequence[str]) -> int:
    """--class as a class name or index (`show` and `explain`)."""
    if value in class_names:
        return list(class_names).index(value)
    if value.isdigit() and int(value) < len(class_names):
        return int(value)
    raise ValueError(f"--class {value!r} is not one of the classes {', '.join(class_names)}")


def _run_dir(run: str) -> Path:
    return Path(run) if Path(run).is_dir() else Path(run).parent


def _image(args: argparse.Namespace, saved: OpenedModel) -> tuple[np.ndarray, str, str, str | None]:
    """(image, label text for titles, tag for file names, true class name or None for a file)."""
    if args.image.isdigit():
        data = _dataset(args, saved, f"--image {args.image} (a dataset index)")
        x, y = (data.x_train, data.y_train) if args.split == "train" else (data.x_test, data.y_test)
        i = int(args.image)
        if i >= len(x):
            raise ValueError(f"--image {i} is out of range: the {args.split} split has {len(x):,} images")
        truth = saved.class_names[int(y[i])]
        return x[i], f"{args.split} #{i}, label {truth}", f"{args.split}-{i}", truth
    from cnnlab.datasets.image_files import load_image_for
    name = Path(args.image).name
    tag = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(args.image).stem)[:60]
    return load_image_for(args.image, saved.spec.input_shape, saved.preprocessing), name, tag, None


def _maps(module, saved: OpenedModel, image: np.ndarray, layers: str, out: Path, label: str) -> list[Path]:
    wanted = None if layers == "all" else [name.strip() for name in layers.split(",")]
    shapes = {row["name"]: row["output_shape"] for row in summary_dict(saved.spec)["layers"]}
    stages = explain.backbone_stages(module)  # a backbone's stages are maps the summary has no row for
    wrote = []
    for name, fmap in explain.feature_maps(module, image, wanted):
        title = f"{name}: {stages[name]} ({label})" if name in stages else f"{name} ({label})"
        fig = plots.feature_maps_grid(title, fmap, shapes.get(name))
        wrote.append(plots.save_png(fig, out / f"maps_{name.replace('/', '-')}.png"))
    return wrote


def _grad_cam(module, saved: OpenedModel, image: np.ndarray, class_: str | None, out: Path,
              tag: str, truth: str | None) -> Path:
    from cnnlab.runs.predict import class_probabilities
    names = saved.class_names
    probs = class_probabilities(module, np.asarray(image)[None])[0]
    predicted = int(probs.argmax())
    index = predicted if class_ is None else class_index(class_, names)
    heat, sal = explain.grad_cam(module, image, index), explain.saliency(module, image, index)
    title = (f"{tag.replace('-', ' #', 1) if truth is not None else tag}: "
             + (f"true {truth}, " if truth is not None else "")
             + f"predicted {names[predicted]} ({float(probs[predicted]):.1%})"
             + (f"; maps for class {names[index]} ({float(probs[index]):.1%})" if index != predicted else ""))
    name = f"grad_cam_{tag}_pred-{_safe(names[predicted])}" + (f"_class-{_safe(names[index])}" if index != predicted else "")
    return plots.save_png(plots.grad_cam_overlay(image, heat, title, saliency=sal), out / f"{name}.png")


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)[:40]


def _conv(args: argparse.Namespace) -> int:
    from cnnlab.spec import conv_arithmetic as ca
    out = Path(args.out or ".")
    if args.pool:
        print(ca.explain_pool(args.input, args.pool, args.padding, args.stride))
        fig = plots.conv_explainer(args.input, args.pool, args.padding, args.stride, pool=True)
        name = f"pool_{args.input}_{args.pool}_{args.padding}_s{args.stride or args.pool}.png"
    else:
        print(ca.explain_conv(args.input, args.kernel, args.padding, args.stride or 1, args.in_channels, args.n_filters))
        fig = plots.conv_explainer(args.input, args.kernel, args.padding, args.stride or 1)
        name = f"conv_{args.input}_{args.kernel}_{args.padding}_s{args.stride or 1}.png"
    print(f"wrote {plots.save_png(fig, out / name).resolve()}")
    return 0


def plot_run(args: argparse.Namespace) -> int:
    model = open_model(args.run)
    folder = model.run_folder
    if folder is None:
        raise ValueError(f"plot draws a run folder's history and metrics, and {args.run} is not in a run folder")
    out = Path(args.out) if args.out else folder
    history, steps = run_folder.read_history(folder), run_folder.read_steps(folder)
    m = model_file.read_json(folder / "metrics.json")
    cm = np.asarray(m["confusion_matrix"])
    names = model.class_names
    paths = [plots.save_png(plots.training_curves(history, steps=steps), out / "curves.png"),
             plots.save_png(plots.confusion(cm, names), out / "confusion.png"),
             plots.save_png(plots.confusion(cm, names, normalize=True), out / "confusion_normalized.png")]
    for path in paths:
        print(f"wrote {path}")
    return 0
