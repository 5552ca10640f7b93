"""``fly64 ui`` with a cluster file, as a user starts it on a Slurm login node (the session's one-node ``slurm``):
one adaptive dask-jobqueue cluster for every run: no job while idle, jobs while a UI backfill reconstructs (each
record names its job), none again once idle for the file's ``idle_timeout``. The file is the one
docs/CLUSTER.md shows for ``make ui``, with a short idle time."""

from __future__ import annotations

import json
import shutil
import threading
import time
from datetime import datetime, timezone

import pytest
import yaml

from fly64_assets.cli import EXIT_USAGE, main
from fly64_assets.core.bookkeeping import RECONSTRUCTION_RECORD
from fly64_assets.defs.compute import CLUSTER_JOBS_FOLDER, DASK_CLUSTER_FILE_ENV
from fly64_assets.lib.cluster_preflight import SHARED_ARTIFACT_ROOT_ENV, SHARED_INPUT_ROOTS_ENV
from fly64_assets.lib.dask_compute import IDLE_TIMEOUT_S, idle_timeout_s
from fly64_assets_tests.dagster_dev import StudyUI, launch_ui_backfill, study_environment, wait_for_backfill
from fly64_assets_tests.support import REPO_ROOT, copy_study

pytestmark = pytest.mark.xdist_group("test_slurm")  # the same pytest-xdist worker, so the same one-node Slurm

IDLE_S = 10
EPOCHS = 2
KEYS = ["1000|dense_train", "1000|dense_test"]
BACKFILL_TIMEOUT_S = 240
IDLE_CHECK_S = 3.0


def documented_ui_cluster_file() -> dict:
    """The cluster file docs/CLUSTER.md shows for ``make ui`` (the YAML block of its batch-system UI section)."""
    section = (REPO_ROOT / "docs/CLUSTER.md").read_text().split("## `make ui` on a batch system", 1)[1]
    return yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])


class JobCounter:
    """``squeue`` sampled every half second in a thread: (UTC time, job ids)."""

    def __init__(self, slurm) -> None:
        self.slurm, self.samples, self._stop = slurm, [], threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.samples.append((datetime.now(timezone.utc), set(self.slurm.jobs())))

    def wait_for_none(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while (not self.samples or self.samples[-1][1]) and time.monotonic() < deadline:
            time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.mark.timeout(420)
def test_fly64_ui_on_slurm_has_jobs_only_while_a_backfill_needs_them(slurm, synthetic_study, tmp_path):
    copy_study(synthetic_study, tmp_path / "inputs")
    (tmp_path / "dagster_home").mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", tmp_path / "dagster_home")
    cluster = documented_ui_cluster_file()
    cluster["slurm"]["idle_timeout"] = IDLE_S
    (tmp_path / "slurm.yaml").write_text(yaml.safe_dump(cluster))
    env = {**study_environment(tmp_path, str(EPOCHS)), **slurm.env, DASK_CLUSTER_FILE_ENV: str(tmp_path / "slurm.yaml"),
           SHARED_ARTIFACT_ROOT_ENV: "1", SHARED_INPUT_ROOTS_ENV: "1", "FLY64_REGULARIZATION": "off"}
    ui = StudyUI(REPO_ROOT, env, log_path=tmp_path / "fly64_ui.log")
    counter = None
    try:
        ui.start()
        assert f"no job until a run sends partitions, then up to {cluster['slurm']['jobs']} job(s), each ending after {IDLE_S} s idle" in ui.first_line()
        assert ui.scheduler_address().startswith("tls://")
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < IDLE_CHECK_S:
            assert slurm.jobs() == [], slurm.command("squeue")  # the UI is up, nothing runs: no job
            time.sleep(0.5)

        counter = JobCounter(slurm)
        backfill = wait_for_backfill(ui, launch_ui_backfill(ui, KEYS, ["ptychi_reconstruction"]), BACKFILL_TIMEOUT_S)
        assert backfill["status"] == "COMPLETED_SUCCESS", backfill
        counter.wait_for_none(IDLE_S + 60)
        counter.stop()
        assert ui.process.poll() is None  # the UI and its scheduler go on without jobs
    finally:
        if counter is not None:
            counter.stop()
        ui.stop()

    artifact_root = tmp_path / "artifacts"
    records = {str(path.parent.relative_to(artifact_root)): json.loads(path.read_text())
               for path in artifact_root.rglob(RECONSTRUCTION_RECORD)}
    assert sorted(records) == ["dose_1000/dense/test", "dose_1000/dense/train"]
    # From the last partition's end, the jobs stay idle_timeout (for the next run), then leave.
    idle_from = max(datetime.fromisoformat(record["ended_utc"]) for record in records.values())
    peak = max(len(ids) for at, ids in counter.samples if at <= idle_from)
    gone_at = next(at for at, ids in counter.samples if at > idle_from and not ids)
    idle_for = (gone_at - idle_from).total_seconds()
    seen = set().union(*(ids for _, ids in counter.samples))
    print(f"fly64 ui on Slurm: jobs while idle 0; during the backfill of {len(KEYS)} partitions at most {peak}; 0 again "
          f"{idle_for:.1f} s after its last partition ended (idle_timeout {IDLE_S} s); Slurm jobs {sorted(seen)}")
    assert 1 <= peak <= cluster["slurm"]["jobs"] and IDLE_S - 1 <= idle_for <= IDLE_S + 30
    for record in records.values():
        job = record["worker"]["batch_job"]
        assert record["status"] == "succeeded" and job["system"] == "slurm" and job["id"] in seen, record["worker"]
    (job_folder,) = (artifact_root / CLUSTER_JOBS_FOLDER).iterdir()
    assert job_folder.name.startswith("fly64-ui-")
    assert {path.name.removeprefix("dask-worker-").split(".")[0] for path in job_folder.glob("dask-worker-*")} == seen


def test_fly64_ui_with_a_cluster_file_refuses_to_start_on_unshared_roots_or_a_bad_file(tmp_path, monkeypatch, capsys):
    """Checked before any cluster starts (the runs of the UI see only its scheduler): exit 2, one line per problem."""
    for name, folder in (("FLY64_PHASE_C_ROOT", "c"), ("FLY64_PHASE_D_ROOT", "d"), ("FLY64_ARTIFACT_ROOT", "a"),
                         ("DAGSTER_HOME", "home")):
        (tmp_path / folder).mkdir()
        monkeypatch.setenv(name, str(tmp_path / folder))
    for name in (SHARED_ARTIFACT_ROOT_ENV, SHARED_INPUT_ROOTS_ENV, "FLY64_DASK_SCHEDULER"):
        monkeypatch.delenv(name, raising=False)
    cluster_file = tmp_path / "slurm.yaml"
    cluster_file.write_text(yaml.safe_dump(documented_ui_cluster_file()))
    monkeypatch.setenv(DASK_CLUSTER_FILE_ENV, str(cluster_file))
    assert main(["ui"]) == EXIT_USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all("filesystem" in line for line in lines), lines  # artifact, Phase C, Phase D roots

    monkeypatch.setenv(SHARED_ARTIFACT_ROOT_ENV, "1")
    monkeypatch.setenv(SHARED_INPUT_ROOTS_ENV, "1")
    cluster_file.write_text("slurm:\n  jobs: 2\n  idle_timeout: soon\n")
    assert main(["ui"]) == EXIT_USAGE
    assert capsys.readouterr().err.strip() == f"fly64 ui: cluster file {cluster_file}: idle_timeout 'soon' is not a time (seconds, or e.g. '5 minutes')"
    assert not (tmp_path / "a" / CLUSTER_JOBS_FOLDER).exists()  # no cluster was started


def test_idle_timeout_reads_seconds_or_a_dask_time():
    assert idle_timeout_s({"idle_timeout": "5 minutes"}, "f") == 300 and idle_timeout_s({"idle_timeout": 12}, "f") == 12
    assert idle_timeout_s({}, "f") == IDLE_TIMEOUT_S
