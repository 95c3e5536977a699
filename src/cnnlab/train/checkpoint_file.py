"""One checkpoint file: the training loop's whole state as safetensors tensors plus one JSON header.

The tensors are the weights, the optimiser's moments, the best weights kept for early stopping, the
epoch's permutation (mid-epoch only) and every rank's generator states and running sums; the JSON has
the rest (epoch, step, history, the optimiser's hyper-parameters, the scheduler's state). No pickle.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import save as st_save

from cnnlab.errors import ModelFileError
from cnnlab.tensor_file import check_tensors, read_safetensors, tensor_digest

FORMAT_VERSION = 1
META_KEY = "cnnlab.train.checkpoints"


@dataclass
class LoopState:
    """What `fit` holds besides the module, optimiser, scheduler and generator, at a step boundary."""
    epoch: int  # epochs completed
    step: int  # steps completed in the current epoch; 0 at an epoch boundary
    order: torch.Tensor | None  # the current epoch's permutation, mid-epoch only
    loss_sum: float | torch.Tensor  # running sums of the current epoch, this rank's share
    correct: int | torch.Tensor
    seen: int
    best: float | None  # early stopping: best monitored value, weights at that epoch, epochs since
    best_state: dict[str, torch.Tensor] | None
    waited: int
    finished: bool = False  # no epoch is left to run (the last one ended, or training stopped early)


# --- one file: tensors + JSON --------------------------------------------------------------------
def checkpoint_bytes(module: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator,
                     history: Any, state: LoopState, per_rank: list[dict[str, torch.Tensor]],
                     steps_per_epoch: int) -> bytes:
    """Serialise the training state; `per_rank[r]` holds rank r's generator states and running sums."""
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    opt_state = opt.state_dict()
    opt_json: dict[str, dict[str, Any]] = {}
    for pid, slots in opt_state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{name}"] = value
            else:
                opt_json.setdefault(str(pid), {})[name] = value
    for k, v in (state.best_state or {}).items():
        tensors[f"best.{k}"] = v
    if state.order is not None:
        tensors["order"] = state.order
    tensors["generator"] = gen.get_state()
    for rank, parts in enumerate(per_rank):
        for name, value in parts.items():
            tensors[f"rank.{rank}.{name}"] = value
    meta = {"format_version": FORMAT_VERSION, "epoch": state.epoch, "step": state.step, "finished": state.finished,
            "steps_per_epoch": steps_per_epoch, "world_size": len(per_rank), "best": state.best,
            "has_best_state": state.best_state is not None, "waited": state.waited,
            "history": {"history": history.history, "epoch": history.epoch, "stopped_early": history.stopped_early,
                        "best_epoch": history.best_epoch},
            "optimizer": {"state": opt_json, "param_groups": opt_state["param_groups"]},
            "scheduler": sched.state_dict(), "saved": dt.datetime.now().isoformat(timespec="seconds")}
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta["sha256"] = tensor_digest(cpu)
    return st_save(cpu, metadata={META_KEY: json.dumps(meta)})


def read_checkpoint(raw: bytes, where: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON state) of a checkpoint file's bytes; ModelFileError when damaged."""
    tensors, metadata = read_safetensors(raw, where, "cnnlab checkpoint")
    try:
        meta = json.loads(metadata[META_KEY])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ModelFileError(f"{where}: not a readable cnnlab checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{where}: checkpoint format {meta.get('format_version') if isinstance(meta, dict) else meta!r}, "
                             f"this cnnlab reads version {FORMAT_VERSION}")
    # checkpoints written before digests carry none and are not checked; weights must be finite either way
    check_tensors({k: v for k, v in tensors.items() if k.startswith(("model.", "best."))}, None, where)
    if meta.get("sha256") is not None and tensor_digest(tensors) != meta["sha256"]:
        raise ModelFileError(f"{where}: the tensors do not match the checkpoint's SHA-256: the file is damaged")
    return tensors, meta


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in prefixed(tensors, "optimizer.").items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, slots in saved["state"].items():
        state.setdefault(int(pid), {}).update(slots)
    groups = saved["param_groups"]
    for group, fresh in zip(groups, opt.param_groups):  # JSON turned tuples (Adam's betas) into lists
        for key, value in group.items():
            if isinstance(fresh.get(key), tuple):
                group[key] = tuple(value)
    opt.load_state_dict({"state": state, "param_groups": groups})
