"""Multi-process training on PyTorch's distributed engine: DDP, disjoint batch shards, reduced metrics.

Launch with `torchrun --nproc-per-node N -m cnnlab train ...` (any torchrun flags, several machines
included) or `cnnlab train --nproc N`, which runs exactly that on this machine. Backend: NCCL on
CUDA GPUs (one per process), gloo on CPU.

Sharding. Every rank draws the same epoch permutation (the generator has the same seed everywhere)
and cuts the same global batch of `batch_size` images from it; rank r takes positions r, r+W, r+2W...
of that batch. The shards are disjoint, their union is exactly the batch one process would take, and
so `batch_size` stays the *effective* (global) batch size: each rank works on batch_size / W images.
Gradients are averaged by DDP with each rank weighted by its share of the batch, so even a ragged
last batch gives the single-process mean gradient, and no learning-rate scaling is needed or applied:
the same command trains the same model on 1 or N processes, up to float rounding. (To use N times
the batch, raise --batch-size yourself and scale --lr linearly, as Goyal et al. 2017 suggest.)
BatchNormalization statistics are synchronised across GPUs (SyncBatchNorm); on CPU each rank
normalises its own shard, as plain DDP does. Only rank 0 writes checkpoints and the run folder.
"""
from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def under_torchrun() -> bool:
    """True inside a process that torchrun started (it sets these for every worker)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


@dataclass
class Distributed:
    """This process's place in the group, and the collective operations `fit` and checkpoints need."""
    rank: int
    world_size: int
    local_rank: int
    backend: str
    share: float = 1.0  # this rank's fraction of the current global batch, used by the gradient hook

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """Where collective tensors live: NCCL only moves GPU tensors."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    @classmethod
    def from_env(cls, device: str = "auto") -> "Distributed | None":
        """Join the group torchrun described in the environment; None for a single process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            if local_rank >= torch.cuda.device_count():
                raise ValueError(f"process {local_rank} on this machine has no GPU of its own "
                                 f"({torch.cuda.device_count()} visible); lower --nproc-per-node")
            torch.cuda.set_device(local_rank)  # so that "cuda" means this process's GPU
        backend = "nccl" if use_cuda else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        return cls(rank, world, local_rank, backend)

    def close(self) -> None:
        """Leave the group. The DDP wrapper sits in reference cycles that keep the group alive; freeing
        them first lets the group's worker threads stop now, not during interpreter shutdown, where
        gloo releasing a Python-owned tensor aborts the process."""
        if dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()
            gc.collect()

    def check_batches(self, n: int, batch_size: int) -> None:
        """Fail before training when a batch would leave some rank without images."""
        last = n % batch_size
        if batch_size < self.world_size or 0 < last < self.world_size:
            raise ValueError(f"batch size {batch_size} over {n:,} images leaves a batch of {last or batch_size} "
                             f"images, too few for {self.world_size} processes; choose another --batch-size")

    # --- hooks used by fit ----------------------------------------------------------------
    def wrap(self, module: nn.Module) -> DistributedDataParallel:
        """DDP around `module` (already on its device), its gradients weighted by this rank's batch share."""
        if self.backend == "nccl":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        if self.rank:  # own dropout masks per rank; the permutation generator stays shared
            torch.manual_seed(torch.initial_seed() + self.rank)
        return DistributedDataParallel(_ShareWeighted(module, self),
                                       device_ids=[self.local_rank] if self.backend == "nccl" else None)

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's disjoint part of a global batch of indices (positions rank, rank+W, ...)."""
        if len(idx) < self.world_size:  # the same on every rank, so all ranks fail together
            raise ValueError(f"a batch of {len(idx)} images cannot be split over {self.world_size} processes")
        mine = idx[self.rank::self.world_size]
        self.share = len(mine) / len(idx)
        return mine

    def reduce_epoch(self, module: nn.Module, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> int:
        """Sum the epoch's loss, correct count and images over ranks (in place); share rank 0's buffers.

        Buffers (BatchNorm running statistics) drift apart during an epoch on CPU, where each rank
        normalises its own shard; giving every rank rank 0's copy keeps validation, and hence early
        stopping, identical everywhere.
        """
        totals = torch.tensor([loss_sum.item(), correct.item(), seen], dtype=torch.float64, device=self.device)
        dist.all_reduce(totals)
        loss_sum.fill_(totals[0].item())
        correct.fill_(int(totals[1].item()))
        self.sync_buffers(module)
        return int(totals[2].item())

    def sync_buffers(self, module: nn.Module) -> None:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, 0)

    # --- collectives for checkpoints and the CLI ------------------------------------------
    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any rank."""
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's bytes on every rank (file contents read once, without a shared file system)."""
        size = torch.tensor([len(data) if self.is_main and data is not None else 0], dtype=torch.int64, device=self.device)
        dist.broadcast(size, 0)
        buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device) if self.is_main and data
               else torch.empty(int(size.item()), dtype=torch.uint8, device=self.device))
        if int(size.item()):
            dist.broadcast(buf, 0)
        return bytes(buf.cpu().numpy())

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of a same-shaped tensor, in rank order, on the CPU."""
        local = tensor.to(self.device)
        out = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(out, local)
        return [t.cpu() for t in out]

    def finish(self, module: nn.Module, batch_size: int) -> dict[str, Any]:
        """Give every rank rank 0's buffers and measure how far the ranks' weights differ (0 expected)."""
        self.sync_buffers(module)
        flat = torch.cat([p.detach().reshape(-1).float() for p in module.parameters()]).to(self.device)
        reference = flat.clone()
        dist.broadcast(reference, 0)
        gap = (flat - reference).abs().max().reshape(1) if len(flat) else torch.zeros(1, device=self.device)
        dist.all_reduce(gap, op=dist.ReduceOp.MAX)
        return {"world_size": self.world_size, "backend": self.backend, "global_batch_size": batch_size,
                "batch_size_per_process": batch_size / self.world_size, "lr_scaling": "none (the global batch is --batch-size)",
                "max_weight_difference_between_ranks": float(gap.item())}


class _ShareWeighted(nn.Module):
    """`module`, with its gradients multiplied by (share x world size) on the way back.

    DDP averages the ranks' gradients, each the mean over that rank's images; weighting rank r by
    W x n_r / N turns the average into the mean over all N images of the global batch. (A Python DDP
    comm hook could do the same, but gloo then frees Python tensors on its own thread, which aborts
    the interpreter at exit.)
    """

    def __init__(self, module: nn.Module, group: Distributed):
        super().__init__()
        self.module, self.group = module, group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ScaleGrad.apply(self.module(x), self.group.share * self.group.world_size)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; gradient times `factor` backward."""

    @staticmethod
    def forward(ctx, x, factor):  # noqa: ANN001 - autograd's signature
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001
        return grad * ctx.factor, None


def launch(argv: list[str], nproc: int) -> int:
    """Run `cnnlab <argv>` in `nproc` processes on this machine under torchrun; return its exit code."""
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", f"cnnlab-{uuid.uuid4().hex[:8]}",
           "-m", "cnnlab", "--", *argv]  # after "--" torchrun does not read cnnlab's options as its own (--monitor)
    # torchrun and its workers get a session of their own, so a Ctrl-C reaches them once, through us and
    # torchrun, rather than also straight from the terminal: a repeated signal would cut torchrun's wait
    # for the workers, which save a checkpoint before they stop.
    proc = subprocess.Popen(cmd, start_new_session=True)
    forwarded: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        forwarded.append(signum)
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
        return 130 if forwarded and code else code  # stopped on request, after saving a checkpoint
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
