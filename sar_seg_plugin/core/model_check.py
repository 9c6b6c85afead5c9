"""A fast copy of a model (the bundled int8 U-Net) checked against its reference (the float32 one) on the run's data.

Quantised convolutions run through other onnxruntime kernels on other CPUs (with or without VNNI, AVX-512, ARM),
and values unlike the calibration tiles can fall outside the ranges the copy was quantised for: agreement measured
on two CPUs and on synthetic scenes does not promise it on a user's CPU and raster. So before the raster is
segmented, tiles spread over the whole raster (:func:`spread_tiles`) are read, and those holding data run through
both models, the most unlike one another first (:func:`unlike_first`: by their backscatter); when the two agree on
fewer than :data:`MIN_AGREEMENT` of those pixels, or on fewer than :data:`TILE_FLOOR` of any one tile's, the
reference segments the raster. Tiles spread over the raster rather than its first ones, picked for unlike ground,
and a floor per tile as well as the pooled share: a raster that begins with open sea, or is mostly sea, would
otherwise be judged on its easiest pixels (the copy gives the reference's class on all of calm water, and the sea
would hide land on which it does not). Pure numpy: no QGIS, no onnxruntime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Pixels holding data compared before deciding: three of the bundled model's 384 px tiles.
CHECK_PIXELS = 3 * 384 * 384
#: Tiles read (spread over the raster) to choose those compared from; tiles without data are not run.
MAX_CHECK_TILES = 12
#: Share of those pixels on which the fast copy must give the reference's class. On 108 evaluation-only scenes of
#: the 18 input domains of the model card (seeds 71200-71205, one 384 px tile each), the bundled int8 copy agreed on
#: 98.1 % of a tile at worst and 99.47 % on average (AMD Zen 3, AVX2, no VNNI); a copy whose kernels misbehave, or
#: a raster far outside the ranges it was quantised for, differs on more.
MIN_AGREEMENT = 0.98
#: Share of its pixels on which the copy must give the reference's class in every compared tile holding at least
#: a quarter of a tile of data: 1.1 points under the worst tile of those 108.
TILE_FLOOR = 0.97
#: A raster of fewer tiles than this runs on the reference alone: the check (its tiles through the model not chosen,
#: and the reference's session) would cost more than the fast copy saves. Two CPU threads here: a 384 px tile takes
#: 0.145 s in float32 and 0.093 s in int8 (0.052 s saved per tile); the check's 3-4 tiles (three tiles' worth of
#: pixels; tiles cut at the raster's edges hold fewer) run through both, and the chosen model's outputs of them are
#: kept, so the check costs 0.45-0.6 s of float32 and 0.1-0.3 s for the reference's session: won back after 11-17
#: int8 tiles.
MIN_TILES = 16
#: Output metadata item recording which model ran and the agreement measured.
CHECK_KEY = "SARSEG_MODEL_CHECK"


class ModelCheck:
    """Agreement of a fast model's classes with its reference's, tile by tile, until :data:`CHECK_PIXELS` pixels
    holding data have been compared; then :attr:`keep_fast` says which model segments the raster.

    ``fast_name`` and ``reference_name`` name the two models in what :meth:`describe` says; a tile whose share
    falls under ``tile_floor`` decides at once (the reference), if it holds at least ``min_tile_pixels`` pixels of
    data (fewer are too few to tell).
    """

    def __init__(
        self,
        fast_name: str,
        reference_name: str,
        min_pixels: int = CHECK_PIXELS,
        min_agreement: float = MIN_AGREEMENT,
        tile_floor: float = TILE_FLOOR,
        min_tile_pixels: int = 384 * 384 // 4,
    ) -> None:
        if min_pixels < 1 or not 0.0 < min_agreement <= 1.0 or not 0.0 <= tile_floor <= 1.0:
            raise ValueError(
                f"min_pixels must be >= 1, min_agreement in (0, 1] and tile_floor in [0, 1], got {min_pixels}, "
                f"{min_agreement}, {tile_floor}"
            )
        self.fast_name, self.reference_name = fast_name, reference_name
        self.min_pixels, self.min_agreement = min_pixels, min_agreement
        self.tile_floor, self.min_tile_pixels = tile_floor, min_tile_pixels
        self.worst = float("nan")  # the lowest share of a tile holding at least min_tile_pixels pixels of data
        self.same = 0
        self.pixels = 0
        self.tiles = 0
        self.keep_fast: bool | None = None  # None while the check goes on
        self.raster_tiles: int | None = None  # set by skip(): the raster's tile count, too few to check

    def skip(self, tiles: int) -> None:
        """A raster of ``tiles`` tiles, too few for the check to pay: the reference runs them all, unchecked."""
        self.raster_tiles = tiles
        self.keep_fast = False

    @property
    def pending(self) -> bool:
        """True while tiles still run through both models."""
        return self.keep_fast is None

    @property
    def agreement(self) -> float:
        """Share of the compared pixels given the same class (nan before any). Pixels are counted per tile: those
        in the overlap of two tiles count twice."""
        return self.same / self.pixels if self.pixels else float("nan")

    def add(self, fast: np.ndarray, reference: np.ndarray, valid: Sequence[np.ndarray]) -> None:
        """Compare one batch: model outputs (n, classes, h, w) of both models, and each tile's mask of pixels
        holding data (``valid[i]``, at most h x w: the part of the tile on the raster). Decides once
        :data:`CHECK_PIXELS` pixels have been compared, or at once when a tile falls under the floor."""
        if fast.shape != reference.shape or fast.ndim != 4 or len(valid) != fast.shape[0]:
            raise ValueError(
                f"outputs {fast.shape} and {reference.shape} with {len(valid)} masks: expected two (n, classes, "
                "h, w) arrays of one shape and n masks"
            )
        for i, ok in enumerate(valid):
            th, tw = ok.shape
            a = np.argmax(fast[i, :, :th, :tw], axis=0)[ok]
            b = np.argmax(reference[i, :, :th, :tw], axis=0)[ok]
            same = int(np.count_nonzero(a == b))
            self.same += same
            self.pixels += int(a.size)
            self.tiles += 1
            if a.size and a.size >= self.min_tile_pixels:
                share = same / a.size
                self.worst = share if math.isnan(self.worst) else min(self.worst, share)
        if self.pending and self.below_floor:
            self.keep_fast = False
        elif self.pending and self.pixels >= self.min_pixels:
            self.keep_fast = self.agreement >= self.min_agreement

    @property
    def below_floor(self) -> bool:
        """True when a compared tile fell under the floor."""
        return self.worst < self.tile_floor

    @property
    def refused(self) -> bool:
        """True when the copy was measured and found off (not when the raster was too small or held too little
        data to measure it)."""
        return self.keep_fast is False and (self.below_floor or self.pixels >= self.min_pixels)

    def finish(self) -> None:
        """No tile left to compare: fewer than :data:`CHECK_PIXELS` pixels holding data were found in the tiles
        tried, too few to judge the fast copy by, so the reference segments the raster."""
        if self.pending:
            self.keep_fast = False

    def describe(self) -> str:
        """What was measured and decided, for the log and the outputs' metadata."""
        if self.raster_tiles is not None:
            return (
                f"the raster's {self.raster_tiles} tile{'s are' if self.raster_tiles != 1 else ' is'} fewer than "
                f"{MIN_TILES}, too few for {self.fast_name} to win back its check: {self.reference_name} runs them all"
            )
        if self.pixels == 0:
            return f"no pixel holding data to compare {self.fast_name} with {self.reference_name}"
        measured = (
            f"{self.fast_name} gave the class of {self.reference_name} on {self.agreement:.2%} of the {self.pixels:,} "
            f"pixels holding data of the {self.tiles} tile{'s' if self.tiles != 1 else ''} spread over the raster "
            "and run through both"
        )
        if not math.isnan(self.worst):
            measured += f" ({self.worst:.2%} on the tile where they agreed least)"
        if self.below_floor:
            return (
                f"{measured}, under the {self.tile_floor:.0%} each tile must keep: {self.reference_name} segments the "
                "raster"
            )
        if self.pixels < self.min_pixels:
            return (
                f"{measured}, fewer than the {self.min_pixels:,} it is judged on: {self.reference_name} segments the "
                "raster"
            )
        if self.keep_fast:
            return f"{measured}: {self.fast_name} segments the raster"
        return f"{measured}, under the {self.min_agreement:.0%} it must keep: {self.reference_name} segments the raster"


def spread_tiles(rows: int, columns: int, count: int) -> list[tuple[int, int]]:
    """Up to ``count`` distinct (row, column) indices of a ``rows`` x ``columns`` tile grid, spread over all of it:
    the points of the Halton sequence (base 3 down the rows, 2 across the columns; low-discrepancy, so any first
    few cover the grid evenly, the first five every quadrant) taken to the tile they fall in, in that order."""
    if rows < 1 or columns < 1:
        return []
    picked: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    limit = min(count, rows * columns)
    i = 0
    while len(picked) < limit and i < 64 * limit + rows * columns:
        i += 1
        cell = (int(_radical_inverse(i, 3) * rows), int(_radical_inverse(i, 2) * columns))
        if cell not in seen:
            seen.add(cell)
            picked.append(cell)
    return picked


def _radical_inverse(i: int, base: int) -> float:
    """The ``i``-th point of the van der Corput sequence in ``base`` (the digits of ``i`` mirrored about the point)."""
    value, scale = 0.0, 1.0 / base
    while i:
        i, digit = divmod(i, base)
        value += digit * scale
        scale /= base
    return value


def tile_features(tile: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
    """What a tile's ground looks like to the model: per band, the 10th, 50th and 90th percentiles of its input
    values (``tile`` (bands, h, w), normalised as the model reads it) over the pixels holding data (``valid``, at
    most h x w); None where the tile holds none."""
    h, w = valid.shape
    values = tile[:, :h, :w][:, valid]
    if values.shape[1] == 0:
        return None
    return np.percentile(values, (10, 50, 90), axis=1).T.ravel()


def unlike_first(features: Sequence[np.ndarray]) -> list[int]:
    """Indices of ``features`` (one vector per tile) in the order a check should take them: first the tile furthest
    from the mean of them all, then each time the one furthest from its nearest already taken (farthest-point
    order): the few tiles compared cover the kinds of ground the raster holds, not one kind many times."""
    if not features:
        return []
    points = np.asarray(features, dtype=np.float64)
    first = int(np.argmax(((points - points.mean(axis=0)) ** 2).sum(axis=1)))
    order = [first]
    nearest = ((points - points[first]) ** 2).sum(axis=1)
    while len(order) < len(points):
        nearest[order] = -1.0
        pick = int(np.argmax(nearest))
        order.append(pick)
        nearest = np.minimum(nearest, ((points - points[pick]) ** 2).sum(axis=1))
    return order
