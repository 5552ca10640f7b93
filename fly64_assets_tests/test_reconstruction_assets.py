"""Real pty-chi LSQML reconstructions through Dagster: physics, skips, failures, and range runs that keep every
partition's own materialization, check result and failed state."""

import json

import numpy as np
from dagster import AssetCheckSeverity, AssetKey, AssetPartitionStatus, DagsterEventType, materialize_to_memory

from fly64_assets import launch
from fly64_assets.core.bookkeeping import RECONSTRUCTION_RECORD, plan_study, read_record
from fly64_assets.core.contract import load_valid
from fly64_assets.core.design import Dataset, select_datasets
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.core.quality import compare_to_truth
from fly64_assets.defs.inputs.assets import phase_c_patched, phase_d_overlap
from fly64_assets.defs.reconstruction.assets import ptychi_reconstruction
from fly64_assets.defs.reconstruction.partitions import STUDY_PARTITIONS, range_tags
from fly64_assets_tests.figure_checks import assert_figure_drawn, png_in_markdown
from fly64_assets_tests.support import study_resources, FAST_EPOCHS, materialization_metadata

PHYSICS_EPOCHS = 50
HIGH_DOSE_BARS = {
    "phase_mae": (0.055, "below"),
    "amplitude_mae": (0.012, "below"),
    "phase_ssim": (0.45, "above"),
    "frc_resolution_px": (3.0, "below"),
}
"""Bars for 100000|baseline_train (demo scale, default regularization) scored over the scan box less a quarter
probe, measured against the truth on a 2-core CPU: 10 epochs (barely converged) reach phase MAE 0.0706 rad,
amplitude MAE 0.0146, phase SSIM 0.316, FRC resolution 4.72 px; 50 epochs (this test) 0.0434 rad, 0.0090, 0.590,
2.02 px; 100 epochs 0.0299 rad, 0.0089, 0.738, 2.00 px. Each bar lies between 10 and 50 epochs, so a run that
barely converged fails it."""
STUDY_ASSETS = [phase_c_patched, phase_d_overlap, ptychi_reconstruction]
RECONSTRUCTION = AssetKey("ptychi_reconstruction")
QUALITY = AssetKey("reconstruction_quality")


def _materialize(study_paths, instance, partition_key=None, tags=None, **config):
    return materialize_to_memory(
        STUDY_ASSETS,
        partition_key=partition_key,
        tags=tags,
        resources=study_resources(study_paths),
        run_config={"ops": {"ptychi_reconstruction": {"config": {"epochs": FAST_EPOCHS, **config}}}},
        instance=instance,
        raise_on_error=False,
    )


def test_high_dose_reconstruction_is_much_closer_to_the_truth_than_the_start(study_paths, instance):
    result = _materialize(study_paths, instance, "100000|baseline_train", epochs=PHYSICS_EPOCHS)
    assert result.success
    dataset = Dataset(100000, "baseline", "train")
    record = read_record(study_paths.artifact_dir(dataset), RECONSTRUCTION_RECORD)
    assert record["status"] == "succeeded" and record["device"] == "cpu"
    metadata = materialization_metadata(result, RECONSTRUCTION)["100000|baseline_train"]
    assert metadata["device"] == "cpu" and metadata["epochs"] == PHYSICS_EPOCHS
    assert metadata["final_loss"] == float(f"{record['final_loss']:.4g}")  # as the report shows numbers; the record keeps all
    assert "data:image/png;base64," in metadata["preview"]
    assert_figure_drawn(png_in_markdown(metadata["loss and convergence"]), "loss and convergence")
    saved = np.load(record["reconstruction_path"], allow_pickle=False)
    assert {"reconstructed_object", "reconstructed_probe", "loss_per_epoch", "options_json"} <= set(saved.files)
    assert json.loads(str(saved["options_json"]))["epochs"] == PHYSICS_EPOCHS
    assert saved["loss_per_epoch"].shape == (PHYSICS_EPOCHS,)
    assert saved["loss_per_epoch"][-1] < 0.2 * saved["loss_per_epoch"][0]

    arrays, _ = load_valid(study_paths.input_path(dataset))
    truth, ys, xs = arrays["objectGuess"], arrays["ycoords"], arrays["xcoords"]
    # Score the well-illuminated interior: the scan box shrunk by a quarter probe on each side.
    box = (ys.min() + 16, ys.max() - 16, xs.min() + 16, xs.max() - 16)
    recon = compare_to_truth(saved["reconstructed_object"], truth, tuple(record["object_origin_yx"]), box)
    start = compare_to_truth(np.ones_like(saved["reconstructed_object"]), truth, tuple(record["object_origin_yx"]), box)
    assert recon.amplitude_mae < 0.5 * start.amplitude_mae, (recon, start)
    assert recon.phase_mae < 0.6 * start.phase_mae, (recon, start)
    assert recon.phase_ssim > start.phase_ssim + 0.3, (recon, start)
    assert recon.frc_resolution_fraction > 5 * start.frc_resolution_fraction, (recon, start)
    # Absolute bars, between where a barely converged run and this one land (HIGH_DOSE_BARS).
    for metric, (bar, better) in HIGH_DOSE_BARS.items():
        value = getattr(recon, metric)
        assert (value < bar) if better == "below" else (value > bar), (metric, value, bar, recon)
    assert max(abs(s) for s in recon.shift_yx) < 1.0  # the recorded origin puts it where the truth is

    quality = materialization_metadata(result, QUALITY)["100000|baseline_train"]
    assert quality["phase_ssim"] > start.phase_ssim + 0.2  # scored in the same step, over the Phase C scan box


def test_missing_sparse_view_is_a_successful_skip_with_a_warn_check(study_paths, instance):
    result = _materialize(study_paths, instance, "1000|sparse_test")
    assert result.success
    for asset_key in (RECONSTRUCTION, QUALITY):
        metadata = materialization_metadata(result, asset_key)["1000|sparse_test"]
        assert metadata["status"] == "skipped" and "sparse view not written by Phase D" in metadata["reason"]
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "input_data001" and not check.passed and check.partition == "1000|sparse_test"
    assert check.severity == AssetCheckSeverity.WARN and "spacing guard" in check.description
    assert not study_paths.artifact_dir(Dataset(1000, "sparse", "test")).exists()


def test_a_range_run_keeps_each_partitions_own_results_and_fails_only_the_broken_one(study_paths, instance):
    """All six partitions of dose 1000 in one run (what a backfill's single-run policy does): a float64
    file fails only its partition; the others keep their own metadata and check results."""
    broken = study_paths.input_path(Dataset(1000, "dense", "train"))
    arrays = dict(np.load(broken, allow_pickle=False))
    arrays["diffraction"] = arrays["diffraction"].astype(np.float64)
    np.savez(broken, **arrays)

    result = _materialize(study_paths, instance, tags=range_tags("1000|baseline_train", "1000|sparse_test"), epochs=5)
    assert not result.success
    runs = instance.get_runs()
    assert len(runs) == 1, "one run for the six partitions"
    keys = [f"1000|{view}_{split}" for view in ("baseline", "dense", "sparse") for split in ("train", "test")]
    statuses = instance.get_status_by_partition(RECONSTRUCTION, keys, STUDY_PARTITIONS)
    assert statuses.pop("1000|dense_train") == AssetPartitionStatus.FAILED
    assert set(statuses.values()) == {AssetPartitionStatus.MATERIALIZED}

    reconstructions = materialization_metadata(result, RECONSTRUCTION)
    assert sorted(reconstructions) == sorted(set(keys) - {"1000|dense_train"})
    assert reconstructions["1000|baseline_train"]["n_patterns"] > reconstructions["1000|dense_test"]["n_patterns"]
    assert reconstructions["1000|sparse_train"]["status"] == "skipped"

    checks = {evaluation.partition: evaluation for evaluation in result.get_asset_check_evaluations()}
    assert sorted(checks) == sorted(keys), "one input_data001 result per partition, none without a partition"
    assert checks["1000|dense_train"].severity == AssetCheckSeverity.ERROR and "float32" in checks["1000|dense_train"].description
    assert checks["1000|sparse_test"].severity == AssetCheckSeverity.WARN
    assert all(checks[key].passed for key in ("1000|baseline_train", "1000|baseline_test", "1000|dense_test"))

    (failure,) = result.get_step_failure_events()
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("1 of 6 partition(s) failed") and str(broken) in message and "diffraction" in message
    assert not study_paths.artifact_dir(Dataset(1000, "dense", "train")).exists()


def test_a_study_run_with_a_missing_sparse_view_succeeds_and_records_the_skip(study_paths, instance):
    plan = plan_study(select_datasets([1000], ["dense", "sparse"], ["test"]), study_paths.input_path,
                      {"dose": [1000], "view": ["dense", "sparse"], "split": ["test"]})
    outputs = launch.run_study(study_paths, plan, ReconstructionOptions(epochs=FAST_EPOCHS), instance)
    manifest = outputs["reconstruction_manifest"]

    runs = [run for run in instance.get_runs() if run.job_name in ("reconstruct_study", "summarize_study")]
    # dense_test and sparse_test are not neighbours in the key order (sparse_train lies between): two range runs
    assert len(runs) == 3 and all(run.is_success for run in runs)
    (result,) = manifest["execution_results"]
    assert (result["view"], result["status"], result["returncode"]) == ("dense", "succeeded", 0)
    assert result["selection_strategy"] == "greedy_min_spacing"
    assert result["n_accepted"] + result["n_rejected"] == len(load_valid(study_paths.input_path(Dataset(1000, "baseline", "test")))[0]["xcoords"])
    assert [(m["view"], m["split"]) for m in manifest["missing_jobs"]] == [("sparse", "test")]

    evaluations = [
        entry.dagster_event.asset_check_evaluation_data
        for run in runs
        for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    ]
    warn_checks = [evaluation for evaluation in evaluations if not evaluation.passed]
    assert len(warn_checks) == 1 and warn_checks[0].severity == AssetCheckSeverity.WARN

    log_text = open(result["log_path"]).read()
    assert f"epoch {FAST_EPOCHS}/{FAST_EPOCHS}" in log_text and "ptychi" in log_text


def test_quality_alone_rescores_a_saved_reconstruction(study_paths, instance):
    assert _materialize(study_paths, instance, "10000|dense_test").success
    rescored = materialize_to_memory(
        STUDY_ASSETS, partition_key="10000|dense_test", resources=study_resources(study_paths), instance=instance,
        selection=[QUALITY],
    )
    assert rescored.success
    assert list(materialization_metadata(rescored, RECONSTRUCTION)) == []  # nothing reconstructed again
    metadata = materialization_metadata(rescored, QUALITY)["10000|dense_test"]
    assert "phase_mae" in metadata
    # The demo's 13 dense positions leave gaps in the area they are scored on (the split's full scan): 89 % lit.
    assert 0.8 < metadata["scan_area_lit"] < 0.95


def test_auto_regularization_records_its_candidates_and_choice_per_partition(study_paths, instance):
    result = _materialize(study_paths, instance, partition_key="1000|baseline_train", regularization="auto", epochs=20)
    assert result.success
    metadata = materialization_metadata(result, RECONSTRUCTION)["1000|baseline_train"]
    choice = metadata["regularization_choice"]
    assert [candidate["regularization"] for candidate in choice["candidates"]][0] == "off"  # "none" is a candidate
    lowest = min(choice["candidates"], key=lambda candidate: candidate["poisson_deviance"])
    chosen = next(candidate for candidate in choice["candidates"] if candidate["regularization"] == choice["chosen"])
    assert choice["lowest_deviance"] == lowest["regularization"] and choice["chosen"] == metadata["regularization"]
    assert chosen["excess_over_lowest"] <= chosen["excess_standard_error"]  # the one-standard-error rule
    assert all(candidate["tv_weight"] <= chosen["tv_weight"]  # ... keeps the most regularized such candidate
               for candidate in choice["candidates"] if candidate["excess_over_lowest"] <= candidate["excess_standard_error"])
    assert metadata["tv_weight"] == chosen["tv_weight"] and 1.0 < metadata["regularization_cost_factor"] < 2.5
    record = read_record(study_paths.artifact_dir(Dataset(1000, "baseline", "train")), RECONSTRUCTION_RECORD)
    assert record["requested_regularization"] == "auto" and record["regularization"]["chosen"] == choice["chosen"]
    assert record["options"]["regularization"] == choice["chosen"]  # the final reconstruction used the choice ...
    # ... in its last epochs, the TV phase the candidates were scored with (none: no TV phase to place)
    expected_phase = choice["candidate_epochs"] if choice["chosen_tv_weight"] else 0
    assert choice["final_tv_epochs"] == expected_phase == (record["options"]["tv_last_epochs"] or 0)
