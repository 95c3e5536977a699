"""`cnnlab export`, and what `cnnlab train` adds for long runs: checkpoints, --resume, --deterministic, --nproc."""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from cnnlab.cli.data import folder_options
from cnnlab.runs.model_file import ModelFileError
from cnnlab.train.checkpoints import Checkpointer, TrainingInterrupted, final_folder, partial_folder, position
from cnnlab.train.distributed import Distributed, launch, under_torchrun

# Settings a resumed run may change: how it runs, not what it trains.
RESUME_MAY_SET = {"resume", "quiet", "nproc", "checkpoint_every", "device"}


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("long runs: checkpoints, resuming, reproducibility, several processes")
    g.add_argument("--resume", metavar="RUN", help="continue an interrupted run (runs/NAME) from its last checkpoint; "
                   "every setting comes from that run")
    g.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="checkpoint every STEPS steps as well as after each epoch (default: after each epoch)")
    g.add_argument("--deterministic", action="store_true",
                   help="bit-identical weights when the same command runs again (CPU; CUDA where PyTorch can)")
    g.add_argument("--nproc", type=int, metavar="N", help="train in N processes on this machine with "
                   "DistributedDataParallel (runs torchrun); --batch-size stays the global batch")
    p.set_defaults(train_defaults=vars(p.parse_args([])))


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    from cnnlab.runs.export import FORMATS, OPSET
    p.add_argument("run", help="run folder or .safetensors model file")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="default onnx")
    p.add_argument("--out", help="file to write (default: model.onnx / model.torchscript.pt in the run folder)")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset (default %(default)s)")


def cmd_export(args: argparse.Namespace) -> int:
    from cnnlab.runs.export import INPUT_DOC, export
    out = export(args.run, args.format, args.out, args.opset)
    print(f"wrote {out} ({args.format}{f', opset {args.opset}' if args.format == 'onnx' else ''}); "
          f"input: {INPUT_DOC}; outputs: logits, probabilities")
    return 0


def launch_processes(args: argparse.Namespace) -> int:
    """`cnnlab train --nproc N ...`: the same command in N processes under torchrun."""
    return launch(args.argv, args.nproc)


class Session:
    """One `cnnlab train` process: its place in a DDP group (if any) and its run's checkpoints."""

    def __init__(self, args: argparse.Namespace, dist: Distributed | None):
        self.args, self.dist = args, dist
        self.checkpoint: Checkpointer | None = None

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.is_main

    def resume(self) -> tuple[Any, Any, Any, Path, str]:
        """(data, spec, config, out, model name) of the interrupted run `--resume RUN`."""
        from cnnlab.datasets.registry import load_any
        from cnnlab.spec.layers import ModelSpec
        from cnnlab.train.config import TrainConfig

        changed = sorted(k for k, v in self.args.train_defaults.items()
                         if k not in RESUME_MAY_SET and getattr(self.args, k, v) != v)
        if changed:
            flags = ", ".join("--" + k.replace("_", "-") for k in changed)
            raise ValueError(f"--resume takes every setting from the interrupted run; drop {flags}")
        out = final_folder(self.args.resume)
        if out.exists():
            raise FileExistsError(f"run {out} is already complete; remove {partial_folder(out)} if it is left over")
        self.checkpoint, info = Checkpointer.open(out, dist=self.dist)
        try:
            spec = ModelSpec.from_dict(info["spec"])
            options = dict(info["train"])
            if self.args.device is not None:
                options["device"] = self.args.device
            config = TrainConfig(**options)
            every = self.args.checkpoint_every
            self.checkpoint.every = int(info.get("checkpoint_every", 0)) if every is None else every
            options = dict(info.get("folder_options") or {})
            if options.get("image_size"):
                options["image_size"] = tuple(options["image_size"])  # JSON made the (H, W) pair a list
            data = load_any(info["data"], info.get("data_dir"), **options)
            if info.get("subset"):
                data = data.subset(int(info["subset"]))
        except (KeyError, TypeError) as exc:
            raise ModelFileError(f"{self.checkpoint.folder}: damaged run.json ({type(exc).__name__}: {exc})") from None
        return data, spec, config, out, str(info.get("model", "model"))

    def checkpointer(self, data: Any, spec: Any, config: Any, out: Path, model_name: str) -> Checkpointer:
        """The run's checkpoints: reopened when resuming, else a new `out.partial/` (checked writable now)."""
        from cnnlab.spec.summary import summary_dict
        if self.dist is not None:
            n_train = len(data.x_train) - int(len(data.x_train) * config.validation_split)
            self.dist.check_batches(n_train, config.batch_size)
        if self.checkpoint is None:
            info = {"format_version": 1, "data": self.args.data, "data_dir": self.args.data_dir,
                    "folder_options": folder_options(self.args), "subset": self.args.subset, "model": model_name, "spec": spec.to_dict(),
                    "train": config.to_dict(), "checkpoint_every": self.args.checkpoint_every or 0}
            params = summary_dict(spec)["total_params"]
            # weights, two optimiser moments and the best weights, float32; the permutation; headroom
            expected = 16 * params + 8 * len(data.x_train) + (1 << 20)
            self.checkpoint = Checkpointer.create(out, info, every=self.args.checkpoint_every or 0, dist=self.dist,
                                                  expected_bytes=expected)
        return self.checkpoint

    def describe_resume(self) -> str:
        """Where a resumed run continues from, for the user."""
        if self.checkpoint is None or self.checkpoint.saved is None:
            return "no checkpoint was saved before the interruption: training starts again from the beginning"
        world = self.dist.world_size if self.dist else 1
        changed = self.checkpoint.saved_world_size != world
        return (f"continuing {self.checkpoint.folder} from {position(*self.checkpoint.saved)}"
                + (f" with {world} process(es) instead of {self.checkpoint.saved_world_size}: the same batches, "
                   "but dropout draws differ from an uninterrupted run" if changed else ""))


@contextmanager
def session(args: argparse.Namespace) -> Iterator[Session]:
    """Join the DDP group when torchrun started us; leave it however training ends."""
    dist = Distributed.from_env(args.device or "auto") if under_torchrun() else None
    try:
        yield Session(args, dist)
    except TrainingInterrupted:
        if dist is not None and not dist.is_main:
            raise SystemExit(130) from None  # rank 0 says where the checkpoint is
        raise
    finally:
        if dist is not None:
            dist.close()
