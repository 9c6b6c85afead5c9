"""The model-file contract: what an ONNX model's ``metadata_props`` must say, read into a typed ``ModelMetadata``.

Training writes the props with ``metadata_to_props``; the plugin reads them back with ``metadata_from_props``.
Nothing else in SAR Seg parses metadata strings.

Key scheme (format version 1): one prop per ``ModelMetadata`` field, keyed ``"sarseg." + field name``, each value
JSON-encoded (``None`` is ``null``, tuples are arrays, ``normalization`` is an object
``{"mean": [...], "std": [...], "scale": number | null}``). For example::

    sarseg.format_version = 1
    sarseg.task           = "segmentation"
    sarseg.input_bands    = ["VV", "VH"]
    sarseg.tile_size      = 256

Props without the ``sarseg.`` prefix are ignored (other tools' metadata), unless no ``sarseg.`` key exists and
``model_type`` does: then the props are read as Deepness metadata (see ``deepness_metadata``).

Pure Python + numpy: no onnx, onnxruntime or qgis import.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..core.domain import ENVELOPE_KEY, validate_envelope
from ..core.errors import SarSegError

FORMAT_VERSION = 1
#: Key of ``training`` holding the model's confidence and accuracy on scenes it was not trained on.
CONFIDENCE_REFERENCE_KEY = "confidence_reference"
#: ``training`` key of a segmentation model whose graph takes tiles of any height and width that are multiples of
#: the value (written by ``training.export``): the last tile of a row or column can then be cut to what is left.
SIZE_MULTIPLE_KEY = "size_multiple"
PREFIX = "sarseg."
TASKS = ("segmentation", "forecast", "encoder")
UNITS = ("dB", "linear", "reflectance", "uint8")
OUTPUT_KINDS = ("classes", "continuous")
TILE_MULTIPLE = 16  # a U-Net with 4 poolings needs height and width divisible by 2^4
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")

#: SAR Seg's land-cover classes and their colours: the bundled models, the training generator and the forecast
#: dock's legend all take them from here.
LAND_COVER_CLASSES = ("water", "vegetation", "forest", "built-up", "bare soil")
LAND_COVER_COLOURS = ("#1f78b4", "#b2df8a", "#33a02c", "#e31a1c", "#d9b26f")

# Colours given to classes that come without any (Deepness models): distinct and readable on a map.
DEFAULT_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def hex_rgba(colour: str) -> tuple[int, int, int, int]:
    """A colour "#rrggbb" as (r, g, b, 255), the form of a GDAL colour-table entry."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16), 255


class MetadataFieldError(SarSegError):
    """A metadata field that is missing or wrong; ``field`` is the ``ModelMetadata`` field name."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def _problem(field_name: str, expected: str, got: Any = None, *, missing: bool = False) -> MetadataFieldError:
    key = f"'{PREFIX}{field_name}'"
    if missing:
        return MetadataFieldError(field_name, f"metadata field {key} is missing: expected {expected}")
    shown = list(got) if isinstance(got, tuple) else got
    return MetadataFieldError(field_name, f"metadata field {key}: expected {expected}, got {shown!r}")


@dataclass(frozen=True)
class Normalization:
    """What the model expects done to its input: ``x * scale`` (if set), then ``(x - mean) / std`` per band."""

    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    scale: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.scale is not None:
            object.__setattr__(self, "scale", float(self.scale))
        if len(self.mean) != len(self.std):
            raise _problem("normalization", f"as many std values as mean values ({len(self.mean)})", self.std)
        if any(not math.isfinite(v) for v in self.mean) or any(not (math.isfinite(v) and v > 0) for v in self.std):
            raise _problem("normalization", "finite means and positive finite stds", (self.mean, self.std))
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale != 0):
            raise _problem("normalization", "a finite non-zero scale or null", self.scale)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise a (bands, h, w) array (or a batch (n, bands, h, w)); returns float32."""
        y = np.asarray(x, dtype=np.float32)
        if self.scale is not None:
            y = y * np.float32(self.scale)
        if self.mean:
            if y.ndim < 3 or y.shape[-3] != len(self.mean):
                raise SarSegError(
                    f"normalisation expects {len(self.mean)} bands on axis -3, got an array of shape {y.shape}"
                )
            mean = np.asarray(self.mean, dtype=np.float32).reshape(-1, 1, 1)
            std = np.asarray(self.std, dtype=np.float32).reshape(-1, 1, 1)
            y = (y - mean) / std
        return y.astype(np.float32, copy=False)

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in ``sarseg.normalization``."""
        return {"mean": list(self.mean), "std": list(self.std), "scale": self.scale}


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the plugin needs to know about a model; built only through validation, so always consistent."""

    task: str
    name: str
    input_bands: tuple[str, ...]
    input_units: tuple[str, ...]
    normalization: Normalization
    tile_size: int
    tile_overlap: int
    output_kind: str
    format_version: int = FORMAT_VERSION
    description: str = ""
    class_names: tuple[str, ...] = ()
    class_colors: tuple[str, ...] = ()
    pixel_size_m: float | None = None
    sequence_length: int | None = None
    horizons: tuple[int, ...] = ()
    embedding_size: int | None = None
    training: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def input_domain(self) -> dict[str, Any] | None:
        """The envelope of the inputs the model was trained on (``training["input_domain"]``, see
        :mod:`sar_seg_plugin.core.domain`), or None when the model does not record one."""
        return self.training.get(ENVELOPE_KEY)

    @property
    def confidence_reference(self) -> dict[str, Any] | None:
        """The model's mean confidence and pixel accuracy on scenes it was not trained on
        (``training["confidence_reference"]``: ``{"where", "mean_confidence", "overall_accuracy"}``), which the
        segmentation log quotes beside a run's own confidence; None when the model does not record them."""
        ref = self.training.get(CONFIDENCE_REFERENCE_KEY)
        keys = ("where", "mean_confidence", "overall_accuracy")
        if not isinstance(ref, dict) or not all(k in ref for k in keys):
            return None
        if not isinstance(ref["where"], str) or not all(_is_number(ref[k]) for k in keys[1:]):
            return None
        return {k: ref[k] for k in keys}

    @property
    def size_multiple(self) -> int | None:
        """What the graph's tile height and width may be any multiple of (``training["size_multiple"]``, dividing
        the tile size), or None when the model only promises its tile size."""
        value = self.training.get(SIZE_MULTIPLE_KEY)
        return value if _is_int(value) and value > 0 and self.tile_size % value == 0 else None

    def __post_init__(self) -> None:
        for name in ("input_bands", "input_units", "class_names", "class_colors", "horizons"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))
        _check(self)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_types(m: ModelMetadata) -> None:
    def str_tuple(name: str) -> None:
        v = getattr(m, name)
        if not isinstance(v, tuple) or not all(isinstance(s, str) for s in v):
            raise _problem(name, "a list of strings", v)

    if not _is_int(m.format_version):
        raise _problem("format_version", "an integer", m.format_version)
    for name in ("task", "name", "description", "output_kind"):
        if not isinstance(getattr(m, name), str):
            raise _problem(name, "a string", getattr(m, name))
    for name in ("input_bands", "input_units", "class_names", "class_colors"):
        str_tuple(name)
    if not isinstance(m.normalization, Normalization):
        raise _problem("normalization", "a Normalization", m.normalization)
    for name in ("tile_size", "tile_overlap"):
        if not _is_int(getattr(m, name)):
            raise _problem(name, "an integer", getattr(m, name))
    for name in ("sequence_length", "embedding_size"):
        v = getattr(m, name)
        if v is not None and not _is_int(v):
            raise _problem(name, "an integer or null", v)
    if m.pixel_size_m is not None and not _is_number(m.pixel_size_m):
        raise _problem("pixel_size_m", "a number of metres or null", m.pixel_size_m)
    if not isinstance(m.horizons, tuple) or not all(_is_int(h) for h in m.horizons):
        raise _problem("horizons", "a list of integers (days ahead)", m.horizons)
    if not isinstance(m.training, dict):
        raise _problem("training", "a JSON object", m.training)


def _check_version(version: Any) -> None:
    if not _is_int(version):
        raise _problem("format_version", "an integer", version)
    if version > FORMAT_VERSION:
        raise MetadataFieldError(
            "format_version",
            f"metadata field '{PREFIX}format_version': format version {version} is newer than this plugin "
            f"supports ({FORMAT_VERSION}); update SAR Seg",
        )
    if version < 1:
        raise _problem("format_version", f"a format version from 1 to {FORMAT_VERSION}", version)


def _check(m: ModelMetadata) -> None:
    """Raise MetadataFieldError for the first field that is missing, mistyped or inconsistent."""
    _check_types(m)
    _check_version(m.format_version)
    if m.task not in TASKS:
        raise _problem("task", "one of " + ", ".join(repr(t) for t in TASKS), m.task)
    if not m.name.strip():
        raise _problem("name", "a non-empty model name", m.name)
    if not m.input_bands:
        raise _problem("input_bands", "at least one band name, e.g. ['VV', 'VH']", m.input_bands)
    if len(m.input_units) != len(m.input_bands):
        raise _problem(
            "input_units", f"one unit per input band ({len(m.input_bands)}: {', '.join(m.input_bands)})", m.input_units
        )
    for unit in m.input_units:
        if unit not in UNITS:
            raise _problem("input_units", "units among " + ", ".join(repr(u) for u in UNITS), unit)
    if m.normalization.mean and len(m.normalization.mean) != len(m.input_bands):
        raise _problem(
            "normalization", f"one mean and std per input band ({len(m.input_bands)})", m.normalization.to_json()
        )
    if m.tile_size <= 0 or m.tile_size % TILE_MULTIPLE:
        raise _problem("tile_size", f"a positive multiple of {TILE_MULTIPLE} pixels (U-Net tiles)", m.tile_size)
    if not 0 <= m.tile_overlap < m.tile_size:
        raise _problem("tile_overlap", f"pixels from 0 to less than the tile size ({m.tile_size})", m.tile_overlap)
    if m.output_kind not in OUTPUT_KINDS:
        raise _problem("output_kind", "one of " + ", ".join(repr(k) for k in OUTPUT_KINDS), m.output_kind)
    if m.output_kind == "classes" and not m.class_names:
        raise _problem("class_names", "the name of each output class (output kind 'classes')", m.class_names)
    if len(m.class_colors) != len(m.class_names):
        raise _problem(
            "class_colors", f"one colour per class name ({len(m.class_names)} colours)", list(m.class_colors)
        )
    for colour in m.class_colors:
        if not _COLOUR.match(colour):
            raise _problem("class_colors", "hex colours like '#1f78b4'", colour)
    if m.pixel_size_m is not None and not (math.isfinite(m.pixel_size_m) and m.pixel_size_m > 0):
        raise _problem("pixel_size_m", "a positive number of metres or null", m.pixel_size_m)
    if m.task == "forecast":
        if m.sequence_length is None or m.sequence_length < 1:
            expected = "the number of input dates (>= 1) for a forecast model"
            raise _problem("sequence_length", expected, m.sequence_length)
        if not m.horizons:
            raise _problem("horizons", "the forecast horizons in days, e.g. [1, 2, 3]", list(m.horizons))
    if any(h < 1 for h in m.horizons):
        raise _problem("horizons", "positive horizons in days", list(m.horizons))
    if m.task == "encoder" and (m.embedding_size is None or m.embedding_size < 1):
        raise _problem("embedding_size", "the embedding length (>= 1) for an encoder model", m.embedding_size)
    if ENVELOPE_KEY in m.training:
        try:
            validate_envelope(m.training[ENVELOPE_KEY], m.input_bands)
        except SarSegError as err:
            raise MetadataFieldError("training", f"metadata field '{PREFIX}training': {err}") from None


def _json_value(v: Any) -> Any:
    if isinstance(v, Normalization):
        return v.to_json()
    if isinstance(v, tuple):
        return list(v)
    return v


def metadata_to_props(meta: ModelMetadata) -> dict[str, str]:
    """The ``metadata_props`` training writes into the ONNX file: ``"sarseg.<field>"`` -> JSON value."""
    return {PREFIX + f.name: json.dumps(_json_value(getattr(meta, f.name))) for f in fields(ModelMetadata)}


def _with_source(source: str, err: SarSegError) -> SarSegError:
    return type(err)(err.field, f"{source}: {err}") if source and isinstance(err, MetadataFieldError) else err


# The fields every SAR Seg model must state, with what is expected of each; the others have defaults.
_EXPECTED = {
    "format_version": f"the metadata format version ({FORMAT_VERSION})",
    "task": "one of " + ", ".join(repr(t) for t in TASKS),
    "name": "the model name",
    "input_bands": "the input band names, e.g. ['VV', 'VH']",
    "input_units": "one unit per input band among " + ", ".join(repr(u) for u in UNITS),
    "normalization": 'an object {"mean": [...], "std": [...], "scale": number or null}',
    "tile_size": f"the tile size in pixels (a multiple of {TILE_MULTIPLE})",
    "tile_overlap": "the recommended tile overlap in pixels",
    "output_kind": "one of " + ", ".join(repr(k) for k in OUTPUT_KINDS),
}
_REQUIRED = tuple(_EXPECTED)


def _parse_normalization(value: Any) -> Normalization:
    if not isinstance(value, dict) or not set(value) <= {"mean", "std", "scale"}:
        raise _problem("normalization", 'an object {"mean": [...], "std": [...], "scale": number or null}', value)
    mean, std, scale = value.get("mean") or [], value.get("std") or [], value.get("scale")
    if not isinstance(mean, list) or not isinstance(std, list) or not all(_is_number(v) for v in mean + std):
        raise _problem("normalization", "mean and std as lists of numbers", value)
    if scale is not None and not _is_number(scale):
        raise _problem("normalization", "a numeric scale or null", value)
    return Normalization(tuple(mean), tuple(std), scale)


def is_deepness_props(props: Mapping[str, str]) -> bool:
    """Whether the props are Deepness metadata: a ``model_type`` key and no ``sarseg.`` key."""
    return "model_type" in props and not any(k.startswith(PREFIX) for k in props)


def metadata_from_props(
    props: Mapping[str, str],
    source: str = "",
    *,
    input_channels: int | None = None,
    input_size: int | None = None,
    output_channels: int | None = None,
) -> ModelMetadata:
    """Read and validate ``metadata_props`` (SAR Seg or Deepness style); ``source`` (the file) prefixes errors.

    The keyword arguments are static facts of the graph (``None`` when dynamic or unknown); only Deepness metadata
    uses them, to fill fields it may leave out.
    """
    try:
        if is_deepness_props(props):
            return deepness_metadata(
                props,
                source,
                input_channels=input_channels,
                input_size=input_size,
                output_channels=output_channels,
            )
        return _native_metadata(props)
    except MetadataFieldError as err:
        raise _with_source(source, err) from None
    except SarSegError as err:
        raise SarSegError(f"{source}: {err}" if source else str(err)) from None


def _native_metadata(props: Mapping[str, str]) -> ModelMetadata:
    if not any(k.startswith(PREFIX) for k in props):
        raise SarSegError(
            f"the model has no SAR Seg metadata ('{PREFIX}*' keys) nor Deepness metadata ('model_type'); "
            "export it with SAR Seg's training package or add the metadata"
        )
    known = {f.name for f in fields(ModelMetadata)}
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for key, text in props.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :]
        try:
            values[name] = json.loads(text)
        except (TypeError, json.JSONDecodeError):
            raise _problem(name, "a JSON value", text) from None
        if name not in known:
            unknown.append(key)
    # The version decides how to read everything else, so it is checked first (a newer format may add fields).
    if "format_version" not in values:
        raise _problem("format_version", _EXPECTED["format_version"], missing=True)
    _check_version(values["format_version"])
    if unknown:
        raise MetadataFieldError(
            unknown[0][len(PREFIX) :], f"unknown metadata field(s) {', '.join(repr(k) for k in unknown)}"
        )
    for name in _REQUIRED:
        if name not in values:
            raise _problem(name, _EXPECTED[name], missing=True)
    for name in ("input_bands", "input_units", "class_names", "class_colors", "horizons"):
        if name in values and not isinstance(values[name], list):
            raise _problem(name, "a list", values[name])
    values["normalization"] = _parse_normalization(values["normalization"])
    return ModelMetadata(**values)


# --- Deepness --------------------------------------------------------------------------------------------------

DEEPNESS_TASKS = {"Segmentor": ("segmentation", "classes"), "Regressor": ("segmentation", "continuous")}
DEEPNESS_DEFAULT_TILE = 512
DEEPNESS_DEFAULT_OVERLAP_PERCENT = 10
# Which Deepness key an error about a ModelMetadata field should name.
_DEEPNESS_KEYS = {
    "task": "model_type",
    "class_names": "class_names",
    "class_colors": "class_names",
    "pixel_size_m": "resolution",
    "tile_size": "tile_size",
    "tile_overlap": "tiles_overlap",
    "normalization": "standardization_mean/standardization_std",
    "input_bands": "standardization_mean",
    "input_units": "standardization_mean",
}


def _deepness_value(props: Mapping[str, str], key: str) -> Any:
    text = props[key]
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        pass
    try:  # Deepness also reads Python literals, e.g. class names with integer keys {0: 'background'}
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise SarSegError(f"Deepness metadata '{key}': expected a JSON value, got {text!r}") from None


def _deepness_error(key: str, expected: str, got: Any) -> SarSegError:
    return SarSegError(f"Deepness metadata '{key}': expected {expected}, got {got!r}")


def deepness_metadata(
    props: Mapping[str, str],
    source: str = "",
    *,
    input_channels: int | None = None,
    input_size: int | None = None,
    output_channels: int | None = None,
) -> ModelMetadata:
    """Map Deepness-style metadata (QGIS Deepness plugin model zoo) onto ``ModelMetadata``.

    ==================== ====================================================================================
    Deepness key         SAR Seg field
    ==================== ====================================================================================
    model_type           ``Segmentor`` -> task segmentation, output classes; ``Regressor`` -> segmentation,
                         output continuous; other types (Detector, ...) are refused
    class_names          class_names, from a dict ``{"0": "name", ...}`` (ids 0..n-1) or a list; absent: one
                         "class i" per output channel; colours come from ``DEFAULT_PALETTE``
    resolution           pixel_size_m = resolution / 100 (Deepness gives centimetres per pixel)
    tile_size            tile_size (absent: the graph's fixed input size, else 512)
    tiles_overlap        tile_overlap = round(tile_size * tiles_overlap / 100) (Deepness gives percent;
                         absent: 10 %)
    standardization_*    normalization mean/std; scale is always 1/255, because Deepness divides its 8-bit
                         input by 255 before standardising
    ==================== ====================================================================================

    Bands are named "band 1", "band 2", ... (as many as mean/std values, else the graph's input channels, else 3),
    all in unit "uint8". Every Deepness prop is kept, decoded, in ``training["deepness"]``.
    """
    decoded = {k: _deepness_value(props, k) for k in props}
    model_type = str(decoded["model_type"]).capitalize()
    if model_type not in DEEPNESS_TASKS:
        expected = "one of " + ", ".join(DEEPNESS_TASKS) + " (other Deepness model types are not supported)"
        raise _deepness_error("model_type", expected, model_type)
    task, output_kind = DEEPNESS_TASKS[model_type]

    names = decoded.get("class_names", decoded.get("names"))
    if names is None:
        count = output_channels or 1
        class_names = tuple(f"class {i}" for i in range(count))
    elif isinstance(names, dict):
        try:
            ordered = sorted((int(k), v) for k, v in names.items())
        except (TypeError, ValueError):
            raise _deepness_error("class_names", "class ids 0, 1, 2, ... as keys", names) from None
        if [i for i, _ in ordered] != list(range(len(ordered))):
            raise _deepness_error("class_names", "consecutive class ids 0, 1, 2, ...", names)
        class_names = tuple(str(v) for _, v in ordered)
    elif isinstance(names, list):
        class_names = tuple(str(v) for v in names)
    else:
        raise _deepness_error("class_names", 'a dict {"0": "name", ...} or a list of names', names)

    resolution = decoded.get("resolution")
    if resolution is not None and not _is_number(resolution):
        raise _deepness_error("resolution", "centimetres per pixel (a number)", resolution)
    tile_size = decoded.get("tile_size", decoded.get("tiles_size", input_size or DEEPNESS_DEFAULT_TILE))
    if not _is_int(tile_size):
        raise _deepness_error("tile_size", "an integer number of pixels", tile_size)
    overlap_percent = decoded.get("tiles_overlap", DEEPNESS_DEFAULT_OVERLAP_PERCENT)
    if not _is_number(overlap_percent) or not 0 <= overlap_percent < 100:
        raise _deepness_error("tiles_overlap", "a percentage from 0 to less than 100", overlap_percent)

    mean = decoded.get("standardization_mean", [])
    std = decoded.get("standardization_std", [])
    for key, values in (("standardization_mean", mean), ("standardization_std", std)):
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            raise _deepness_error(key, "a list of numbers, one per band", values)
    band_count = len(mean) or len(std) or input_channels or 3
    stem = re.split(r"[\\/]", source)[-1].rsplit(".", 1)[0] if source else ""
    try:
        return ModelMetadata(
            task=task,
            name=stem or "Deepness model",
            description=f"Deepness model ({model_type})",
            input_bands=tuple(f"band {i + 1}" for i in range(band_count)),
            input_units=("uint8",) * band_count,
            normalization=Normalization(tuple(mean), tuple(std), 1.0 / 255.0),
            tile_size=tile_size,
            tile_overlap=int(round(tile_size * overlap_percent / 100.0)),
            output_kind=output_kind,
            class_names=class_names,
            class_colors=tuple(DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)] for i in range(len(class_names))),
            pixel_size_m=None if resolution is None else float(resolution) / 100.0,
            training={"deepness": json.loads(json.dumps(decoded, default=str))},
        )
    except MetadataFieldError as err:
        key = _DEEPNESS_KEYS.get(err.field, err.field)
        detail = str(err).split(": ", 1)[-1]
        raise MetadataFieldError(err.field, f"Deepness metadata '{key}': {detail}") from None


__all__ = [
    "DEFAULT_PALETTE",
    "LAND_COVER_CLASSES",
    "LAND_COVER_COLOURS",
    "FORMAT_VERSION",
    "MetadataFieldError",
    "ModelMetadata",
    "Normalization",
    "PREFIX",
    "deepness_metadata",
    "hex_rgba",
    "is_deepness_props",
    "metadata_from_props",
    "metadata_to_props",
]
