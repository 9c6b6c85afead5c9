"""Multi-temporal speckle filter (Quegan & Yu 2001): co-registered dates filtered together, one output per date.

For N dates of one band, with E[.] a local mean (a window x window boxcar over valid pixels):

    J_k = E[I_k] / N * sum_i ( I_i / E[I_i] )

Each date keeps its own local level E[I_k] and takes its texture from all dates, so the speckle of J_k is an
average over N independent looks of the scene: on a homogeneous area the equivalent number of looks grows up to
N times, with no loss of resolution (unlike a spatial filter of the same strength). Dates must be of the same
area; rasters on other grids are aligned to the first (the code of ``stack_time_series``). Filtering is done in
linear power, dB bands are converted and converted back. No qgis import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from . import radiometry
from .errors import CancelledError, SarSegError
from .outputs import OutputSet, check_destinations
from .raster_io import (
    GeoTiffWriter,
    check_not_same_file,
    iter_blocks,
    open_raster,
    read_info,
    read_window,
    valid_mask,
)
from .speckle import local_moments
from .timeseries import Grid, aligned, release
from .units import AUTO

DEFAULT_WINDOW = 7


def quegan_filter(stack: np.ndarray, valid: np.ndarray, window: int = DEFAULT_WINDOW) -> np.ndarray:
    """Filter a (N, H, W) stack of one band's intensities (linear power); ``valid`` (N, H, W). Invalid pixels and
    pixels without a valid neighbour are NaN. Each pixel averages the dates where it is valid."""
    if window < 1 or window % 2 == 0:
        raise SarSegError(f"The window must be an odd number of pixels (3, 5, 7, ...); {window} given.")
    n = stack.shape[0]
    ratio_sum = np.zeros(stack.shape[1:], np.float64)
    count = np.zeros(stack.shape[1:], np.float64)
    means = np.empty(stack.shape, np.float64)
    for i in range(n):
        x = np.where(valid[i], stack[i], 0.0).astype(np.float64)
        _, mean, _ = local_moments(x, valid[i], window)
        means[i] = mean
        ok = valid[i] & np.isfinite(mean) & (mean > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio_sum += np.where(ok, x / np.where(ok, mean, 1.0), 0.0)
        count += ok
    with np.errstate(divide="ignore", invalid="ignore"):
        average = np.where(count > 0, ratio_sum / count, np.nan)
    out = means * average[None]
    out[~valid] = np.nan
    return out.astype(np.float32)


def output_paths(inputs: Sequence[str], folder: str, suffix: str = "_mtf") -> list[str]:
    """One output per input, named after it (its date stays in the name)."""
    names = [Path(p).stem + suffix + ".tif" for p in inputs]
    if len(set(names)) != len(names):
        raise SarSegError("Two inputs have the same file name: rename one, the outputs are named after them.")
    return [str(Path(folder) / name) for name in names]


def multitemporal_filter_rasters(
    inputs: Sequence[str],
    folder: str,
    window: int = DEFAULT_WINDOW,
    *,
    input_scale: str = AUTO,
    block_size: int = 512,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[str]:
    """Filter the dated rasters ``inputs`` together, block by block with a halo of ``window // 2``; write one
    raster per input into ``folder`` (all or none). Bands are matched by position and must agree in number."""
    from .preprocess import check_has_data, read_scales

    if len(inputs) < 2:
        raise SarSegError("A multi-temporal filter needs at least 2 dates; give more rasters of the same area.")
    if window < 3 or window % 2 == 0:
        raise SarSegError(f"The window must be an odd number of pixels, 3 or more; {window} given.")
    if not Path(folder).is_dir():
        raise SarSegError(f"The output folder '{folder}' does not exist. Create it or choose another.")
    outs = output_paths(inputs, folder)
    for out in outs:
        check_not_same_file(list(inputs), out)
    say = log or (lambda _m: None)
    info = read_info(open_raster(inputs[0]))
    grid = Grid.of(info)
    sources: list = []
    try:
        scales, descriptions = [], []
        for path in inputs:
            own = open_raster(path)
            own_info = read_info(own)
            if own_info.band_count != info.band_count:
                raise SarSegError(
                    f"'{Path(path).name}' has {own_info.band_count} bands, '{Path(inputs[0]).name}' "
                    f"{info.band_count}: give rasters with the same bands (e.g. VV and VH) for every date."
                )
            samples = check_has_data(own, own_info)
            scales.append([sc.scale for sc in read_scales(own_info, samples, input_scale, log, warn)])
            descriptions.append(list(own_info.descriptions))
            ds = aligned(path, grid, "bilinear")
            if ds.GetDescription().startswith("/vsimem/"):
                say(f"'{Path(path).name}' was resampled (bilinear) to the grid of '{Path(inputs[0]).name}'.")
            sources.append(ds)
        check_destinations([(out, info.width * info.height * 4 * info.band_count) for out in outs], say)
        blocks = iter_blocks(info.width, info.height, block_size, window // 2)
        say(f"{len(inputs)} dates, {info.band_count} band(s), window {window}: ENL gain up to x{len(inputs)}")
        bands = list(range(1, info.band_count + 1))
        with OutputSet() as outputs, ExitStack() as stack:
            writers = [
                stack.enter_context(
                    GeoTiffWriter(
                        out, info.width, info.height, info.band_count, np.float32, grid.geotransform, grid.projection,
                        nodata=float("nan"), descriptions=desc, units=sc, outputs=outputs,
                        metadata={"SARSEG_MULTITEMPORAL_FILTER": f"Quegan-Yu, {len(inputs)} dates, window {window}"},
                    )
                )
                for out, sc, desc in zip(outs, scales, descriptions)
            ]  # fmt: skip
            for k, block in enumerate(blocks):
                if is_canceled and is_canceled():
                    raise CancelledError("Cancelled by the user.")
                data = []
                for ds in sources:
                    d = read_window(ds, block.read, bands, np.float64)
                    data.append((d, valid_mask(d, [ds.GetRasterBand(b).GetNoDataValue() for b in bands])))
                for b in range(info.band_count):
                    stack_b = np.stack([d[b] for d, _ in data])
                    valid = np.stack([v[b] for _, v in data])
                    for i, sc in enumerate(scales):
                        if sc[b] == radiometry.DB:
                            stack_b[i] = radiometry.from_db(stack_b[i])
                    valid &= np.isfinite(stack_b) & (stack_b > 0)
                    filtered = quegan_filter(stack_b, valid, window)
                    for i, sc in enumerate(scales):
                        y = filtered[i][block.inner]
                        if sc[b] == radiometry.DB:
                            y = np.where(np.isfinite(y), radiometry.to_db(y), np.nan)
                        data[i][0][b, block.inner[0], block.inner[1]] = y
                for (d, _), writer in zip(data, writers):
                    writer.write(block.core, d[(slice(None), *block.inner)].astype(np.float32))
                if progress:
                    progress(100.0 * (k + 1) / len(blocks))
    finally:
        for ds in sources:
            release(ds)
        sources.clear()
    return outs
