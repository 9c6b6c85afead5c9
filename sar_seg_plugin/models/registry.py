"""Finding and opening models: bundled ONNX files, user paths, and an onnxruntime session checked against metadata.

onnxruntime is imported only when a model is opened, so the plugin loads in a QGIS without it.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import SarSegError
from .metadata import DEEPNESS_TASKS, PREFIX, ModelMetadata, is_deepness_props, metadata_from_props

MODELS_DIR = Path(__file__).resolve().parent
DEVICES = ("auto", "cpu", "cuda")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
ONNXRUNTIME_MISSING = (
    "This tool needs the Python package onnxruntime, which is not installed in this QGIS: install onnxruntime, "
    "e.g. with the QPIP plugin or `python3 -m pip install --user onnxruntime`, then restart QGIS"
)


def import_onnxruntime() -> Any:
    """The onnxruntime module, or a SarSegError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise SarSegError(ONNXRUNTIME_MISSING) from None
    return onnxruntime


@dataclass
class LoadedModel:
    """An open model: onnxruntime session, validated metadata, and the graph's input/output names and shapes."""

    path: Path
    session: Any
    metadata: ModelMetadata
    input_names: list[str]
    output_names: list[str]
    device_used: str
    threads: int = 0
    input_shape: list[int | str | None] = field(default_factory=list)
    output_shape: list[int | str | None] = field(default_factory=list)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run the first input on an already normalised (n, bands, h, w) batch; returns the first output."""
        feed = {self.input_names[0]: np.ascontiguousarray(batch, dtype=np.float32)}
        return self.session.run([self.output_names[0]], feed)[0]


def bundled_models(task: str | None = None) -> dict[str, Path]:
    """The models shipped in the plugin: file stem -> path of each ``*.onnx`` in ``sar_seg_plugin/models/``; with
    ``task`` ("segmentation", "encoder"), only those whose metadata says so (see :func:`model_task`)."""
    models = {p.stem: p for p in sorted(MODELS_DIR.glob("*.onnx"))}
    if task is None:
        return models
    return {name: path for name, path in models.items() if model_task(path) == task}


def model_task(path: str | os.PathLike) -> str:
    """The task a model file's metadata records ("segmentation", "encoder", ...; "" when it records none or cannot
    be read). Read once per file version (unoptimised session, tens of milliseconds)."""
    p = Path(path)
    try:
        stat = p.stat()
    except OSError:
        return ""
    return _model_task(str(p.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _model_task(path: str, _mtime_ns: int, _size: int) -> str:
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=[_CPU])
        props = dict(session.get_modelmeta().custom_metadata_map)
    except Exception:  # noqa: BLE001 - onnxruntime raises its own types; an unreadable file has no task
        return ""
    deepness = is_deepness_props(props)
    raw = props.get("model_type" if deepness else f"{PREFIX}task", '""')
    try:
        task = json.loads(raw)
    except ValueError:
        task = raw  # Deepness writes some values unquoted
    if deepness:
        return DEEPNESS_TASKS.get(str(task).capitalize(), ("",))[0]
    return task if isinstance(task, str) else ""


FLOAT32_SEGMENTATION = "sarseg_unet_vvvh"
#: The int8 variant of the bundled U-Net, shipped only when it keeps at least 99.5 % of the float32 model's pixel
#: classes on validation tiles and on evaluation-only scenes (MODEL_CARD.md, "int8 variant"), at 1.4-1.5x its speed
#: on a CPU. ``sarseg:segment`` runs it by default on a CPU and checks it against the float32 model on tiles spread
#: over the raster in every run (``core.model_check``).
INT8_SEGMENTATION = "sarseg_unet_vvvh_int8"
#: Bundled fast copies and the model each stands in for.
FAST_COPIES = {INT8_SEGMENTATION: FLOAT32_SEGMENTATION}


def default_segmentation_model() -> str:
    """The bundled segmentation model the tools use inside other work (flood opinion, commune class shares) and
    the one the card's figures are measured on: the float32 U-Net."""
    return FLOAT32_SEGMENTATION


def fast_segmentation_model() -> str:
    """The model ``sarseg:segment`` runs by default: the int8 copy when it is bundled (checked against the float32
    model on every run), else :func:`default_segmentation_model`."""
    return INT8_SEGMENTATION if INT8_SEGMENTATION in bundled_models() else default_segmentation_model()


def reference_of(path: str | os.PathLike) -> str | None:
    """The bundled model a bundled fast copy at ``path`` stands in for (``FAST_COPIES``), None for any other file."""
    bundled = bundled_models()
    target = Path(path).resolve()
    for fast, reference in FAST_COPIES.items():
        if fast in bundled and reference in bundled and bundled[fast].resolve() == target:
            return reference
    return None


def load_checked(
    name_or_path: str, device: str = "auto", threads: int | None = None
) -> tuple[LoadedModel, LoadedModel | None, str | None]:
    """A segmentation model as the tools run it: ``(model, reference, note)``. For a bundled fast copy
    (:data:`FAST_COPIES`) on a CPU, ``reference`` is the model it stands in for, opened on the CPU with the same
    threads, for ``inference.segment_raster(..., reference=)`` to check it against; on another device the
    reference itself is returned as ``model`` (the int8 copy is made for CPUs) and ``note`` says so. Any other
    model: ``(model, None, None)``."""
    model = load_model(name_or_path, device, threads)
    reference = reference_of(model.path)
    if reference is None:
        return model, None, None
    if model.device_used != "cpu":
        note = f"The int8 copy is made for CPUs: on {model.device_used.upper()} its float32 model {reference} runs"
        return load_model(reference, device, threads), None, note
    return model, load_model(reference, "cpu", model.threads or None), None


def resolve_model(name_or_path: str) -> Path:
    """A bundled model's name, or the path of an existing model file, as a path."""
    bundled = bundled_models()
    if name_or_path in bundled:
        return bundled[name_or_path]
    path = Path(os.path.expanduser(name_or_path))
    if path.is_file():
        return path
    if path.suffix.lower() == ".onnx" or os.sep in name_or_path or "/" in name_or_path:
        raise SarSegError(f"model file {name_or_path} does not exist; choose an existing .onnx file")
    available = ", ".join(sorted(bundled)) or "none bundled with this plugin"
    raise SarSegError(
        f"unknown model '{name_or_path}': give the path of an .onnx file or a bundled model name ({available})"
    )


def _providers(ort: Any, device: str) -> list[str]:
    if device not in DEVICES:
        raise SarSegError(f"unknown device '{device}': expected one of {', '.join(DEVICES)}")
    cuda_available = _CUDA in ort.get_available_providers()
    if device in ("auto", "cuda") and cuda_available:
        return [_CUDA, _CPU]
    return [_CPU]


def default_threads() -> int:
    """CPU threads for onnxruntime: the cores this process may run on (a container's or taskset's limit, which
    onnxruntime's own default, the machine's physical cores, does not see)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def load_model(name_or_path: str, device: str = "auto", threads: int | None = None) -> LoadedModel:
    """Open a model with onnxruntime and refuse it unless its metadata is valid and fits its graph.

    ``device``: "auto" (CUDA when onnxruntime offers it, else CPU), "cpu", or "cuda" (falls back to CPU when CUDA
    is not available); ``LoadedModel.device_used`` says which one runs. ``threads``: CPU threads for one
    inference (default :func:`default_threads`); operators of a graph run one after another.
    """
    path = resolve_model(name_or_path)
    ort = import_onnxruntime()
    providers = _providers(ort, device)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: CUDA fallback warnings would flood the QGIS log
    threads = threads or default_threads()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle worker threads sleep instead of spinning: the caller reads and blends tiles while the model runs,
    # and spinning threads would take the CPU from it (and from QGIS).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SarSegError(
            f"{path} is not an ONNX model file or is corrupt (onnxruntime: {detail}); "
            "choose an .onnx model exported by SAR Seg's training package or a Deepness model"
        ) from None

    inputs, outputs = session.get_inputs(), session.get_outputs()
    in_shape, out_shape = list(inputs[0].shape), list(outputs[0].shape)
    if len(in_shape) < 3:
        raise SarSegError(f"{path}: the model input '{inputs[0].name}' has shape {in_shape}; expected (n, bands, h, w)")
    in_channels = _static(in_shape[-3])
    sizes = {_static(d) for d in in_shape[-2:]}
    in_size = sizes.pop() if len(sizes) == 1 else None
    out_channels = _static(out_shape[1]) if len(out_shape) >= 2 else None

    props = dict(session.get_modelmeta().custom_metadata_map)
    meta = metadata_from_props(
        props, str(path), input_channels=in_channels, input_size=in_size, output_channels=out_channels
    )
    _check_graph(path, meta, in_channels, [_static(d) for d in in_shape[-2:]], out_channels, is_deepness_props(props))

    used = session.get_providers()
    return LoadedModel(
        path=path,
        session=session,
        metadata=meta,
        input_names=[i.name for i in inputs],
        output_names=[o.name for o in outputs],
        device_used="cuda" if used and used[0] == _CUDA else "cpu",
        threads=threads,
        input_shape=in_shape,
        output_shape=out_shape,
    )


def _check_graph(
    path: Path,
    meta: ModelMetadata,
    in_channels: int | None,
    hw: list[int | None],
    out_channels: int | None,
    deepness: bool,
) -> None:
    """Static graph dimensions must agree with the metadata (dynamic ones are accepted)."""
    if in_channels is not None and in_channels != len(meta.input_bands):
        raise SarSegError(
            f"{path}: the model graph takes {in_channels} input channels but its metadata lists "
            f"{len(meta.input_bands)} input bands ({', '.join(meta.input_bands)}): field 'input_bands' "
            "does not match the graph; re-export the model with consistent metadata"
        )
    for dim in hw:
        if dim is not None and dim != meta.tile_size:
            raise SarSegError(
                f"{path}: the model graph takes fixed {hw[0]}x{hw[1]} tiles but its metadata field 'tile_size' "
                f"says {meta.tile_size}; re-export the model with tile_size {dim}"
            )
    if meta.task == "segmentation" and meta.output_kind == "classes" and out_channels is not None:
        fits = out_channels == len(meta.class_names)
        # A Deepness binary segmentor may output one sigmoid channel for (background, object).
        if deepness and out_channels == 1 and len(meta.class_names) <= 2:
            fits = True
        if not fits:
            raise SarSegError(
                f"{path}: the model graph outputs {out_channels} channels but its metadata lists "
                f"{len(meta.class_names)} classes ({', '.join(meta.class_names)}): field 'class_names' "
                "does not match the graph; re-export the model with one class name per output channel"
            )
    if meta.task == "encoder" and out_channels is not None and out_channels != meta.embedding_size:
        raise SarSegError(
            f"{path}: the model graph outputs {out_channels} channels but its metadata field 'embedding_size' "
            f"says {meta.embedding_size}; re-export the model with consistent metadata"
        )


# --- Forecasters: an encoder step graph and a decoder step graph, the time loop run here ------------------------

FORECAST_DIR = MODELS_DIR / "forecast"
FORECAST_INPUT_KINDS = ("classes", "continuous")
#: Spatial halo (pixels) assumed for a forecaster whose metadata states neither an architecture it can be computed
#: for nor a ``receptive_field``.
DEFAULT_FORECAST_HALO = 64


@dataclass
class LoadedForecaster:
    """An open forecaster: its two step sessions, the encoder's metadata and how to stream it spatially.

    ``halo``: pixels of context each side of a block so that blocks give the same result as the whole raster
    (the receptive field of the whole loop: every input date and every horizon widens it).
    """

    encoder_path: Path
    decoder_path: Path
    encoder: Any
    decoder: Any
    metadata: ModelMetadata
    input_kind: str
    architecture: str
    state_channels: int
    state_stride: int
    halo: int
    device_used: str
    threads: int

    @property
    def name(self) -> str:
        stem = self.encoder_path.name[: -len("_encoder.onnx")]
        return stem if self.encoder_path.name.endswith("_encoder.onnx") else self.encoder_path.stem

    def run(self, sequence: np.ndarray, horizons: int) -> np.ndarray:
        """(n, T, C, h, w) float32 model inputs -> (n, horizons, C, h, w): class probabilities or values."""
        n, steps, _, height, width = sequence.shape
        s = self.state_stride
        h = np.zeros((n, self.state_channels, height // s, width // s), dtype=np.float32)
        c = h.copy()
        for t in range(steps):
            h, c = self.encoder.run(None, {"x": np.ascontiguousarray(sequence[:, t], dtype=np.float32), "h": h, "c": c})
        y = np.ascontiguousarray(sequence[:, -1], dtype=np.float32)
        outputs = []
        for _ in range(horizons):
            y, h, c = self.decoder.run(None, {"y_prev": y, "h": h, "c": c})
            outputs.append(y)
        return np.stack(outputs, axis=1)


def bundled_forecasters() -> dict[str, Path]:
    """Forecasters shipped in the plugin: name -> encoder step file (``<name>_encoder.onnx`` with its decoder)."""
    found = {}
    for enc in sorted(FORECAST_DIR.glob("*_encoder.onnx")):
        name = enc.name[: -len("_encoder.onnx")]
        if (FORECAST_DIR / f"{name}_decoder.onnx").is_file():
            found[name] = enc
    return found


def _forecast_info(meta: ModelMetadata, path: Path) -> dict[str, Any]:
    info = meta.training.get("forecast") if isinstance(meta.training, dict) else None
    if not isinstance(info, dict) or info.get("role") not in ("encoder", "decoder"):
        raise SarSegError(
            f"{path}: a forecaster is two step graphs whose metadata field 'training' holds a 'forecast' entry "
            "with role 'encoder' or 'decoder'; export it with SAR Seg's training package (training.forecasting)"
        )
    return info


def forecast_halo(architecture: str, config: dict[str, Any], sequence_length: int, horizons: int, stride: int) -> int:
    """Receptive-field radius in pixels of a whole forecast (``sequence_length`` encoder steps and ``horizons``
    decoder steps): a ConvLSTM widens it by layers x (kernel // 2) state pixels at every step."""
    if architecture == "convlstm":
        per_step = int(config.get("layers", 1)) * (int(config.get("kernel_size", 3)) // 2)
        return (sequence_length + horizons) * per_step * stride
    return DEFAULT_FORECAST_HALO


def load_forecaster(name_or_path: str, device: str = "auto", threads: int | None = None) -> LoadedForecaster:
    """Open a forecaster by bundled name or by the path of either of its step files, and check the pair.

    The two files name each other in their metadata (``training.forecast.pair``); both must be forecast models
    with the same bands and classes, the encoder taking the dates and the decoder returning the maps.
    """
    bundled = bundled_forecasters()
    if name_or_path in bundled:
        path = bundled[name_or_path]
    else:
        path = Path(os.path.expanduser(name_or_path))
        if not path.is_file():
            available = ", ".join(sorted(bundled)) or "none bundled with this plugin"
            raise SarSegError(
                f"unknown forecaster '{name_or_path}': give the path of a forecaster's encoder (or decoder) .onnx "
                f"file or a bundled forecaster name ({available})"
            )
    first = load_model(str(path), device, threads)
    meta = first.metadata
    if meta.task != "forecast":
        raise SarSegError(
            f"{path}: model '{meta.name}' is a {meta.task} model; choose a forecast model (task 'forecast')"
        )
    info = _forecast_info(meta, path)
    pair = path.parent / str(info.get("pair", ""))
    if not info.get("pair") or not pair.is_file():
        raise SarSegError(
            f"{path}: its paired {'decoder' if info['role'] == 'encoder' else 'encoder'} step file "
            f"'{info.get('pair', '')}' (metadata 'training.forecast.pair') is not beside it; keep both files together"
        )
    second = load_model(str(pair), device, threads)
    encoder, decoder = (first, second) if info["role"] == "encoder" else (second, first)
    dec_info = _forecast_info(decoder.metadata, decoder.path)
    enc_info = _forecast_info(encoder.metadata, encoder.path)
    if enc_info["role"] != "encoder" or dec_info["role"] != "decoder":
        raise SarSegError(f"{path} and {pair} are not an encoder and a decoder step of one forecaster")
    em, dm = encoder.metadata, decoder.metadata
    if (em.input_bands, em.class_names, em.output_kind) != (dm.input_bands, dm.class_names, dm.output_kind):
        raise SarSegError(f"{encoder.path} and {decoder.path} disagree on bands, classes or output kind")
    if em.sequence_length is None or not em.horizons:
        raise SarSegError(f"{encoder.path}: a forecaster's metadata needs 'sequence_length' and 'horizons'")
    input_kind = str(enc_info.get("input_kind", "classes" if em.output_kind == "classes" else "continuous"))
    if input_kind not in FORECAST_INPUT_KINDS:
        raise SarSegError(
            f"{encoder.path}: forecast input kind '{input_kind}' is not one of {', '.join(FORECAST_INPUT_KINDS)}"
        )
    stride = int(enc_info.get("state_stride", 1))
    architecture = str(enc_info.get("architecture", ""))
    halo = int(
        enc_info.get("receptive_field")
        or forecast_halo(architecture, enc_info.get("config", {}), em.sequence_length, len(em.horizons), stride)
    )
    state_shape = encoder.session.get_inputs()[1].shape
    state_channels = _static(state_shape[1]) if len(state_shape) > 1 else None
    if state_channels is None:
        state_channels = int(enc_info.get("state_channels", 0))
    return LoadedForecaster(
        encoder_path=encoder.path,
        decoder_path=decoder.path,
        encoder=encoder.session,
        decoder=decoder.session,
        metadata=em,
        input_kind=input_kind,
        architecture=architecture,
        state_channels=state_channels,
        state_stride=stride,
        halo=halo,
        device_used=encoder.device_used,
        threads=encoder.threads,
    )
