"""The unit rule every tool follows (dB or linear power, by unit and values) and bands matched by name."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from sar_seg_plugin.core import units
from sar_seg_plugin.core.errors import SarSegError
from sar_seg_plugin.core.units import DB, LINEAR

RNG = np.random.default_rng(3)
#: Speckled sigma0 of a mixed scene in linear power (water, fields, town): medians about 0.003 to 0.3.
LIN = np.concatenate([m * RNG.gamma(4.4, 1 / 4.4, 4000) for m in (0.005, 0.03, 0.08, 0.3)])
DBV = 10 * np.log10(LIN)


def resolve(sample, unit="", description="VV", dtype=np.float32, choice=units.AUTO):
    return units.resolve_band(1, "band 1", unit, description, np.dtype(dtype), np.asarray(sample), choice)


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (LIN, LINEAR),
        (DBV, DB),
        (DBV + 10, DB),  # a bright (urban) scene in dB: median about -3 dB
        ((DBV - DBV.mean()) / DBV.std(), None),  # a z-score
        (np.sqrt(LIN) * 1000, None),  # amplitude digital numbers
        (np.round(DBV * 100), None),  # dB x 100
        (np.full(100, 1e-9), None),
        (np.concatenate([np.zeros(20000), LIN]), LINEAR),  # a swath filled with undeclared zeros
    ],
)
def test_values_tell_db_from_linear_power_or_neither(sample, expected):
    assert units.scale_from_values(sample).scale == expected


def test_a_unit_the_values_agree_with_decides():
    scale = resolve(DBV, unit="dB")
    assert (scale.scale, scale.source, scale.warning) == (DB, "unit", False)
    assert "by its unit 'dB', and its values agree" in scale.note


@pytest.mark.parametrize(("sample", "unit", "expected"), [(DBV, "linear", DB), (LIN, "dB", LINEAR)])
def test_values_win_over_a_unit_that_contradicts_them_with_a_warning(sample, unit, expected):
    scale = resolve(sample, unit=unit)
    assert (scale.scale, scale.source, scale.warning) == (expected, "values", True)
    assert "but its values are" in scale.note and "Correct the band's unit" in scale.note


@pytest.mark.parametrize(("sample", "expected"), [(LIN, LINEAR), (DBV, DB)])
def test_without_a_unit_the_values_decide(sample, expected):
    scale = resolve(sample)
    assert (scale.scale, scale.source, scale.warning) == (expected, "values", False)
    assert "no dB or linear unit" in scale.note


def test_a_description_naming_db_counts_as_a_unit():
    """ESA SNAP names dB bands 'Sigma0_VV_db'."""
    assert resolve(DBV, description="Sigma0_VV_db").source == "unit"
    assert units.polarisation_of("Sigma0_VV_db") == "VV"


def test_values_that_are_neither_and_no_unit_are_refused():
    with pytest.raises(SarSegError, match="Cannot tell whether band 1 holds linear power or dB.*centred on 0"):
        resolve((DBV - DBV.mean()) / DBV.std())


def test_scaled_db_integers_are_refused_with_the_likely_scale():
    with pytest.raises(SarSegError, match=r"int16 integers .* dB scaled by an integer factor .* at a scale of 100"):
        resolve(np.round(DBV * 100), dtype=np.int16)


def test_digital_numbers_are_refused_with_how_to_calibrate():
    with pytest.raises(SarSegError, match=r"uint16 integers .* uncalibrated digital numbers .* SENTINEL1_CALIB"):
        resolve(np.round(np.sqrt(LIN) * 1000), dtype=np.uint16)


def test_a_class_map_is_not_read_as_linear_power():
    with pytest.raises(SarSegError, match="uint8 integers"):
        resolve(RNG.integers(0, 5, 1000), dtype=np.uint8)


def test_integers_in_the_range_of_db_are_read_as_db():
    assert resolve(np.round(DBV), dtype=np.int16).scale == DB


def test_the_users_choice_wins_and_a_disagreement_is_a_warning():
    scale = resolve(DBV, choice=LINEAR)
    assert (scale.scale, scale.source, scale.warning) == (LINEAR, "choice", True)
    assert "although its values look like dB" in scale.note
    assert not resolve(LIN, choice=LINEAR).warning
    assert resolve(np.round(DBV * 100), dtype=np.int16, choice=DB).scale == DB  # no refusal when the user says


@pytest.mark.parametrize(("unit", "description", "match"), [
    ("z-score", "VV", "normalised values"),
    ("", "Amplitude_VV", "amplitude"),
])  # fmt: skip
def test_normalised_and_amplitude_bands_are_refused(unit, description, match):
    with pytest.raises(SarSegError, match=match):
        resolve(LIN, unit=unit, description=description)


def test_negative_linear_power_is_reported():
    noisy = LIN - 0.004  # thermal-noise subtraction leaves negatives over dark water
    scale = resolve(noisy, unit="linear")
    share = (noisy < 0).mean()
    assert scale.scale == LINEAR and scale.warning
    assert f"{share:.1%} of its values are negative" in scale.note


def test_a_raster_written_by_normalize_is_refused():
    info = SimpleNamespace(metadata={units.NORMALIZATION_METADATA_KEY: "{}"}, path="n.tif", band_count=1,
                           units=[""], descriptions=["VV"], dtype=np.dtype(np.float32))  # fmt: skip
    with pytest.raises(SarSegError, match="written by 'Normalize'"):
        units.resolve_scales(info, [LIN])


# --- bands matched by name -------------------------------------------------------------------------------------


def test_bands_named_in_another_order_are_matched_by_name():
    match = units.match_bands(["VV", "VH"], ["VH", "VV"])
    assert match.bands == (2, 1)
    assert "not by position" in match.note


def test_extra_bands_are_left_out_when_names_say_which_to_use():
    match = units.match_bands(["VV", "VH"], ["Sigma0_VH_db", "ratio", "Sigma0_VV_db"])
    assert match.bands == (3, 1)
    assert "band(s) 2 not used" in match.note


def test_unnamed_bands_are_taken_in_order_and_the_log_says_so():
    match = units.match_bands(["VV", "VH"], ["", ""])
    assert match.bands == (1, 2)
    assert "not named as polarisations: taken in order" in match.note


@pytest.mark.parametrize(("descriptions", "fragment"), [
    (["HH", "HV"], "the raster holds HH/HV"),
    (["VV", "VV", "VH"], "bands 1, 2 of the raster are all named VV"),
    (["a"], "expects 2 bands: VV, VH; the raster has 1 band"),
])  # fmt: skip
def test_missing_doubled_or_too_few_bands_are_refused(descriptions, fragment):
    with pytest.raises(SarSegError, match=fragment):
        units.match_bands(["VV", "VH"], descriptions)


def test_model_input_converts_each_band_to_the_models_unit():
    meta = SimpleNamespace(name="m", input_bands=("VV", "VH"), input_units=("dB", "dB"))
    info = SimpleNamespace(metadata={}, path="x.tif", band_count=2, units=["linear", "dB"],
                           descriptions=["VH", "VV"], dtype=np.dtype(np.float32))  # fmt: skip
    plan = units.plan_model_input(meta, info, [LIN, DBV])  # band 1 (VH) linear, band 2 (VV) dB
    assert plan.bands == (2, 1)
    assert plan.conversions == ("", units.TO_DB)
    block = np.stack([DBV[:100], LIN[:100]]).astype(np.float32).reshape(2, 10, 10)
    out = plan.apply(block.copy())
    np.testing.assert_allclose(out[0], block[0])
    np.testing.assert_allclose(out[1], 10 * np.log10(block[1]), rtol=1e-5)
    linear_model = SimpleNamespace(name="m", input_bands=("VV", "VH"), input_units=("linear", "linear"))
    assert units.plan_model_input(linear_model, info, [LIN, DBV]).conversions == (units.TO_LINEAR, "")


def test_gamma0_bands_reach_the_model_as_sigma0_in_its_unit():
    """gamma0 = sigma0 / cos(incidence): a dB model gets 10 log10(gamma0 cos 40 deg), a linear one gamma0 cos 40 deg."""
    cos40 = float(np.cos(np.radians(40.0)))
    info = SimpleNamespace(metadata={"INCIDENCE_ANGLE": "40"}, path="x.tif", band_count=2, units=["linear", "dB"],
                           descriptions=["Gamma0_VV", "Gamma0_VH_db"], dtype=np.dtype(np.float32))  # fmt: skip
    block = np.stack([LIN[:100], DBV[:100]]).astype(np.float32).reshape(2, 10, 10)  # VV linear, VH dB
    db_model = SimpleNamespace(name="m", input_bands=("VV", "VH"), input_units=("dB", "dB"))
    plan = units.plan_model_input(db_model, info, [LIN, DBV])
    assert plan.radiometry.radiometry == "gamma0" and not plan.warnings
    out = plan.apply(block.copy())
    np.testing.assert_allclose(out[0], 10 * np.log10(block[0].astype(np.float64) * cos40), atol=1e-4)
    np.testing.assert_allclose(out[1], 10 * np.log10(10 ** (block[1].astype(np.float64) / 10) * cos40), atol=1e-4)
    assert any("The raster holds gamma0" in note for note in plan.notes)
    assert "gamma0 converted to sigma0 at 40 deg" in plan.metadata()["SARSEG_INPUT_RADIOMETRY"]
    linear_model = SimpleNamespace(name="m", input_bands=("VV", "VH"), input_units=("linear", "linear"))
    out = units.plan_model_input(linear_model, info, [LIN, DBV]).apply(block.copy())
    np.testing.assert_allclose(out[0], block[0] * cos40, rtol=1e-5)
    np.testing.assert_allclose(out[1], 10 ** (block[1] / 10) * cos40, rtol=1e-4)
    # the same values named VV / VH: read as they are (sigma0), nothing said
    info.descriptions = ["VV", "VH"]
    plan = units.plan_model_input(db_model, info, [LIN, DBV])
    np.testing.assert_allclose(plan.apply(block.copy())[0], 10 * np.log10(block[0]), rtol=1e-5)
    assert "SARSEG_INPUT_RADIOMETRY" not in plan.metadata()


def test_a_conversion_at_an_assumed_angle_is_a_warning():
    info = SimpleNamespace(metadata={"RADIOMETRY": "beta0"}, path="x.tif", band_count=2, units=["dB", "dB"],
                           descriptions=["VV", "VH"], dtype=np.dtype(np.float32))  # fmt: skip
    meta = SimpleNamespace(name="m", input_bands=("VV", "VH"), input_units=("dB", "dB"))
    plan = units.plan_model_input(meta, info, [DBV, DBV - 7])
    assert [w for w in plan.warnings if "holds beta0" in w and "37.5 deg (assumed" in w]
    out = plan.apply(np.full((2, 2, 2), -10.0, np.float32))
    np.testing.assert_allclose(out, -10.0 + 10 * np.log10(np.sin(np.radians(37.5))), atol=1e-5)


@pytest.mark.parametrize(("unit", "description", "values"), [
    ("linear", "VV", LIN * 4.5e5),  # digital numbers squared (Sentinel-1 GRD: DN about 670 x sqrt(sigma0))
    ("", "Intensity_VV", LIN * 4.5e5),  # ESA SNAP's name for it before 'Calibrate'
    ("dB", "VV", 10 * np.log10(LIN * 4.5e5)),  # the same in dB: median +43 dB
])  # fmt: skip
def test_uncalibrated_intensity_is_refused_whatever_its_label(unit, description, values):
    with pytest.raises(SarSegError, match=r"median is \+4[23]\.\d dB .* uncalibrated intensity .* Calibrate"):
        resolve(values, unit, description)
    # 'Input units' still overrides
    chosen = resolve(values, unit, description, choice=unit or LINEAR)
    assert (chosen.scale, chosen.source) == (unit or LINEAR, "choice")


def test_a_bright_calibrated_scene_is_not_taken_for_uncalibrated():
    """Towns alone: VV median about -4 dB, p99 near +8 dB; 8 dB brighter still (+4 dB median) is read as labelled."""
    for shift in (0.0, 8.0):
        assert resolve(LIN * 10 ** ((10 + shift) / 10), "linear").scale == LINEAR
        assert resolve(DBV + 10 + shift, "dB").scale == DB


# --- amplitude read as power ------------------------------------------------------------------------------------

AMPLITUDE_DOMAINS = ("ENL 4.4", "ENL 1", "ENL 20", "ENL 4.4 + Refined Lee", "20 m pixels", "untextured towns",
                     "dark water", "windy water", "+2 dB offset", "-2 dB offset")  # fmt: skip


@pytest.fixture(scope="module")
def scene_pairs():
    """(VV, VH) linear power of scenes of both generators (the evaluation-only one has its own radiometry) over
    the model card's domains, labelled by family and domain."""
    from training import domain_eval, evalgen

    pairs = []
    for family, make in domain_eval.FAMILIES.items():
        for name in AMPLITUDE_DOMAINS:
            for seed in (61000, 61777):
                sigma0 = make(seed, 128, evalgen.domain_by_name(name)).sigma0
                valid = np.all(sigma0 > 0, axis=0)
                pairs.append((f"{family} / {name} / {seed}", sigma0[0][valid], sigma0[1][valid]))
    return pairs


def test_backscatter_power_of_both_generators_does_not_look_like_amplitude(scene_pairs):
    for label, vv, vh in scene_pairs:
        assert units.amplitude_suspicion(vv, vh, LINEAR, LINEAR) is None, label
        assert units.amplitude_suspicion(10 * np.log10(vv), 10 * np.log10(vh), DB, DB) is None, label


def test_their_amplitude_read_as_power_or_as_its_ten_log10_does(scene_pairs):
    for label, vv, vh in scene_pairs:
        why = units.amplitude_suspicion(np.sqrt(vv), np.sqrt(vh), LINEAR, LINEAR)
        assert why is not None and "look like amplitude" in why, label
        # the medians it quotes, squared, are those of the power: an independent check of what it measured
        quoted = [float(x) for x in re.findall(r"these would be (-?[\d.]+) and (-?[\d.]+) dB", why)[0]]
        expected = [10 * np.log10(np.median(b)) for b in (vv, vh)]
        np.testing.assert_allclose(quoted, expected, atol=0.06)
        assert units.amplitude_suspicion(5 * np.log10(vv), 5 * np.log10(vh), DB, DB) is not None, label


def test_a_power_scene_of_towns_alone_is_not_taken_for_amplitude():
    """Bright in both bands (FACTS: towns -4 / -10 dB), but 6 dB apart: power. Its amplitude is 3 dB apart."""
    rng = np.random.default_rng(5)
    vv = 10 ** (-0.4) * rng.gamma(2.0, 0.5, 20000) * rng.gamma(4.4, 1 / 4.4, 20000)
    vh = 10 ** (-1.0) * rng.gamma(2.0, 0.5, 20000) * rng.gamma(4.4, 1 / 4.4, 20000)
    assert units.amplitude_suspicion(vv, vh, LINEAR, LINEAR) is None
    assert units.amplitude_suspicion(np.sqrt(vv), np.sqrt(vh), LINEAR, LINEAR) is not None


def _scales(source: str, scale: str = LINEAR) -> list[units.BandScale]:
    return [units.BandScale(b, f"band {b}", scale, source, "") for b in (1, 2)]


def test_amplitude_is_refused_when_only_the_values_decide_and_a_warning_when_a_unit_or_choice_says_power():
    amp = [np.sqrt(LIN), np.sqrt(LIN / 5)]  # medians about 7 dB apart as power, 3.5 as amplitude
    message, refuse, _ = units.check_amplitude(["VV", "VH"], amp, _scales("values"))
    assert refuse and "look like amplitude" in message and "gdal_calc.py" in message and "'Input units'" in message
    for source in ("unit", "choice"):
        message, refuse, _ = units.check_amplitude(["VV", "VH"], amp, _scales(source))
        assert not refuse and "They are read as stated" in message
    message, _, _ = units.check_amplitude(["VV", "VH"], [10 * np.log10(a) for a in amp], _scales("values", DB))
    assert "multiply them by 2" in message and "A*A" not in message  # squaring dB would be nonsense
    # not beyond doubt (4.5-5.1 dB apart: windy water's amplitude, or a dense forest's power): said, not refused
    near = [np.sqrt(LIN), np.sqrt(LIN / 10**0.96)]  # read as power, 4.8 dB apart
    message, refuse, _ = units.check_amplitude(["VV", "VH"], near, _scales("values"))
    assert not refuse and "look like amplitude" in message
    assert units.check_amplitude(["VV", "VH"], [LIN, LIN / 5], _scales("values")) is None
    # HH / HV too; a single band or two co-polarised bands cannot be checked
    assert units.check_amplitude(["HV", "HH"], amp[::-1], _scales("values"))[2] == 1  # the co-polarised band
    assert units.check_amplitude(["VV"], amp[:1], _scales("values")[:1]) is None
    assert units.check_amplitude(["VV", "HH"], amp, _scales("values")) is None


def test_every_tool_applies_the_amplitude_check_by_band_names():
    amp = [np.sqrt(LIN), np.sqrt(LIN / 5)]

    def info(units_, descriptions=("VV", "VH")):
        return SimpleNamespace(metadata={}, path="a.tif", band_count=2, units=list(units_),
                               descriptions=list(descriptions), dtype=np.dtype(np.float32))  # fmt: skip

    # the rasters' own rule (speckle filter, dB conversion, stacking): by the bands' polarisation names
    with pytest.raises(SarSegError, match="VV and VH look like amplitude"):
        units.resolve_scales(info(["", ""]), amp)
    stated = units.resolve_scales(info(["linear", "linear"]), amp)
    assert [s.warning for s in stated] == [True, False] and "look like amplitude" in stated[0].note
    assert units.resolve_scales(info(["", ""], ("band 1", "band 2")), amp)[0].warning is False  # no names: unknown
    # a model's input: by the model's band names, whatever the raster calls its bands
    meta = SimpleNamespace(name="m", input_bands=("VV", "VH"), input_units=("dB", "dB"))
    with pytest.raises(SarSegError, match="look like amplitude"):
        units.plan_model_input(meta, info(["", ""], ("", "")), amp)
    plan = units.plan_model_input(meta, info(["", ""], ("", "")), amp, LINEAR)
    assert sum("look like amplitude" in w for w in plan.warnings) == 1
    assert not any("look like amplitude" in n for n in plan.notes)


def test_values_that_squared_would_not_be_power_either_are_left_to_the_other_rules():
    ones = np.ones(1000)
    assert units.amplitude_suspicion(ones, ones, LINEAR, LINEAR) is None  # 0 dB in both bands: not amplitude
    amp = np.sqrt(LIN)
    assert units.amplitude_suspicion(amp, amp, LINEAR, LINEAR) is None  # two bands alike: no cross-polarised band
    assert units.amplitude_suspicion(amp, np.sqrt(LIN / 5), LINEAR, LINEAR) is not None


# --- co- and cross-polarised bands in the wrong order ------------------------------------------------------------

VV_LIN, VH_LIN = LIN, LIN / 5  # the cross-polarised band 7 dB darker, as in calibrated power


@pytest.mark.parametrize("as_db", [False, True])
def test_unnamed_bands_in_cross_co_order_are_swapped_and_said(as_db):
    samples = [VH_LIN, VV_LIN] if not as_db else [10 * np.log10(VH_LIN), 10 * np.log10(VV_LIN)]
    taken = units.match_bands(["VV", "VH"], ["", ""])
    match, warning = units.check_band_order(["VV", "VH"], ["", ""], taken, samples)
    assert match.bands == (2, 1) and warning == match.note
    gap = 10 * np.log10(np.median(VV_LIN) / np.median(VH_LIN))  # 5 x: 6.99 dB, computed here
    assert f"band 1 is {gap:.1f} dB darker than band 2" in warning and "band 2 is taken as VV" in warning
    # in the right order, or named, nothing moves
    assert units.check_band_order(["VV", "VH"], ["", ""], taken, samples[::-1]) == (taken, None)
    named = units.match_bands(["VV", "VH"], ["VV", "VH"])
    kept, warning = units.check_band_order(["VV", "VH"], ["VV", "VH"], named, samples)
    assert kept.bands == (1, 2) and "The band named VV is not the brighter one" in warning
    # HH / HV too; one band in dB and the other linear: the unit rule judges, the order is kept
    hh = units.match_bands(["HH", "HV"], ["", ""])
    assert units.check_band_order(["HH", "HV"], ["", ""], hh, [VH_LIN, VV_LIN])[0].bands == (2, 1)
    assert units.check_band_order(["VV", "VH"], ["", ""], taken, [VH_LIN, 10 * np.log10(VV_LIN)]) == (taken, None)


def test_a_models_input_from_swapped_unnamed_bands_reads_each_band_in_its_place():
    meta = SimpleNamespace(name="m", input_bands=("VV", "VH"), input_units=("dB", "dB"))
    info = SimpleNamespace(metadata={}, path="s.tif", band_count=2, units=["", ""], descriptions=["", ""],
                           dtype=np.dtype(np.float32))  # fmt: skip
    plan = units.plan_model_input(meta, info, [VH_LIN, VV_LIN])
    assert plan.bands == (2, 1) and [s.band for s in plan.scales] == [2, 1]
    assert sum("band 2 is taken as VV" in w for w in plan.warnings) == 1
    assert not any("taken in order" in n for n in plan.notes)


def test_another_polarisation_is_refused_as_such_not_as_a_naming_problem():
    with pytest.raises(SarSegError) as err:
        units.match_bands(["VV", "VH"], ["HV", "HH"])
    assert "the raster holds HH/HV" in str(err.value) and "renaming the bands would hide the difference" in str(
        err.value
    )
    with pytest.raises(SarSegError, match="no band of the raster is named VH"):  # one band of the pair is there
        units.match_bands(["VV", "VH"], ["VV", "HV"])
