"""The `cnnlab` command line: parse arguments, call the core, print. No logic of its own."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from cnnlab.cli import predict_folder as predict_folder_cli
from cnnlab.errors import USER_ERRORS


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape like 28x28x1, got {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _grid(text: str) -> tuple[int, int]:
    shape = _shape(text)
    if len(shape) != 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected a grid like 8x8, got {text!r}")
    return shape  # type: ignore[return-value]


# --- commands -------------------------------------------------------------------------------
def cmd_summary(args: argparse.Namespace) -> int:
    from cnnlab.runs.open_model import names_a_model, open_model
    from cnnlab.spec import zoo
    from cnnlab.spec.summary import summary_dict, summary_text

    if names_a_model(args.model):
        spec = open_model(args.model).spec
    else:
        spec, _ = zoo.resolve(args.model)
        if spec.input_shape is None:
            spec = spec.with_input_shape(args.input_shape)
    print(json.dumps(summary_dict(spec), indent=2) if args.json else summary_text(spec, style=args.style))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cnnlab.runs import run_folder
    from cnnlab.runs.open_model import open_model

    model = open_model(args.run)
    data = run_folder.dataset_of_run(model.run_folder, args.data, args.data_dir, model.preprocessing)
    evaluation = run_folder.evaluate(model.module, model.spec, data.x_test, data.y_test, model.class_names)
    if args.json:
        print(json.dumps(evaluation.to_dict(), indent=2))
    else:
        print(run_folder.metrics_text(evaluation))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cnnlab.datasets.image_files import load_image_for, save_input_png
    from cnnlab.printable import printable
    from cnnlab.runs.open_model import open_model
    from cnnlab.runs.predict import class_probabilities, top_k

    if predict_folder_cli.wants_folder_mode(args):
        return predict_folder_cli.run(args)
    model = open_model(args.run)  # a run folder, a model file, or "imagenet": the pretrained classifier
    images = np.stack([load_image_for(path, model.spec.input_shape, model.preprocessing) for path in args.images])
    if args.show_input:  # the exact pixels the model sees, one PNG per image
        out = Path(args.show_input)
        for i, (path, image) in enumerate(zip(args.images, images)):
            target = out if len(images) == 1 else out.with_name(f"{out.stem}-{i}-{Path(path).stem}{out.suffix or '.png'}")
            print(f"model input for {path} ({'x'.join(map(str, image.shape))}) written to {save_input_png(image, target)}")
    tops = top_k(class_probabilities(model.module, images), model.class_names, args.top_k)
    results = [{"image": str(path), "top": top} for path, top in zip(args.images, tops)]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:  # names escaped: a file or class name must not drive the terminal (cnnlab.printable)
            print(f"{printable(r['image'])}: " + ", ".join(f"{printable(t['class'])} {t['probability']:.3f}"
                                                          for t in r["top"]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from cnnlab.cli.explain import class_index
    from cnnlab.datasets.registry import load_any
    from cnnlab.explain import plots

    data = load_any(args.data, args.data_dir)
    x, y = (data.x_train, data.y_train) if args.split == "train" else (data.x_test, data.y_test)
    if args.index is not None:
        if not 0 <= args.index < len(x):
            raise ValueError(f"--index {args.index} is out of range: the {args.split} split has {len(x):,} images")
        chosen, rows, cols = np.array([args.index]), 1, 1
    else:
        rows, cols = args.grid
        chosen = np.arange(len(x)) if args.class_ is None else np.flatnonzero(y == class_index(args.class_, data.class_names))
        chosen = chosen[:rows * cols]
    title = f"{data.name} {args.split}" + (f" #{args.index}" if args.index is not None else "")
    fig = plots.sample_grid(x[chosen], y[chosen], list(data.class_names), rows=rows, cols=cols, title=title)
    out = plots.save_png(fig, args.out)
    labels = ", ".join(data.class_names[int(v)] for v in y[chosen][:10])
    print(f"wrote {out} ({len(chosen)} image{'s' * (len(chosen) != 1)}; labels {labels}{'...' if len(chosen) > 10 else ''})")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from cnnlab.datasets.registry import describe_all

    rows = describe_all(args.data_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']:<15} {row['status']:<13} {row['where']}")
        print(f"{'':<15} {row['description']}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from cnnlab.cli import explain as explain_cli
    return explain_cli.run(args)


def cmd_plot(args: argparse.Namespace) -> int:
    from cnnlab.cli import explain as explain_cli
    return explain_cli.plot_run(args)


def cmd_data(args: argparse.Namespace) -> int:
    from cnnlab.cli import data as data_cli
    return data_cli.run(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from cnnlab.cli import serve as web_cli
    return web_cli.run(args)


# --- parser ---------------------------------------------------------------------------------
def _add_data(p: argparse.ArgumentParser, default: str | None = "mnist") -> None:
    p.add_argument("--data", default=default, help="built-in dataset name or image folder (default: "
                   + (f"{default})" if default else "the dataset the run was trained on)"))
    p.add_argument("--data-dir", help="folder holding the dataset's files, when not in the usual places")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnlab", description="Train, summarise and look inside convolutional "
                                     "neural networks on MNIST and your own image folders.")
    parser.add_argument("--version", action="version", version=f"cnnlab {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict[str, Callable[[argparse.Namespace], int]] = {}

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        commands[name] = fn
        return sub.add_parser(name, help=help, description=help)

    from cnnlab.cli import data as data_cli
    from cnnlab.cli import export as export_cli
    from cnnlab.cli import train as train_cli
    train_cli.add_train_arguments(add("train", train_cli.cmd_train, "train a model and save a run folder (defaults: the seed CNN on MNIST)"))

    p = add("summary", cmd_summary, "print a model's layers, output shapes and parameter counts as Keras does")
    p.add_argument("--model", default="seed", help="zoo name, JSON file, compact spec; or a model: run folder, "
                   ".safetensors or .keras file, imagenet")
    p.add_argument("--input-shape", type=_shape, default=(28, 28, 1), help="HxWxC when the model has none (28x28x1)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (layers, shapes, parameter counts)")
    p.add_argument("--style", choices=["keras3", "keras2"], default="keras3",
                   help="keras3 (default): Keras 3's box table; keras2: the plain table Keras 2 printed")

    p = add("evaluate", cmd_evaluate, "test accuracy, loss, per-class report and confusion matrix of a run")
    p.add_argument("run", help="run folder, .safetensors or .keras model file, or imagenet (with --data)")
    _add_data(p, default=None)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON (as metrics.json holds them)")

    p = add("predict", cmd_predict, "classify image files with a trained model")
    p.add_argument("run", help="run folder, .safetensors or .keras model file, or imagenet (the pretrained "
                   "EfficientNet-Lite0's 1000 classes, no training; imagenet-lite1, imagenet-lite2: the larger "
                   "Lite1 and Lite2)")
    p.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, ...) or folders (walked recursively)")
    p.add_argument("--top-k", type=_positive, default=3, help="how many classes to list (default 3)")
    p.add_argument("--json", action="store_true", help="print the top classes of each image as JSON")
    p.add_argument("--show-input", metavar="OUT.png", help="also write the exact input the model saw as a PNG "
                   "(OUT-<i>-<name>.png for several images)")
    predict_folder_cli.add_folder_arguments(p)

    p = add("show", cmd_show, "draw dataset samples with their labels into a PNG")
    p.add_argument("data", nargs="?", default="mnist", help="dataset name or image folder (default mnist)")
    p.add_argument("--data-dir", help="folder holding the dataset's files, when not in the usual places")
    p.add_argument("--index", type=int, help="one image by its index")
    p.add_argument("--grid", type=_grid, default=(4, 8), help="rows x cols (default 4x8)")
    p.add_argument("--split", choices=["train", "test"], default="train",
                   help="the split the images come from: train (default) or test")
    p.add_argument("--class", dest="class_", help="only images of this class (name or index)")
    p.add_argument("--out", default="samples.png", help="PNG file to write (default: samples.png here)")

    p = add("datasets", cmd_datasets, "list the built-in datasets and where each was found")
    p.add_argument("--data-dir", help="also look for the datasets' files in this folder")
    p.add_argument("--json", action="store_true", help="print the listing as JSON")

    from cnnlab.cli.explain import add_explain_arguments, add_plot_arguments
    add_explain_arguments(add("explain", cmd_explain, "look inside a model: filters, response maps, Grad-CAM, "
                              "top losses; or `explain conv` for the conv arithmetic"))
    add_plot_arguments(add("plot", cmd_plot, "training curves and confusion matrices of a run as PNGs"))
    data_cli.add_data_arguments(add("data", cmd_data, "check an image folder (`data check DIR`) or export a built-in "
                           "dataset as image files (`data export mnist --out DIR`)"))
    sub.add_parser("bench", help="time to 99%% MNIST accuracy: cnnlab vs plain PyTorch vs Keras (cnnlab bench --help)")
    from cnnlab.cli.serve import add_serve_arguments
    add_serve_arguments(add("serve", cmd_serve, "the local web app: draw a digit or upload a photo, see every layer's "
                            "response, train and watch live (needs the web extra)"))
    from cnnlab.cli import similar as similar_cli
    similar_cli.add_similar_arguments(add("similar", similar_cli.cmd_similar, "the images of a folder most like one "
                                          "image, by a pretrained backbone's embeddings"))
    export_cli.add_export_arguments(add("export", export_cli.cmd_export, "write a trained model as ONNX or TorchScript for deployment"))
    parser.set_defaults(commands=commands)
    return parser


def _version() -> str:
    from cnnlab import __version__
    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # the benchmark parses its own options (cnnlab bench --help)
        from cnnlab.bench import mnist_speed
        return _run(lambda: mnist_speed.main(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv)  # `train --nproc` re-runs the same command
    if not args.command:
        parser.print_help()
        return 2
    return _run(lambda: args.commands[args.command](args))


def _run(command: Callable[[], int]) -> int:
    """Run a command; expected failures become one line on stderr and a non-zero exit code."""
    try:
        return command()
    except KeyboardInterrupt as exc:  # TrainingInterrupted says where its checkpoint is
        print(f"cnnlab: {str(exc) or 'interrupted; no run folder was written'}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cnnlab evaluate RUN | head`: the reader has gone, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush is quiet too
        return 1
    except USER_ERRORS as exc:
        from cnnlab.printable import printable
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"cnnlab: error: {printable(message)}", file=sys.stderr)  # a name in it must not drive the terminal
        return 1


if __name__ == "__main__":
    sys.exit(main())
