"""One `cnnlab train` process: its place in a DDP group (if any), its run's checkpoints, and `--resume`.

The front end passes typed choices (`DataSource`, the checkpoint interval); nothing here knows about
command-line flags.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from cnnlab.datasets.dataset import Dataset
from cnnlab.datasets.registry import load_any
from cnnlab.errors import ModelFileError
from cnnlab.runs import run_folder
from cnnlab.spec.layers import ModelSpec
from cnnlab.spec.summary import summary_dict
from cnnlab.train.checkpoints import Checkpointer, TrainingInterrupted, final_folder, partial_folder, position
from cnnlab.train.config import TrainConfig
from cnnlab.train.distributed import Distributed, under_torchrun
from cnnlab.train.fit import EpochCallback, History, StepCallback


@dataclass(frozen=True)
class DataSource:
    """How to load a run's data again, as its checkpoint records it for `--resume`."""
    data: str  # a built-in dataset's name or an image folder's path
    data_dir: str | None = None
    folder_options: dict[str, Any] = field(default_factory=dict)  # load_folder's image_size, color, stream
    subset: int | None = None

    def load(self) -> Dataset:
        options = dict(self.folder_options)
        if options.get("image_size"):
            options["image_size"] = tuple(options["image_size"])  # JSON made the (H, W) pair a list
        data = load_any(self.data, self.data_dir, **options)
        return data.subset(self.subset) if self.subset else data


@dataclass(frozen=True)
class Resumed:
    """What an interrupted run continues with."""
    data: Dataset
    spec: ModelSpec
    config: TrainConfig
    out: Path
    model_name: str


class Session:
    """One training process: the DDP group it belongs to (or None) and the checkpoints of its run."""

    def __init__(self, dist: Distributed | None):
        self.dist = dist
        self.checkpoint: Checkpointer | None = None
        self.resuming = False

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.is_main

    def resume(self, run: str | Path, checkpoint_every: int | None = None, device: str | None = None) -> Resumed:
        """Reopen the interrupted run `run` (runs/NAME or runs/NAME.partial); `device` may differ from the first run's."""
        out = final_folder(run)
        if out.exists():
            raise FileExistsError(f"run {out} is already complete; remove {partial_folder(out)} if it is left over")
        self.checkpoint, info = Checkpointer.open(out, dist=self.dist)
        self.resuming = True
        try:
            spec = ModelSpec.from_dict(info["spec"])
            options = dict(info["train"])
            if device is not None:
                options["device"] = device
            config = TrainConfig(**options)
            self.checkpoint.every = int(info.get("checkpoint_every", 0)) if checkpoint_every is None else checkpoint_every
            source = DataSource(info["data"], info.get("data_dir"), dict(info.get("folder_options") or {}),
                                info.get("subset"))
        except (KeyError, TypeError) as exc:
            raise ModelFileError(f"{self.checkpoint.folder}: damaged run.json ({type(exc).__name__}: {exc})") from None
        return Resumed(source.load(), spec, config, out, str(info.get("model", "model")))

    def checkpointer(self, data: Dataset, spec: ModelSpec, config: TrainConfig, out: Path, model_name: str,
                     source: DataSource | None, checkpoint_every: int | None) -> Checkpointer:
        """The run's checkpoints: reopened when resuming, else a new `out.partial/` (checked writable now)."""
        if self.dist is not None:
            n_train = len(data.x_train) - int(len(data.x_train) * config.validation_split)
            self.dist.check_batches(n_train, config.batch_size)
        if self.checkpoint is None:
            if source is None:
                raise ValueError("a new run needs the DataSource that --resume will reload")
            info = {"format_version": 1, **asdict(source), "model": model_name, "spec": spec.to_dict(),
                    "train": config.to_dict(), "checkpoint_every": checkpoint_every or 0}
            params = summary_dict(spec)["total_params"]
            # weights, two optimiser moments and the best weights, float32; the permutation; headroom
            expected = 16 * params + 8 * len(data.x_train) + (1 << 20)
            self.checkpoint = Checkpointer.create(out, info, every=checkpoint_every or 0, dist=self.dist,
                                                  expected_bytes=expected)
        return self.checkpoint

    def train(self, data: Dataset, spec: ModelSpec, config: TrainConfig, out: Path, model_name: str, *,
              source: DataSource | None = None, checkpoint_every: int | None = None,
              on_step: StepCallback | None = None, on_epoch: EpochCallback | None = None
              ) -> tuple[Path, History, run_folder.Evaluation | None]:
        """Train into run folder `out` with checkpoints; Ctrl-C saves one and says how to resume.

        A new run that fails before its first checkpoint leaves nothing behind; a resumed one keeps its folder.
        """
        checkpoint = self.checkpointer(data, spec, config, out, model_name, source, checkpoint_every)
        try:
            with checkpoint.catch_signals():
                return run_folder.train_run(data, spec, config, out, model_name=model_name, on_step=on_step,
                                            on_epoch=on_epoch, checkpoint=checkpoint, dist=self.dist)
        except Exception:
            if checkpoint.saved is None and self.is_main and not self.resuming:  # nothing worth resuming
                shutil.rmtree(checkpoint.folder, ignore_errors=True)
            raise

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
def session(device: str | None = None) -> Iterator[Session]:
    """Join the DDP group when torchrun started us; leave it however training ends."""
    dist = Distributed.from_env(device or "auto") if under_torchrun() else None
    try:
        yield Session(dist)
    except TrainingInterrupted:
        if dist is not None and not dist.is_main:
            raise SystemExit(130) from None  # rank 0 says where the checkpoint is
        raise
    finally:
        if dist is not None:
            dist.close()
