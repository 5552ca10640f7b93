"""Real pty-chi LSQML reconstructions through Dagster: physics, skips, failures, manifest and skip summary."""

import numpy as np
from dagster import AssetCheckSeverity, DagsterEventType, materialize_to_memory

from fly64_assets.bookkeeping import plan_study
from fly64_assets.contract import load_valid
from fly64_assets.defs.reconstruction import ptychi_reconstruction
from fly64_assets.defs.sources import phase_c_patched, phase_d_overlap
from fly64_assets.execution import run_study
from fly64_assets.quality import compare_to_truth
from fly64_assets.study import Job, select_jobs
from fly64_assets_tests.conftest import FAST_EPOCHS

PHYSICS_EPOCHS = 50
STUDY_ASSETS = [phase_c_patched, phase_d_overlap, ptychi_reconstruction]


def _materialize(study_paths, partition_key, instance, **config):
    return materialize_to_memory(
        STUDY_ASSETS,
        partition_key=partition_key,
        resources={"study_paths": study_paths},
        run_config={"ops": {"ptychi_reconstruction": {"config": {"epochs": FAST_EPOCHS, **config}}}},
        instance=instance,
        raise_on_error=False,
    )


def test_high_dose_reconstruction_is_much_closer_to_the_truth_than_the_start(study_paths, instance):
    result = _materialize(study_paths, "100000|baseline_train", instance, epochs=PHYSICS_EPOCHS)
    assert result.success
    record = result.output_for_node("ptychi_reconstruction")
    assert record["status"] == "succeeded" and record["device"] == "cpu"
    saved = np.load(record["reconstruction_path"], allow_pickle=False)
    assert {"reconstructed_object", "reconstructed_probe", "loss_per_epoch", "options_json"} <= set(saved.files)
    assert saved["loss_per_epoch"].shape == (PHYSICS_EPOCHS,)
    assert saved["loss_per_epoch"][-1] < 0.2 * saved["loss_per_epoch"][0]

    arrays, _ = load_valid(study_paths.input_path(Job(100000, "baseline", "train")))
    truth, ys, xs = arrays["objectGuess"], arrays["ycoords"], arrays["xcoords"]
    # Score the well-illuminated interior: the scan box shrunk by a quarter probe on each side.
    box = (ys.min() + 16, ys.max() - 16, xs.min() + 16, xs.max() - 16)
    recon = compare_to_truth(saved["reconstructed_object"], truth, tuple(record["object_origin_yx"]), box)
    start = compare_to_truth(np.ones_like(saved["reconstructed_object"]), truth, tuple(record["object_origin_yx"]), box)
    assert recon.amplitude_mae < 0.5 * start.amplitude_mae, (recon, start)
    assert recon.phase_mae < 0.6 * start.phase_mae, (recon, start)
    assert recon.phase_ssim > start.phase_ssim + 0.3, (recon, start)
    assert recon.frc_resolution_fraction > 5 * start.frc_resolution_fraction, (recon, start)
    assert max(abs(s) for s in recon.shift_yx) < 1.0  # the recorded origin puts it where the truth is


def test_missing_sparse_view_is_a_successful_skip_with_a_warn_check(study_paths, instance):
    result = _materialize(study_paths, "1000|sparse_test", instance)
    assert result.success
    record = result.output_for_node("ptychi_reconstruction")
    assert record["status"] == "skipped"
    assert "sparse view not written by Phase D" in record["reason"]
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "input_data001" and not check.passed
    assert check.severity == AssetCheckSeverity.WARN and "spacing guard" in check.description
    assert not study_paths.artifact_dir(Job(1000, "sparse", "test")).exists()


def test_a_study_run_with_a_missing_sparse_view_succeeds_and_records_the_skip(study_paths, instance):
    plan = plan_study(select_jobs([1000], ["dense", "sparse"], ["test"]), study_paths.input_path,
                      {"dose": [1000], "view": ["dense", "sparse"], "split": ["test"]})
    outputs = run_study(study_paths, plan, {"epochs": FAST_EPOCHS}, progress=lambda line: None, instance=instance)
    manifest = outputs["reconstruction_manifest"]

    runs = [run for run in instance.get_runs() if run.job_name in ("reconstruct_study", "summarize_study")]
    assert len(runs) == 3 and all(run.is_success for run in runs)  # two partitions, then the summaries
    (result,) = manifest["execution_results"]
    assert (result["view"], result["status"], result["returncode"]) == ("dense", "succeeded", 0)
    assert result["selection_strategy"] == "greedy_min_spacing"
    assert result["n_accepted"] + result["n_rejected"] == len(load_valid(study_paths.input_path(Job(1000, "baseline", "test")))[0]["xcoords"])
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


def test_a_data001_failure_blocks_only_its_partition(study_paths, instance):
    broken = study_paths.input_path(Job(1000, "dense", "train"))
    arrays = dict(np.load(broken, allow_pickle=False))
    arrays["diffraction"] = arrays["diffraction"].astype(np.float64)
    np.savez(broken, **arrays)

    failed = _materialize(study_paths, "1000|dense_train", instance)
    assert not failed.success
    (failure,) = failed.get_step_failure_events()
    message = failure.step_failure_data.user_failure_data.description
    assert str(broken) in message and "diffraction" in message and "float32" in message
    (check,) = failed.get_asset_check_evaluations()
    assert check.check_name == "input_data001" and not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert "diffraction" in check.description
    assert not study_paths.artifact_dir(Job(1000, "dense", "train")).exists()

    assert _materialize(study_paths, "1000|dense_test", instance).success
