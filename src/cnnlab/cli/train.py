"""`cnnlab train`: its flags, turned into typed choices for the core (recipe, data policy, session), and its report."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.train.config import MONITORS, PRECISIONS
from cnnlab.train.data_policy import AUGMENT_CHOICES, CLASS_WEIGHT_MODES
from cnnlab.train.optim import OPTIMIZERS, SCHEDULES

if TYPE_CHECKING:
    from cnnlab.train.plan import TrainChoices, TrainPlan

# Settings a resumed run may change: how it runs, not what it trains.
RESUME_MAY_SET = {"resume", "quiet", "nproc", "checkpoint_every", "device"}
# Augmentation flags -> AugmentOptions fields
AUGMENT_FLAGS = {"shift": "shift", "rotation": "rotation", "zoom": "zoom", "flip": "horizontal_flip",
                 "brightness": "brightness", "contrast": "contrast"}


def _image_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an image size like 64x64 (height x width), got {text!r}") from None
    if min(h, w) < 1:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text!r}")
    return h, w


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="mnist", help="built-in dataset name or image folder (default: %(default)s)")
    p.add_argument("--data-dir", help="folder holding the dataset's files, when not in the usual places")
    p.add_argument("--model", default="seed", help="zoo name, JSON model file or compact spec (default: seed)")
    p.add_argument("--epochs", type=int, help="passes over the training data (default 1)")
    p.add_argument("--batch-size", type=int, help="images per step (default 128)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="how the weights are updated (default: adam)")
    p.add_argument("--lr", type=float, help="learning rate; given, it is used as is (constant schedule)")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="how the learning rate changes during training (default: onecycle, or constant with --lr)")
    p.add_argument("--label-smoothing", type=float, metavar="EPS",
                   help="soften the targets: 1-EPS+EPS/K for the true class, EPS/K for the others (default 0.1); it "
                        "raises the training loss to a floor above 0 (printed), not the test loss")
    p.add_argument("--validation-split", type=float, help="hold out this fraction of the training data")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop after PATIENCE epochs without improvement")
    p.add_argument("--monitor", choices=MONITORS, help="what --early-stopping watches (default val_loss)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed repeats a CPU run exactly")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default auto: a CUDA GPU when there is one)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="number format of the arithmetic (default auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32)")
    p.add_argument("--subset", type=int, metavar="N", help="train on N training images only (quick experiments)")
    p.add_argument("--out", help="run folder to create (default runs/<model>-<data>-<time>)")
    p.add_argument("--quiet", action="store_true", help="print only the final line")

    g = p.add_argument_group("image folders (--data DIR)")
    g.add_argument("--image-size", type=_image_size, metavar="HxW",
                   help="resize every image to this (default: chosen from the data and printed)")
    g.add_argument("--color", choices=["auto", "rgb", "grayscale"], default="auto",
                   help="colour mode (default auto: grayscale when every image is gray)")
    g.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="decode once into a file in the cache folder and read batches from it instead of holding "
                        "the images in memory (default: only when they would need over half the free memory)")
    g.add_argument("--transfer", action=argparse.BooleanOptionalAction, default=None,
                   help="train a logistic-regression head on a frozen ImageNet EfficientNet-Lite, backbone and L2 chosen by "
                        "cross-validation (default: for colour photos, "
                        "median short side over 64 px, when no --model or training flags are given)")
    g.add_argument("--fine-tune", action="store_true",
                   help="after the head, also train the backbone's top stages on augmented photos for a few epochs "
                        "(CPU: several times the head's time); kept only when it lowers the validation loss. "
                        "--epochs, --batch-size and --lr (the backbone's) then set this stage")
    g.add_argument("--class-weight", choices=CLASS_WEIGHT_MODES, default="auto",
                   help="weight the loss per class: auto (default) does it when the largest class has more than "
                        "1.5x the images of the smallest; balanced always; none never")
    a = p.add_argument_group("augmentation (random changes to each training batch)")
    a.add_argument("--augment", nargs="?", const="auto", choices=AUGMENT_CHOICES,
                   help="turn it on: digits (shift, rotation, zoom) or photos (also flips, brightness, contrast); "
                        "auto picks digits for grayscale data, photos for colour")
    a.add_argument("--shift", type=float, metavar="FRACTION", help="largest shift, a fraction of the size (0.1)")
    a.add_argument("--rotation", type=float, metavar="DEGREES", help="largest rotation either way (10)")
    a.add_argument("--zoom", type=float, metavar="FRACTION", help="largest zoom in or out (0.1)")
    a.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (off for digits, on for photos)")
    a.add_argument("--brightness", type=float, metavar="DELTA", help="largest brightness change, pixels in [0, 1]")
    a.add_argument("--contrast", type=float, metavar="FRACTION", help="largest contrast change")
    g = p.add_argument_group("long runs: checkpoints, resuming, reproducibility, several processes")
    g.add_argument("--resume", metavar="RUN", help="continue an interrupted run (runs/NAME) from its last checkpoint; "
                   "every setting comes from that run")
    g.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="checkpoint every STEPS steps as well as after each epoch (default: after each epoch)")
    g.add_argument("--deterministic", action="store_true",
                   help="bit-identical weights when the same command runs again (CPU; CUDA where PyTorch can)")
    g.add_argument("--nproc", type=int, metavar="N", help="train in N processes on this machine with "
                   "DistributedDataParallel (runs torchrun); --batch-size stays the global batch")
    p.set_defaults(train_defaults=vars(p.parse_args([])))  # last: what --resume compares the flags with


def cmd_train(args: argparse.Namespace) -> int:
    from cnnlab.runs.session import DataSource, session
    from cnnlab.train.distributed import launch, under_torchrun
    from cnnlab.train.plan import plan_training

    if args.nproc and not under_torchrun():
        return launch(args.argv, args.nproc)  # torchrun runs this same command in --nproc processes
    with session(args.device) as run:  # the DDP group under torchrun; checkpoints; --resume
        if args.resume:
            _refuse_new_settings(args)
            resumed = run.resume(args.resume, args.checkpoint_every, args.device)
            return _train_and_report(args, run, resumed.data, resumed.spec, resumed.config, resumed.out,
                                     resumed.model_name, None)
        say = _printer(args.quiet or not run.is_main)
        choices = train_choices_of(args)
        plan = plan_training(choices)
        for line in plan.reasons:
            say(line)
        if plan.transfer:
            if (done := _train_transfer(args, plan, say)) is not None:
                return done
            plan = plan_training(choices, gray=True)  # the photos turned out gray: from scratch
            for line in plan.reasons:
                say(line)
        assert plan.data is not None and plan.spec is not None and plan.config is not None
        source = DataSource(args.data, args.data_dir, choices.folder_options(), args.subset)
        out = _new_run_folder(args, plan)
        return _train_and_report(args, run, plan.data, plan.spec, plan.config, out, plan.model_name, source)


def _new_run_folder(args: argparse.Namespace, plan: TrainPlan) -> Path:
    """--out, or runs/<model>-<data>-<time> as the web names it (`TrainPlan.run_name`); never an existing one."""
    from cnnlab.runs import run_folder
    out = Path(args.out) if args.out else run_folder.default_run_dir(*plan.run_name())
    if out.exists():
        raise FileExistsError(f"run folder {out} already exists; choose another --out")
    return out


def _train_transfer(args: argparse.Namespace, plan: TrainPlan, say: Any) -> int | None:
    """Train a photo folder on the pretrained backbone, as the plan says; None: the photos were gray."""
    from cnnlab.runs.photos import train_photos

    out = _new_run_folder(args, plan)
    result = train_photos(args.data, out, seed=args.seed, color=args.color, fine_tune_options=plan.choices.fine_tune_options(),
                          say=say, device=args.device or "auto")
    if result is None:
        return None
    folder, _, evaluation = result
    print(f"test accuracy {evaluation.accuracy:.4f}  test loss {evaluation.loss:.4f}  run saved to {folder}")
    return 0


def train_choices_of(args: argparse.Namespace) -> TrainChoices:
    """The flags as typed, front-end-neutral choices for `cnnlab.train.plan` (None: not given)."""
    from cnnlab.train.plan import TrainChoices

    augment = {field: getattr(args, flag) for flag, field in AUGMENT_FLAGS.items() if getattr(args, flag) is not None}
    runs_as = tuple(flag for flag, given in (("--nproc", bool(args.nproc)),
                                             ("--checkpoint-every", args.checkpoint_every is not None)) if given)
    return TrainChoices(data=args.data, data_dir=args.data_dir, model=args.model, seed=args.seed,
                        **train_choices(args), transfer=args.transfer, fine_tune=args.fine_tune,
                        class_weight=args.class_weight, augment=args.augment, augment_options=augment,
                        image_size=args.image_size, color=args.color, stream=args.stream, subset=args.subset,
                        runs_as=runs_as)


def train_choices(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields set by flags (None: not given, the recipe decides)."""
    return {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
            "schedule": args.schedule, "label_smoothing": args.label_smoothing,
            "validation_split": args.validation_split, "early_stopping_patience": args.early_stopping,
            "monitor": args.monitor, "device": args.device, "deterministic": args.deterministic or None,
            "precision": args.precision}


def _refuse_new_settings(args: argparse.Namespace) -> None:
    changed = sorted(k for k, v in args.train_defaults.items()
                     if k not in RESUME_MAY_SET and getattr(args, k, v) != v)
    if changed:
        flags = ", ".join("--" + k.replace("_", "-") for k in changed)
        raise ValueError(f"--resume takes every setting from the interrupted run; drop {flags}")


def _printer(quiet: bool):
    return (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))


def _train_and_report(args: argparse.Namespace, run: Any, data: Any, spec: Any, config: Any, out: Path,
                      model_name: str, source: Any) -> int:
    from cnnlab.spec.summary import summary_text
    from cnnlab.train.fit import check_trainable, resolve_device
    from cnnlab.train.progress import progress_callbacks, smoothed_loss_floor

    device = resolve_device(config.device)  # bad settings fail here, before any folder is made
    check_trainable(config, has_validation=data.x_val is not None)
    quiet = args.quiet or not run.is_main  # under DDP only rank 0 talks
    say = _printer(quiet)
    if args.resume:
        say(run.describe_resume())
    say(f"data: {data.name} ({len(data.x_train):,} train / {len(data.x_test):,} test images, "
        f"{'x'.join(map(str, data.input_shape))}, {len(data.class_names)} classes) from {data.source}")
    say(summary_text(spec))
    say(f"training: {config.epochs} epoch{'s' * (config.epochs != 1)}, batch {config.batch_size}, {config.optimizer} "
        f"{config.resolved_schedule} lr {config.peak_lr():g}, device {device}, seed {config.seed}"
        + (f", {run.dist.world_size} processes ({config.batch_size / run.dist.world_size:g} images each per step)"
           if run.dist else ""))
    if config.label_smoothing > 0:
        floor = smoothed_loss_floor(config.label_smoothing, len(data.class_names))
        say(f"note: the training loss includes label smoothing {config.label_smoothing:g}: its floor is about "
            f"{floor:.3f} (a perfect prediction for {len(data.class_names)} classes), so it reads higher than the "
            "test loss; --label-smoothing 0 turns it off")
    on_step, on_epoch, close = progress_callbacks(0 if quiet else "auto", config.epochs)
    try:
        folder, history, evaluation = run.train(data, spec, config, out, model_name, source=source,
                                                checkpoint_every=args.checkpoint_every, on_step=on_step,
                                                on_epoch=on_epoch)
    finally:
        close()
    if evaluation is None:  # a DDP rank other than 0: rank 0 reports
        return 0
    seconds = sum(history.history.get("seconds", []))
    print(f"test accuracy {evaluation.accuracy:.4f}  test loss {evaluation.loss:.4f}  "
          f"(trained {seconds:.1f}s)  run saved to {folder}")
    from cnnlab.train.short_runs import near_chance_warning
    warning = near_chance_warning((history.history.get("accuracy") or [None])[-1], evaluation.accuracy,
                                  evaluation.y_true)
    if warning:
        print(f"cnnlab: {warning}")
    report = getattr(data, "report", None)
    if args.quiet and report is not None and report.bad_files:  # otherwise listed with the folder report
        print(report.bad_files_text())
    return 0
