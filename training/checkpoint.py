"""The one checkpoint format of every training CLI: model weights, how to rebuild the model, metadata, resume state.

A checkpoint is a ``torch.save``'d dict readable with ``torch.load(weights_only=True)`` (no pickled code)::

    format           "sarseg-checkpoint"          version   1
    arch, arch_kwargs  rebuild the model: ``build_model(arch, arch_kwargs)``
    task             "segmentation" | "forecast" | "encoder"
    metadata         ModelMetadata fields known at training time (bands, units, normalisation, classes, tile ...);
                     the derived ones (task, format_version, embedding_size) are not stored
    epoch, best_metric, history (one dict per epoch)
    model_state, optimizer_state, scheduler_state (None when not given)

Writes are atomic: the file is written next to its destination and moved into place, so a crash or an error
while saving never leaves a truncated checkpoint (an older one at the same path stays intact).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sar_seg_plugin.core.outputs import OutputSet
from sar_seg_plugin.models.metadata import TASKS, ModelMetadata, Normalization
from training.models import ARCHITECTURES, create_model
from training.models.encoder import ENCODERS, create_encoder

FORMAT = "sarseg-checkpoint"
VERSION = 1
# ModelMetadata fields a checkpoint does not store: they follow from the task, the format and the model.
DERIVED_FIELDS = ("task", "format_version", "embedding_size")
METADATA_FIELDS = tuple(f.name for f in fields(ModelMetadata) if f.name not in DERIVED_FIELDS)

# The bundled segmentation model's checkpoint (written by scripts/make_models.py), the start of a fine-tuning
# with ``train_segmentation --init bundled``. Only the plugin's ONNX export of it ships in the plugin zip.
BUNDLED = "bundled"
BUNDLED_SEGMENTATION = Path(__file__).resolve().parent / "pretrained" / "sarseg_unet_vvvh.pt"

_EXTRA_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read back: the message says which and why."""


def register_architecture(name: str, builder: Callable[..., nn.Module]) -> None:
    """Let checkpoints rebuild models of another family (e.g. forecasters): ``builder(**arch_kwargs)``."""
    if name in ARCHITECTURES or name in ENCODERS:
        raise ValueError(f"architecture name {name!r} is already used by a built-in model")
    _EXTRA_ARCHITECTURES[name] = builder


def known_architectures() -> tuple[str, ...]:
    """Every ``arch`` a checkpoint may name."""
    return (*ARCHITECTURES, *ENCODERS, *_EXTRA_ARCHITECTURES)


def build_model(arch: str, arch_kwargs: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised model: segmentation ``create_model(arch, **kw)``, ``create_encoder`` or a registered one.

    ``pretrained`` is forced off: the checkpoint's weights replace ImageNet ones, so those need not be loaded.
    """
    kwargs = dict(arch_kwargs)
    if "pretrained" in kwargs or arch == "efficientnet_lite0_encoder":
        kwargs["pretrained"] = False
    try:
        if arch in _EXTRA_ARCHITECTURES:
            return _EXTRA_ARCHITECTURES[arch](**kwargs)
        if arch in ARCHITECTURES:
            return create_model(arch, **kwargs)
        if arch in ENCODERS:
            return create_encoder(arch, **kwargs)
    except TypeError as err:
        raise CheckpointError(f"cannot build architecture {arch!r} from arch_kwargs {kwargs}: {err}") from None
    raise CheckpointError(f"unknown architecture {arch!r}; known: {', '.join(known_architectures())}")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (weights loaded, eval mode) and everything saved with it."""

    model: nn.Module
    arch: str
    arch_kwargs: dict[str, Any]
    task: str
    metadata: dict[str, Any]
    epoch: int
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    best_metric: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None

    def restore(self, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None) -> int:
        """Load the saved optimizer/scheduler state into freshly built ones; returns the epoch to resume from."""
        if optimizer is not None:
            if self.optimizer_state is None:
                raise CheckpointError(f"{self.path}: the checkpoint holds no optimizer state to resume from")
            optimizer.load_state_dict(self.optimizer_state)
        if scheduler is not None:
            if self.scheduler_state is None:
                raise CheckpointError(f"{self.path}: the checkpoint holds no scheduler state to resume from")
            scheduler.load_state_dict(self.scheduler_state)
        return self.epoch + 1


def _plain(value: Any, where: str) -> Any:
    """``value`` with numpy scalars/arrays and tuples made plain Python, so ``weights_only`` loading accepts it."""
    if isinstance(value, Normalization):
        return value.to_json()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, where) for v in value)
    if isinstance(value, str):
        return str(value)  # str subclasses (e.g. TorchVersion) would need their class to unpickle
    if value is None or isinstance(value, (bool, int, float, torch.Tensor)):
        return value
    raise CheckpointError(f"{where}: cannot store a {type(value).__name__} in a checkpoint (plain values only)")


def _check_metadata(metadata: Mapping[str, Any], task: str) -> dict[str, Any]:
    unknown = sorted(set(metadata) - set(METADATA_FIELDS) - set(DERIVED_FIELDS))
    if unknown:
        raise CheckpointError(f"unknown metadata field(s) {unknown}; known: {', '.join(METADATA_FIELDS)}")
    if "task" in metadata and metadata["task"] != task:
        raise CheckpointError(f"metadata task {metadata['task']!r} differs from the checkpoint task {task!r}")
    return {k: v for k, v in metadata.items() if k not in DERIVED_FIELDS}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    arch_kwargs: dict[str, Any],
    task: str,
    metadata: dict[str, Any],
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    best_metric: float | None = None,
    history: list[dict[str, Any]] | None = None,
) -> None:
    """Write a checkpoint atomically (a hidden temporary in the same folder, moved into place when whole)."""
    path = Path(path)
    if arch not in known_architectures():
        raise CheckpointError(f"unknown architecture {arch!r}; known: {', '.join(known_architectures())}")
    if task not in TASKS:
        raise CheckpointError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if best_metric is not None and not math.isfinite(float(best_metric)):
        best_metric = None  # nothing measured yet (e.g. -inf as a starting value)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "arch_kwargs": _plain(arch_kwargs, "arch_kwargs"),
        "task": task,
        "metadata": _plain(_check_metadata(metadata, task), "metadata"),
        "epoch": int(epoch),
        "best_metric": None if best_metric is None else float(best_metric),
        "history": _plain(list(history or []), "history"),
        "model_state": model.state_dict(),
        "optimizer_state": None if optimizer is None else optimizer.state_dict(),
        "scheduler_state": None if scheduler is None else _plain(scheduler.state_dict(), "scheduler_state"),
        "torch_version": str(torch.__version__),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with OutputSet() as outputs, open(outputs.add(path), "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; give the .pt file written by a training run")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip/pickle/unpickling errors of many types
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        unpickler = [line for line in lines if line.startswith("WeightsUnpickler error")]
        detail = (unpickler or lines or [type(err).__name__])[0]
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): {detail}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a SAR Seg checkpoint (no format {FORMAT!r}); was it saved by training/?")
    if not isinstance(payload.get("version"), int) or payload["version"] > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')!r} is newer than this code reads ({VERSION})"
        )
    missing = [k for k in ("arch", "arch_kwargs", "task", "metadata", "epoch", "model_state") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing {', '.join(missing)}")
    return payload


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint and rebuild its model (``build_model``), weights loaded strictly, in eval mode."""
    path = Path(path)
    payload = _read(path, map_location)
    arch = payload["arch"]
    if arch not in known_architectures():
        raise CheckpointError(f"{path}: unknown architecture {arch!r}; known: {', '.join(known_architectures())}")
    try:
        model = build_model(arch, payload["arch_kwargs"])
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    try:
        model.load_state_dict(payload["model_state"], strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path}: the saved weights do not fit architecture {arch!r}: {first}") from None
    model.to(map_location).eval()
    return Checkpoint(
        model=model,
        arch=arch,
        arch_kwargs=dict(payload["arch_kwargs"]),
        task=payload["task"],
        metadata=dict(payload["metadata"]),
        epoch=int(payload["epoch"]),
        optimizer_state=payload.get("optimizer_state"),
        scheduler_state=payload.get("scheduler_state"),
        best_metric=payload.get("best_metric"),
        history=list(payload.get("history") or []),
        path=path,
    )


def resolve_init(value: str | Path) -> Path:
    """The checkpoint a ``--init`` value names: :data:`BUNDLED_SEGMENTATION` for ``bundled``, else the path."""
    return BUNDLED_SEGMENTATION if str(value) == BUNDLED else Path(value)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (records exactly which checkpoint a run started from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = [
    "BUNDLED",
    "BUNDLED_SEGMENTATION",
    "Checkpoint",
    "CheckpointError",
    "DERIVED_FIELDS",
    "METADATA_FIELDS",
    "build_model",
    "file_sha256",
    "known_architectures",
    "load_checkpoint",
    "register_architecture",
    "resolve_init",
    "save_checkpoint",
]
