"""A fast copy of a model (the bundled int8 U-Net) checked against its reference (the float32 one) on the run's data.

Quantised convolutions run through other onnxruntime kernels on other CPUs (with or without VNNI, AVX-512, ARM),
and values unlike the calibration tiles can fall outside the ranges the copy was quantised for: agreement measured
on two CPUs and on synthetic scenes does not promise it on a user's CPU and raster. So the first tiles holding data
run through both models; the reference's classes are written for them, and when the two agree on fewer than
:data:`MIN_AGREEMENT` of those pixels the reference runs the rest of the raster. Pure numpy: no QGIS, no
onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Pixels holding data compared before deciding: two of the bundled model's 384 px tiles.
CHECK_PIXELS = 2 * 384 * 384
#: Share of those pixels on which the fast copy must give the reference's class. On 108 evaluation-only scenes of
#: the 18 input domains of the model card (seeds 71200-71205, one 384 px tile each), the bundled int8 copy agreed on
#: 98.1 % of a tile at worst and 99.47 % on average (AMD Zen 3, AVX2, no VNNI); a copy whose kernels misbehave, or
#: a raster far outside the ranges it was quantised for, differs on more.
MIN_AGREEMENT = 0.98
#: A raster of fewer tiles than this runs on the reference alone: the check (its tiles through both models, and
#: the reference's session) would cost more than the fast copy saves on the tiles left. Two CPU threads here: a
#: 384 px tile takes 0.145 s in float32 and 0.093 s in int8, so the check's 3 tiles cost 0.28 s more than float32
#: alone, won back after about 5 int8 tiles, plus the reference's session (0.1-0.3 s).
MIN_TILES = 12
#: Output metadata item recording which model ran and the agreement measured.
CHECK_KEY = "SARSEG_MODEL_CHECK"


class ModelCheck:
    """Agreement of a fast model's classes with its reference's, tile by tile, until :data:`CHECK_PIXELS` pixels
    holding data have been compared; then :attr:`keep_fast` says which model runs the rest.

    ``fast_name`` and ``reference_name`` name the two models in what :meth:`describe` says.
    """

    def __init__(
        self,
        fast_name: str,
        reference_name: str,
        min_pixels: int = CHECK_PIXELS,
        min_agreement: float = MIN_AGREEMENT,
    ) -> None:
        if min_pixels < 1 or not 0.0 < min_agreement <= 1.0:
            raise ValueError(f"min_pixels must be >= 1 and min_agreement in (0, 1], got {min_pixels}, {min_agreement}")
        self.fast_name, self.reference_name = fast_name, reference_name
        self.min_pixels, self.min_agreement = min_pixels, min_agreement
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
        :data:`CHECK_PIXELS` pixels have been compared."""
        if fast.shape != reference.shape or fast.ndim != 4 or len(valid) != fast.shape[0]:
            raise ValueError(
                f"outputs {fast.shape} and {reference.shape} with {len(valid)} masks: expected two (n, classes, "
                "h, w) arrays of one shape and n masks"
            )
        for i, ok in enumerate(valid):
            th, tw = ok.shape
            a = np.argmax(fast[i, :, :th, :tw], axis=0)[ok]
            b = np.argmax(reference[i, :, :th, :tw], axis=0)[ok]
            self.same += int(np.count_nonzero(a == b))
            self.pixels += int(a.size)
            self.tiles += 1
        if self.pending and self.pixels >= self.min_pixels:
            self.keep_fast = self.agreement >= self.min_agreement

    def finish(self) -> None:
        """End of the raster before :data:`CHECK_PIXELS` pixels: every tile ran through both, so the reference's
        classes were written throughout."""
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
            f"pixels holding data of the {self.tiles} tile{'s' if self.tiles != 1 else ''} run through both"
        )
        if self.pixels < self.min_pixels:
            return f"{measured}: the raster held no more, so the classes written are all {self.reference_name}'s"
        if self.keep_fast:
            return f"{measured}: {self.fast_name} runs the rest of the raster"
        return (
            f"{measured}, under the {self.min_agreement:.0%} it must keep: {self.reference_name} runs the rest of "
            "the raster"
        )
