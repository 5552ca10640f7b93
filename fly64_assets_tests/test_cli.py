"""The ``fly64`` command keeps the old study script's contract: plan, run, check, filters, exit codes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from dagster import AssetKey

from fly64_assets.cli import main
from fly64_assets.core.artifacts import unwritable_reason
from fly64_assets.core.design import Dataset
from fly64_assets_tests.support import FAST_EPOCHS, call_as_plain_user, world_traversable_folder


def _roots(paths) -> list[str]:
    return ["--phase-c-root", paths.phase_c_root, "--phase-d-root", paths.phase_d_root, "--artifact-root", paths.artifact_root]


def _reports(paths) -> tuple[dict, dict]:
    root = Path(paths.artifact_root)
    return (
        json.loads((root / "reconstruction_manifest.json").read_text()),
        json.loads((root / "skip_summary.json").read_text()),
    )


def test_plan_with_one_job_counts_the_other_17_as_skipped(study_paths):
    code = main(["plan", *_roots(study_paths), "--dose", "1000", "--view", "dense", "--split", "train"])
    assert code == 0
    manifest, skips = _reports(study_paths)
    assert manifest["filtered_jobs"] == 1 and manifest["total_jobs"] == 18
    assert manifest["jobs"] == [{"dose": 1000, "view": "dense", "split": "train"}]
    assert isinstance(manifest["jobs"][0]["dose"], int)
    (result,) = manifest["execution_results"]
    assert result["status"] == "planned" and result["returncode"] is None
    assert result["log_path"] == str(Path(study_paths.artifact_root) / "dose_1000/dense/train/ptychi.log")
    assert result["selection_strategy"] == "greedy_min_spacing" and result["spacing_threshold"] == pytest.approx(38.4)
    assert skips["skipped_count"] == 17 and skips["missing_phase_d_count"] == 0
    assert not list(Path(study_paths.artifact_root).glob("dose_*"))  # a dry run reconstructs nothing


def test_missing_phase_d_stops_before_any_work_unless_allowed(study_paths, capsys):
    assert main(["plan", *_roots(study_paths)]) == 2
    error = capsys.readouterr().err
    assert "1000|sparse_train" in error and "--allow-missing-phase-d" in error
    assert not Path(study_paths.artifact_root).exists()

    assert main(["plan", *_roots(study_paths), "--allow-missing-phase-d"]) == 0
    manifest, skips = _reports(study_paths)
    assert sorted((m["dose"], m["split"]) for m in manifest["missing_jobs"]) == sorted(
        (d, s) for d in (1000, 10000, 100000) for s in ("train", "test")
    )
    assert all(m["view"] == "sparse" and "spacing guard" in m["reason"] for m in manifest["missing_jobs"])
    assert skips["missing_phase_d_count"] == 6 and skips["skipped_count"] == 6
    assert len(manifest["execution_results"]) == 12


def test_unknown_filter_values_and_bad_roots_get_one_clear_message(study_paths, tmp_path, capsys):
    assert main(["plan", *_roots(study_paths), "--view", "medium"]) == 2
    assert "unknown view ['medium']" in capsys.readouterr().err
    missing_root = str(tmp_path / "nowhere")
    assert main(["plan", "--phase-c-root", missing_root, "--phase-d-root", study_paths.phase_d_root,
                 "--artifact-root", study_paths.artifact_root]) == 2
    assert f"Phase C root {missing_root} does not exist" in capsys.readouterr().err


def test_run_goes_through_dagster_and_exit_code_reports_a_failed_job(study_paths, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    broken = study_paths.input_path(Dataset(10000, "dense", "train"))
    arrays = dict(np.load(broken, allow_pickle=False))
    arrays["xcoords"] = arrays["xcoords"][:-1]
    np.savez(broken, **arrays)

    args = ["run", *_roots(study_paths), "--dose", "10000", "--view", "dense", "--epochs", str(FAST_EPOCHS), "--device", "cpu",
            "--workers", "2", "--max-concurrent-runs", "3"]
    assert main(args) == 1
    printed = capsys.readouterr()
    assert "--max-concurrent-runs is no longer used and is ignored" in printed.err
    # the two partitions went to a dask cluster of two worker processes started for the run
    assert "2 partition(s) through Dagster on a local dask cluster of 2 worker(s)" in printed.out
    # not a terminal: plain progress lines, one per partition, counted, with the outcome and the times
    lines = [line for line in printed.out.splitlines() if line.startswith("[")]
    assert lines[0].startswith("[1/2] 10000|dense_train: FAILED: ") and "xcoords" in lines[0]
    assert lines[1].startswith(f"[2/2] 10000|dense_test: reconstructed, {FAST_EPOCHS} epochs, final loss ")
    assert "elapsed 0:" in lines[1]
    manifest, skips = _reports(study_paths)
    statuses = {(r["split"]): (r["status"], r["returncode"]) for r in manifest["execution_results"]}
    assert statuses == {"train": ("failed", 1), "test": ("succeeded", 0)}
    assert skips["skipped_count"] == 16
    good = Path(study_paths.artifact_root) / "dose_10000/dense/test"
    assert (good / "ptychi_reconstruction.npz").is_file() and (good / "preview.png").is_file()
    assert "final loss" in (good / "ptychi.log").read_text()
    # the runs are in the instance that the UI reads
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        runs = instance.get_runs()
        (reconstruction_run,) = [run for run in runs if run.job_name == "reconstruct_study"]
        logged = [entry.message for entry in instance.all_logs(reconstruction_run.run_id)]
    assert {run.job_name for run in runs} == {"observe_phase_c_inputs", "observe_phase_d_inputs", "reconstruct_study",
                                              "summarize_study", "report_study"}
    # the failure is one line with its reason on the terminal, no traceback; the run's event log has it whole
    assert "Traceback" not in printed.out + printed.err
    assert sum("10000|dense_train" in line and "FAILED" in line for line in printed.out.splitlines()) == 1
    assert any("10000|dense_train failed" in message and "xcoords" in message for message in logged)


def test_run_names_an_unusable_artifact_root_in_one_line_before_any_run(study_paths, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    roots = ["--phase-c-root", study_paths.phase_c_root, "--phase-d-root", study_paths.phase_d_root]
    args = ["run", *roots, "--allow-missing-phase-d", "--epochs", "1", "--device", "cpu"]

    assert main([*args, "--artifact-root", str(a_file)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith(f"artifact root {a_file} cannot be a folder: {a_file} is a file")

    # A full disk cannot be made here: the one injected fault is the free space the filesystem reports.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=2**40, used=2**40 - 2**20, free=2**20))
    assert main([*args, "--artifact-root", study_paths.artifact_root]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert study_paths.artifact_root in line and "full filesystem: 1 MiB free" in line
    assert not (tmp_path / "dagster_home").exists()  # no run was started: no instance was even made


def test_a_read_only_artifact_root_is_named_for_a_user_who_cannot_write_there():
    folder = world_traversable_folder("fly64-read-only-")
    try:
        root = folder / "artifacts"
        root.mkdir()
        assert unwritable_reason(root) is None  # as this user first: usable
        root.chmod(0o777)
        assert call_as_plain_user(unwritable_reason, root) is None
        root.chmod(0o555)
        reason = call_as_plain_user(unwritable_reason, root)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert reason == f"artifact root {root} is not writable: permission denied in {root}"


def test_check_reports_ok_invalid_and_missing_as_json(study_paths, capsys):
    broken = study_paths.input_path(Dataset(1000, "baseline", "test"))
    broken.write_bytes(broken.read_bytes()[:1000])  # truncated
    code = main(["check", "--phase-c-root", study_paths.phase_c_root, "--phase-d-root", study_paths.phase_d_root, "--json"])
    entries = json.loads(capsys.readouterr().out)
    assert code == 1 and len(entries) == 18
    by_key = {Dataset(e["dose"], e["view"], e["split"]).partition_key: e for e in entries}
    assert by_key["1000|baseline_test"]["status"] == "invalid" and by_key["1000|baseline_test"]["violations"]
    assert by_key["1000|sparse_train"]["status"] == "missing"
    assert sum(e["status"] == "ok" for e in entries) == 11
    broken.unlink()
    assert main(["check", "--phase-c-root", study_paths.phase_c_root, "--phase-d-root", study_paths.phase_d_root]) == 0


def _dagster_env(study_paths, home) -> dict:
    home.mkdir(exist_ok=True)
    return {
        **os.environ,
        "FLY64_PHASE_C_ROOT": study_paths.phase_c_root,
        "FLY64_PHASE_D_ROOT": study_paths.phase_d_root,
        "FLY64_ARTIFACT_ROOT": study_paths.artifact_root,
        "FLY64_EPOCHS": "5",
        "FLY64_REGULARIZATION": "off",  # the command line's paths are under test here, not the choice (tested elsewhere)
        "DAGSTER_HOME": str(home),
    }


def _dagster(*args, env) -> subprocess.CompletedProcess:
    dagster = Path(sys.executable).parent / "dagster"
    return subprocess.run([str(dagster), *args], env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1])


@pytest.mark.timeout(900)
def test_dagster_asset_materialize_reconstructs_the_whole_study_in_one_run(study_paths, tmp_path):
    """The README's two Dagster CLI lines: all 18 partitions in one run (a partition range), then the summaries."""
    env = _dagster_env(study_paths, tmp_path / "dagster_home")
    whole_study = _dagster("asset", "materialize", "-m", "fly64_assets.definitions",
                           "--select", "ptychi_reconstruction,reconstruction_quality",
                           "--partition-range", "1000|baseline_train...100000|sparse_test", env=env)
    assert whole_study.returncode == 0, whole_study.stderr[-3000:]
    summaries = _dagster("asset", "materialize", "-m", "fly64_assets.definitions",
                         "--select", "reconstruction_manifest,skip_summary,study_report", env=env)
    assert summaries.returncode == 0, summaries.stderr[-3000:]

    from dagster import DagsterInstance

    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(run.is_success for run in runs)
        materialized = instance.get_materialized_partitions(AssetKey("ptychi_reconstruction"))
        assert len(materialized) == 18
    manifest, skips = _reports(study_paths)
    assert [r["status"] for r in manifest["execution_results"]] == ["succeeded"] * 12
    assert skips["missing_phase_d_count"] == 6
    saved = np.load(Path(study_paths.artifact_root) / "dose_1000/dense/train/ptychi_reconstruction.npz", allow_pickle=False)
    assert saved["reconstructed_object"].dtype == np.complex64 and saved["loss_per_epoch"].shape == (5,)


def test_dagster_asset_materialize_of_one_partition_and_a_selection(study_paths, tmp_path):
    env = _dagster_env(study_paths, tmp_path / "dagster_home")
    one = _dagster("asset", "materialize", "-m", "fly64_assets.definitions", "--select", "ptychi_reconstruction",
                   "--partition", "1000|dense_train", env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    dense = _dagster("asset", "materialize", "-m", "fly64_assets.definitions", "--select", "ptychi_reconstruction",
                     "--partition-range", "1000|dense_train...100000|dense_test", env=env)
    assert dense.returncode == 0, dense.stderr[-3000:]
    folders = sorted(str(p.parent.relative_to(study_paths.artifact_root)) for p in Path(study_paths.artifact_root).rglob("ptychi_reconstruction.npz"))
    assert folders == [f"dose_{dose}/dense/{split}" for dose in (1000, 10000, 100000) for split in ("test", "train")]


def test_options_are_flags_with_the_models_defaults_and_bad_values_are_usage_errors(study_paths, capsys):
    from fly64_assets.cli import build_parser

    args = build_parser().parse_args(["run", "--epochs", "7", "--no-optimize-probe", "--noise-model", "poisson"])
    assert (args.epochs, args.batch_size, args.optimize_probe, args.noise_model, args.device) == (7, 96, False, "poisson", "auto")
    assert main(["run", *_roots(study_paths), "--allow-missing-phase-d", "--device", "gpu"]) == 2
    assert "--device" in capsys.readouterr().err
    assert main(["run", *_roots(study_paths), "--allow-missing-phase-d", "--epochs", "0"]) == 2
