"""The report's replicates and convergence: the train and test splits as two replicates (mean ± half-difference,
the dose exponent with its uncertainty, a missing replicate), the headline's numbers, the convergence verdicts,
and the convergence curve recorded by real reconstructions (no mocks)."""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pytest
from dagster import AssetKey, materialize_to_memory

from fly64_assets.core.bookkeeping import (
    QUALITY_RECORD,
    RECONSTRUCTION_RECORD,
    read_record,
)
from fly64_assets.core.design import DOSES, Dataset
from fly64_assets.core.report import figures, fits, page, tables
from fly64_assets.core.report.headline import headline
from fly64_assets.core.report.records import METRICS
from fly64_assets.core.report.regularization import regularization_markdown
from fly64_assets.defs.inputs.assets import phase_c_patched, phase_d_overlap
from fly64_assets.defs.reconstruction.assets import ptychi_reconstruction
from fly64_assets_tests.figure_checks import assert_figure_drawn, png_in_markdown
from fly64_assets_tests.report_records import hand_made_records
from fly64_assets_tests.support import study_resources, materialization_metadata

def summary_of(rows: list[dict], dose: int, view: str) -> dict:
    return next(s for s in tables.replicate_summary(rows) if s["dose"] == dose and s["view"] == view)


def test_mean_and_half_difference_of_the_two_splits():
    rows = tables.quality_rows(hand_made_records())
    entry = summary_of(rows, 1000, "baseline")
    assert (entry["n_replicates"], entry["replicates"], entry["note"]) == (2, "train+test", None)
    assert entry["phase_mae_train"] == 0.30 and entry["phase_mae_test"] == 0.34
    assert entry["phase_mae_mean"] == pytest.approx(0.32, abs=1e-12)
    assert entry["phase_mae_spread"] == pytest.approx(0.02, abs=1e-12)
    assert entry["amplitude_mae_mean"] == pytest.approx(0.16, abs=1e-12)
    assert entry["amplitude_mae_spread"] == pytest.approx(0.01, abs=1e-12)
    assert summary_of(rows, 100000, "dense")["phase_ssim_spread"] == pytest.approx(0.005, abs=1e-12)
    assert list(entry) == list(tables.SUMMARY_KEYS)

    # each job's row carries its (dose, view)'s summary after its own columns; the old columns come first, unchanged
    row = next(r for r in rows if (r["dose"], r["view"], r["split"]) == (1000, "baseline", "test"))
    assert row["phase_mae"] == 0.34 and row["phase_mae_mean"] == pytest.approx(0.32) and row["phase_mae_spread"] == pytest.approx(0.02)
    assert tables.ROW_KEYS[: tables.ROW_KEYS.index("reason") + 1] == (
        "dose", "view", "split", "status", "n_patterns", *METRICS, "reason"
    )
    parsed = list(csv.DictReader(io.StringIO(tables.rows_to_csv(rows))))
    assert float(parsed[1]["phase_mae_mean"]) == pytest.approx(0.32) and float(parsed[1]["phase_mae_spread"]) == pytest.approx(0.02)

    table = tables.summary_to_markdown(tables.replicate_summary(rows))
    line = next(line for line in table.splitlines() if line.startswith("| 1e3 | baseline |"))
    assert "| 0.320 ± 0.020 |" in line and "| train + test |" in line
    summary_csv = list(csv.DictReader(io.StringIO(tables.summary_to_csv(tables.replicate_summary(rows)))))
    assert len(summary_csv) == 9 and float(summary_csv[0]["phase_mae_spread"]) == pytest.approx(0.02)


def test_a_missing_replicate_shows_the_one_value_without_spread_and_says_so():
    records = hand_made_records()
    for record in records:
        if (record["dose"], record["view"], record["split"]) == (10000, "dense", "test"):
            record.clear()
            record.update(dose=10000, view="dense", split="test", status="failed", reason="LSQML diverged")
    records = [r for r in records if (r["dose"], r["view"], r["split"]) != (100000, "baseline", "train")]  # no record
    rows = tables.quality_rows(records)

    dense = summary_of(rows, 10000, "dense")
    assert (dense["n_replicates"], dense["replicates"]) == (1, "train")
    assert dense["phase_mae_mean"] == 0.25 and dense["phase_mae_train"] == 0.25
    assert dense["phase_mae_test"] is None and dense["phase_mae_spread"] is None
    assert "train only" in dense["note"] and "test failed (LSQML diverged)" in dense["note"]
    baseline = summary_of(rows, 100000, "baseline")
    assert (baseline["replicates"], baseline["phase_mae_mean"], baseline["phase_mae_spread"]) == ("test", 0.12, None)
    assert "train missing" in baseline["note"]
    sparse = summary_of(rows, 1000, "sparse")
    assert sparse["n_replicates"] == 0 and sparse["phase_mae_mean"] is None
    assert sparse["note"] == "no split scored: train and test skipped (sparse view not written by Phase D)"

    table = tables.summary_to_markdown(tables.replicate_summary(rows))
    assert "| 0.250 (train only) |" in table and "| 0.120 (test only) |" in table
    assert "| 1e3 | sparse | **none** |" in table
    row = next(r for r in rows if (r["dose"], r["view"], r["split"]) == (10000, "dense", "train"))
    assert row["n_replicates"] == 1 and row["phase_mae_spread"] is None
    line = headline(rows)
    assert "0.120 rad (test only) at 1e5" in line  # the baseline's 1e5 rests on one split, and says which

    # the figures draw a one-split point without an error bar; they still render
    assert_figure_drawn(figures.metrics_vs_dose_png(rows), "metrics_vs_dose.png")
    assert_figure_drawn(figures.resolution_fit_png(rows, fits.dose_exponent_replicates(rows)), "resolution_vs_dose.png")


def test_the_dose_exponent_comes_with_its_replicate_uncertainty():
    rows = tables.quality_rows(hand_made_records())
    fitted = fits.dose_exponent_replicates(rows)
    baseline = fitted["baseline"]
    assert baseline["per_split"]["train"]["exponent"] == pytest.approx(-0.22, abs=1e-9)
    assert baseline["per_split"]["test"]["exponent"] == pytest.approx(-0.28, abs=1e-9)
    assert baseline["exponent"] == pytest.approx(-0.25, abs=1e-9)
    assert baseline["uncertainty"] == pytest.approx(0.03, abs=1e-9)
    assert baseline["prefactor"] == pytest.approx(40.0, rel=1e-9)
    assert (baseline["n_points"], baseline["n_replicates"], baseline["note"]) == (3, 2, None)
    assert fitted["sparse"]["exponent"] is None and fitted["sparse"]["uncertainty"] is None
    assert fits.format_exponent(baseline) == "-0.25 ± 0.03"
    text = fits.exponents_markdown(fitted)
    assert "| baseline | -0.250 | 0.030 | -0.220 | -0.280 |" in text and "-0.250 | | | | | | Howells" in text

    # only one split fitted (the other has a single scored dose): its exponent, no uncertainty
    records = [r for r in hand_made_records() if not (r["split"] == "test" and r["dose"] != 1000)]
    one = fits.dose_exponent_replicates(tables.quality_rows(records))["baseline"]
    assert one["exponent"] == pytest.approx(-0.22, abs=1e-9) and one["uncertainty"] is None
    assert one["note"] == "train split only: no uncertainty" and fits.format_exponent(one) == "-0.22 (train only)"


@pytest.mark.parametrize("true_exponent", [-0.25, -0.4])
def test_the_exponent_fit_recovers_a_known_exponent_from_noisy_replicates(true_exponent):
    """Resolutions scattered by 5 % (log-normal) around a known power law in both splits: the replicate
    estimate lands within a few of its uncertainties (and within 0.05) of the truth."""
    errors = []
    for seed in range(20):
        records = hand_made_records({"train": true_exponent, "test": true_exponent}, noise=0.05, seed=seed)
        fit = fits.dose_exponent_replicates(tables.quality_rows(records))["baseline"]
        assert fit["exponent"] == pytest.approx(true_exponent, abs=0.05)
        errors.append((fit["exponent"] - true_exponent) / max(fit["uncertainty"], 1e-3))
    assert abs(np.mean(errors)) < 1.5  # unbiased: the errors scatter around zero


def test_the_headline_states_the_answer_with_the_numbers():
    line = headline(tables.quality_rows(hand_made_records()))
    assert "\n" not in line and line.count(". ") == 1  # two sentences
    assert "baseline phase error falls from 0.320 ± 0.020 rad at 1e3 to 0.110 ± 0.010 rad at 1e5 photons/pattern" in line
    assert "FRC resolution scales as D^(-0.25 ± 0.03), expected -1/4" in line
    assert "mean ± half-difference" in line
    assert "dense view reaches 0.155 ± 0.005 rad at 1e5 (baseline 0.110 ± 0.010 rad) and scales as D^(-0.25 ± 0.03)" in line
    assert "the sparse view was not scored (skipped at 1e3, 1e4, 1e5)" in line


def test_a_headline_with_nothing_scored_says_so():
    line = headline(tables.quality_rows([]))
    assert line.startswith("Over the train and test splits (mean ± half-difference), the baseline view was not scored")
    assert "missing at 1e3, 1e4, 1e5" in line and "n/a" in line


def curve(epochs, values, loss=None) -> dict:
    return {"epochs": list(epochs), "phase_mae": list(values), "frc_resolution_px": [4.0] * len(values),
            "loss_per_epoch": loss if loss is not None else list(np.geomspace(1.0, 0.1, epochs[-1]))}


def test_convergence_verdicts_from_the_curves_shape():
    epochs = np.arange(10, 101, 10)
    levels = 0.1 + 0.3 * np.exp(-epochs / 7.0)  # within 2 % of the final value from epoch 40 on
    verdict = fits.convergence_verdict(epochs, levels)
    assert (verdict["verdict"], verdict["plateau_epoch"], verdict["epochs_run"]) == ("levels off", 40, 100)
    falling = 0.1 + 0.3 * np.exp(-epochs / 60.0)
    improving = fits.convergence_verdict(epochs, falling)
    assert improving["verdict"] == "still improving" and improving["last_change"] > 0.01
    u_shape = 0.1 + 0.002 * (epochs - 40.0) ** 2 / 100
    rises = fits.convergence_verdict(epochs, u_shape)
    assert (rises["verdict"], rises["best_epoch"], rises["best"]) == ("rises", 40, pytest.approx(0.1))
    assert fits.convergence_verdict([10], [0.3])["verdict"] == "too few snapshots"
    # higher-is-better metrics are judged the same way round
    assert fits.convergence_verdict(epochs, 1 - levels, higher_is_better=True)["verdict"] == "levels off"

    curves = {
        (1000, "baseline", "train"): curve(epochs, u_shape),
        (1000, "baseline", "test"): curve(epochs, u_shape),
        (10000, "baseline", "train"): curve(epochs, levels),
        (100000, "baseline", "test"): curve(epochs, falling),
    }
    notes = fits.convergence_notes(curves)
    assert len(notes) == len(DOSES)
    assert notes[0].startswith("At 1e3, phase MAE vs epoch: baseline best at epoch 40 (0.100 rad)")
    assert "too many" in notes[0] and "dense: no curve recorded" in notes[0]
    assert "baseline (train only) stops improving after ~40 epochs" in notes[1] and "100 is enough" in notes[1]
    assert "baseline (test only) still improving at epoch 100" in notes[2] and "too few" in notes[2]
    assert_figure_drawn(figures.convergence_png(curves), "convergence.png")
    assert_figure_drawn(figures.convergence_png({}), "convergence.png, nothing recorded")
    assert fits.convergence_notes({}) == []


RISE_THEN_TV = [0.30, 0.31, 0.32, 0.33, 0.34, 0.35, 0.36, 0.37, 0.38, 0.27]
"""Phase error every 10 epochs of a 100-epoch run with auto's TV phase in the last 10: rising from epoch 10 to 90
(the noise being fitted), falling only at epoch 100, after TV (the default study at 1e3, issue 30)."""


def test_convergence_is_judged_before_the_tv_phase_and_the_tv_effect_reported_beside_it():
    epochs = np.arange(10, 101, 10)
    # Judged over the whole curve, the TV drop would read as convergence still under way.
    assert fits.convergence_verdict(epochs, RISE_THEN_TV)["verdict"] == "still improving"
    verdict = fits.convergence_verdict(epochs, RISE_THEN_TV, tv_from_epoch=91)
    assert (verdict["verdict"], verdict["best_epoch"], verdict["judged_to"], verdict["epochs_run"]) == ("rises", 10, 90, 100)
    assert verdict["final"] == 0.38 and verdict["after_tv"] == 0.27
    assert verdict["tv_change"] == pytest.approx((0.27 - 0.38) / 0.38)

    fixed = curve(epochs, RISE_THEN_TV) | {"tv_from_epoch": 1}  # a fixed weight in every epoch
    curves = {(1000, "baseline", split): curve(epochs, RISE_THEN_TV) | {"tv_from_epoch": 91} for split in ("train", "test")}
    curves |= {(1000, "dense", "train"): fixed, (10000, "baseline", "train"): curve(epochs, 0.1 + 0.3 * np.exp(-epochs / 7.0))}
    # the splits disagree on the TV phase (auto kept 0.1 on one, 0 on the other): one split's curve, named
    curves |= {(100000, "baseline", "train"): curves[(1000, "baseline", "train")], (100000, "baseline", "test"): curve(epochs, RISE_THEN_TV)}
    notes = fits.convergence_notes(curves)
    assert notes[0].startswith(
        "At 1e3, phase MAE vs epoch: baseline before TV best at epoch 10 (0.300 rad), 27% worse by epoch 90: more epochs "
        "would not help — TV in the last 10 epochs: −28.9% (to 0.270 rad at epoch 100); dense (train only) ran with TV "
        "in every epoch: no unregularized epochs to judge convergence on (0.270 rad at epoch 100);"
    )
    assert "stops improving after ~40 epochs (within 2% of its final 0.100 rad): 100 is enough" in notes[1]  # no TV
    assert "baseline (train only) before TV best at epoch 10" in notes[2]
    assert fits.convergence_verdicts(curves)[(1000, "dense")]["verdict"] == "regularized throughout"
    assert_figure_drawn(figures.convergence_png(curves), "convergence.png with TV phases")

    # Whatever the shape: where the error rose before the TV phase, no verdict asks for more epochs.
    rng = np.random.default_rng(0)
    for _ in range(200):
        before = 0.2 + np.cumsum(rng.normal(0.0, 0.02, 9))
        if before.min() <= 0 or before[-1] - before.min() <= fits.LEVEL_TOLERANCE * before[-1]:
            continue  # ended within the tolerance of its best: no rise to guard against
        values = [*before, before[-1] * rng.uniform(0.5, 1.1)]
        verdict = fits.convergence_verdict(epochs, values, tv_from_epoch=91)
        note = fits.convergence_notes({(1000, "baseline", "train"): curve(epochs, values) | {"tv_from_epoch": 91}})[0]
        assert verdict["verdict"] == "rises" and "would help" not in note and "too few" not in note, values


def test_the_tv_phase_starts_where_the_record_says_pty_chi_applied_it():
    """``tv_from_epoch`` read from a record's options against pty-chi itself: with TV in the last 2 of 4 epochs, the
    object after epochs 1 and 2 is the unregularized run's, after epoch 3 it is not."""
    from fly64_assets.core.lsqml import reconstruct
    from fly64_assets.core.options import ReconstructionOptions
    from fly64_assets.core.report.regularization import tv_from_epoch
    from fly64_assets.core.synthetic import simulate_split

    arrays = simulate_split("demo", 100000, "train")
    every_third = slice(None, None, 3)
    data = [arrays["diffraction"][every_third], arrays["probeGuess"], arrays["ycoords"][every_third], arrays["xcoords"][every_third]]
    objects = {}
    for name, options in {"off": ReconstructionOptions(epochs=4, device="cpu", regularization="off"),
                          "late TV": ReconstructionOptions(epochs=4, device="cpu", regularization="tv_0_3", tv_last_epochs=2)}.items():
        snapshots = {}
        reconstruct(*data, options, snapshot_every=1, on_snapshot=lambda epoch, obj, origin: snapshots.update({epoch: obj}))
        objects[name] = snapshots
        record_options = options.as_dict()
    first = tv_from_epoch(record_options)
    assert first == 3
    assert all(np.array_equal(objects["off"][epoch], objects["late TV"][epoch]) for epoch in range(1, first))
    assert not np.allclose(objects["off"][first], objects["late TV"][first])
    assert tv_from_epoch({"regularization": "tv_0_1", "epochs": 100, "tv_last_epochs": None}) == 1  # every epoch
    assert tv_from_epoch({"regularization": "off", "epochs": 100, "tv_last_epochs": 10}) is None  # auto kept 0
    assert tv_from_epoch({}) is None  # a record older than the options


def test_no_plus_minus_in_a_generated_report_reads_zero_where_the_spread_is_not():
    """Replicates 0.02 % apart and exponents 0.0008 apart: every ± of the headline, the tables, the UI's Markdown and
    the page shows a non-zero first digit, and its value the same decimals."""
    records = hand_made_records({"train": -0.320, "test": -0.3208})
    by_job = {(r["dose"], r["view"], r["split"]): r for r in records}
    for (dose, view, split), record in by_job.items():
        if split == "test" and record["status"] == "succeeded":
            train = by_job[(dose, view, "train")]
            record.update({m: train[m] * 1.0002 for m in METRICS if m != "frc_resolution_px"})
    candidates = [{"regularization": f"tv_{w}", "tv_weight": w, "poisson_deviance": 0.3 + w / 1000,
                   "excess_over_lowest": w / 1000, "excess_standard_error": 0.00004} for w in (0.0, 0.03, 0.1)]
    by_job[(1000, "baseline", "train")].update(requested_regularization="auto", tv_weight=0.03, regularization_choice={
        "chosen": "tv_0.03", "chosen_tv_weight": 0.03, "lowest_deviance": "tv_0.0", "candidates": candidates,
        "n_held_out": 10, "n_patterns": 98, "held_out_coverage": 0.97, "cost_factor": 1.7, "evidence": "clear"})
    rows = tables.quality_rows(records)
    summary = tables.replicate_summary(rows)
    exponents = fits.dose_exponent_replicates(rows)
    assert 0 < exponents["baseline"]["uncertainty"] < 0.0005 and all(s["phase_mae_spread"] != 0 for s in summary if s["n_replicates"] == 2)
    line = headline(rows)
    text = page.report_markdown(line, tables.rows_to_markdown(rows), {}, exponents, [],
                                summary_table=tables.summary_to_markdown(summary), regularization=regularization_markdown(records))
    html = page.html_page("study", text)
    assert "D^(-0.3204 ± 0.0004)" in line  # was -0.32 ± 0.00
    assert "| baseline | -0.3204 | 0.0004 | -0.320 | -0.321 |" in text  # was -0.320 | 0.000
    assert "(+0.00003 ± 0.00004)" in text
    pairs = re.findall(r"([-+]?\d+\.?\d*) ± (\d+\.?\d*)", text + html)
    assert len(pairs) > 30
    for value, spread in pairs:
        assert float(spread) > 0, (value, spread)
        assert len(value.partition(".")[2]) == len(spread.partition(".")[2]), (value, spread)


def test_the_pages_carry_the_replicate_table_the_exponents_and_the_convergence_notes():
    rows = tables.quality_rows(hand_made_records())
    summary_table = tables.summary_to_markdown(tables.replicate_summary(rows))
    convergence = ["At 1e3, phase MAE vs epoch: baseline stops improving after ~40 epochs."]
    images = {"metrics_vs_dose.png": figures.metrics_vs_dose_png(rows)}
    text = page.report_markdown(headline(rows), tables.rows_to_markdown(rows), images, fits.dose_exponent_replicates(rows),
                                [], summary_table=summary_table, convergence=convergence)
    assert "| 1e3 | baseline | train + test | " in text and "- At 1e3, phase MAE vs epoch" in text
    html = page.html_page("study", text)
    assert ">0.320 ± 0.020<" in html and "Howells et al. 2009" in html and "stops improving after ~40 epochs" in html
    assert "<em>expected (dose fractionation)</em>" in html
    assert html.count("<table") == 3 and html.count("<tr") == (1 + 9) + (1 + 4) + (1 + 18)
    # the sparse view, never scored: its note once across the summary's metric columns
    assert html.count('<tr class="unscored">') == 3 + 6
    assert '<td><strong>none</strong></td>\n<td colspan="9">no split scored: train and test skipped' in html


# --------------------------------------------------------------------------------------------------
# the convergence curve, recorded by real reconstructions
# --------------------------------------------------------------------------------------------------

RECONSTRUCTION = AssetKey("ptychi_reconstruction")


def _reconstruct(study_paths, instance, key: str, **config):
    result = materialize_to_memory(
        [phase_c_patched, phase_d_overlap, ptychi_reconstruction],
        partition_key=key,
        resources=study_resources(study_paths),
        run_config={"ops": {"ptychi_reconstruction": {"config": config}}},
        instance=instance,
    )
    assert result.success
    return materialization_metadata(result, RECONSTRUCTION)[key]


def test_the_convergence_curve_is_recorded_and_can_be_switched_off(study_paths, instance):
    dataset = Dataset(100000, "dense", "test")  # the smallest dataset of the demo study
    metadata = _reconstruct(study_paths, instance, dataset.partition_key, epochs=6, convergence_every=4)
    record = read_record(study_paths.artifact_dir(dataset), RECONSTRUCTION_RECORD)
    curve = record["convergence"]
    assert curve["epochs"] == [4, 6]  # every 4 epochs and after the last
    assert curve["every"] == 4 and curve["error"] is None and curve["scoring_area"] == "phase_c_scan"
    assert set(METRICS) <= set(curve) and all(len(curve[m]) == 2 for m in METRICS)
    assert_figure_drawn(png_in_markdown(metadata["loss and convergence"]), "loss and convergence")  # the curve, drawn
    quality = read_record(study_paths.artifact_dir(dataset), QUALITY_RECORD)
    for metric in METRICS:  # the last snapshot is the final object, scored the same way
        assert curve[metric][-1] == pytest.approx(quality[metric], rel=1e-6), metric

    _reconstruct(study_paths, instance, dataset.partition_key, epochs=2, convergence_every=0)
    assert read_record(study_paths.artifact_dir(dataset), RECONSTRUCTION_RECORD)["convergence"] is None
