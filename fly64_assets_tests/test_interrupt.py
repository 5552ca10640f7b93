"""Ctrl-C at each stage of ``fly64 run`` and ``fly64 study`` (and in ``fly64 report``): the real command in its
own process group, the real SIGINT a terminal sends to that whole group (the command, Dagster's helper processes,
dask's workers).

Each time: exit 130 within a few seconds, exactly one line saying where it stopped and what is whole, no
traceback from anyone, nothing of the interrupted stage written, no process left, every run recorded as ended;
then the same command again completes.

How each stage is hit: a reconstruction after the command printed its first finished partition (the others are
still running); the summaries as soon as the command says it writes them (their run takes longer than the
signal); the report once the instance records its step as started (the report takes seconds to draw).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from fly64_assets_tests.support import REPO_ROOT, copy_study

FLY64 = str(Path(sys.executable).parent / "fly64")
FEW_EPOCHS = ["--epochs", "3", "--regularization", "off"]
STOP_WITHIN_S = 15.0
"""From SIGINT to exit, generous for a loaded 2-core CI machine (measured: 1-2 s)."""
EXIT_INTERRUPTED = 130


class Command:
    """``fly64 ...`` started as a terminal starts it (its own process group), its output read line by line."""

    def __init__(self, args: list[str], env: dict) -> None:
        self.process = subprocess.Popen([FLY64, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.helpers: dict[psutil.Process, str] = {}
        """The command's child processes when Ctrl-C was pressed, with their command lines."""

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_line(self, pattern: str, timeout: float = 240.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the command ended before printing {pattern!r}:\n{self.output}")
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{self.output}")

    def ctrl_c(self) -> float:
        """SIGINT to the whole process group, as a terminal sends it; returns the seconds until the command ended."""
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.helpers = {child: " ".join(child.cmdline()) for child in children}
        sent = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=60)
        return time.monotonic() - sent

    def finish(self, timeout: float = 600.0) -> int:
        self.process.wait(timeout=timeout)
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return self.process.returncode

    @property
    def output(self) -> str:
        return "".join(self.lines)


def _environment(tmp_path: Path) -> dict:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLY64_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(home), FLY64_DATA_DIR=str(tmp_path / "fly64_data"), PYTHONUNBUFFERED="1")
    return env


def _assert_stopped(command: Command, seconds: float, where: str) -> None:
    """Exit 130 within a few seconds; one line naming the stage; no traceback; no process of the command left."""
    assert command.finish() == EXIT_INTERRUPTED, command.output
    assert seconds < STOP_WITHIN_S, f"{seconds:.1f} s from SIGINT to exit"
    stopped = [line for line in command.lines if "stopped by Ctrl-C" in line]
    assert len(stopped) == 1 and f"stopped by Ctrl-C {where}:" in stopped[0], command.output
    assert "Traceback" not in command.output and "KeyboardInterrupt" not in command.output, command.output
    _, alive = psutil.wait_procs(list(command.helpers), timeout=10)
    assert not alive, f"left running: {[command.helpers[p] for p in alive]}"
    in_group = [p.pid for p in psutil.process_iter() if _group_of(p) == command.process.pid]
    assert not in_group, f"processes left in the command's group: {in_group}"


def _group_of(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except ProcessLookupError:
        return None


def _runs(home: Path) -> list:
    with DagsterInstance.from_config(str(home)) as instance:
        return instance.get_runs()


def _wait_for_step_start(home: Path, job_name: str, timeout: float = 240.0) -> None:
    """Until the instance records a step of a new ``job_name`` run as started (the step is executing)."""
    earlier = {run.run_id for run in _runs(home)}
    deadline = time.monotonic() + timeout
    with DagsterInstance.from_config(str(home)) as instance:
        while time.monotonic() < deadline:
            for run in instance.get_runs(filters=RunsFilter(job_name=job_name)):
                if run.run_id in earlier:
                    continue
                if instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_START).records:
                    return
            time.sleep(0.05)
    raise AssertionError(f"no step of a {job_name} run started within {timeout} s")


@pytest.mark.timeout(900)
def test_ctrl_c_at_each_stage_of_fly64_run_stops_it_whole_and_a_rerun_completes(synthetic_study, tmp_path):
    inputs = copy_study(synthetic_study, tmp_path / "inputs")
    artifacts = tmp_path / "artifacts"
    env = _environment(tmp_path)
    home = Path(env["DAGSTER_HOME"])
    args = ["run", "--phase-c-root", str(inputs / "phase_c"), "--phase-d-root", str(inputs / "phase_d"),
            "--artifact-root", str(artifacts), "--allow-missing-phase-d", "--dose", "1000", "--workers", "0",
            *FEW_EPOCHS]
    manifest, skip_summary = artifacts / "reconstruction_manifest.json", artifacts / "skip_summary.json"
    report = artifacts / "report" / "study_report.html"

    # during a reconstruction: the first partition is done, the others are not
    command = Command(args, env)
    command.wait_for_line(r"^\[1/6\] ")
    _assert_stopped(command, command.ctrl_c(), "during the reconstructions")
    finished = len([line for line in command.lines if re.match(r"^\[\d/6\] ", line)])
    assert f"{finished} of 6 partition(s) finished" in command.output
    assert not manifest.exists() and not skip_summary.exists() and not report.exists()
    (interrupted,) = [run for run in _runs(home) if run.job_name == "reconstruct_study"]
    assert interrupted.status == DagsterRunStatus.FAILURE
    assert not list(artifacts.rglob("*.partial"))

    # during the summaries
    command = Command(args, env)
    command.wait_for_line("^writing the manifest and the skip summary")
    _assert_stopped(command, command.ctrl_c(), "during the summaries")
    assert "[6/6]" in command.output
    assert not manifest.exists() and not skip_summary.exists() and not report.exists()

    # during the report: the manifest and the skip summary are whole and agree, no report
    command = Command(args, env)
    _wait_for_step_start(home, "report_study")
    _assert_stopped(command, command.ctrl_c(), "during the report")
    assert not report.exists()
    written = json.loads(manifest.read_text())
    assert [result["status"] for result in written["execution_results"]] == ["succeeded"] * 4
    assert json.loads(skip_summary.read_text())["missing_phase_d_count"] == len(written["missing_jobs"]) == 2
    (report_run,) = [run for run in _runs(home) if run.job_name == "report_study"]
    assert report_run.status == DagsterRunStatus.FAILURE

    # the same command again completes; no run of any attempt is left open in the instance
    command = Command(args, env)
    assert command.finish() == 0, command.output
    assert "stopped" not in command.output and "4 of 4 reconstruction(s) succeeded" in command.output
    assert report.is_file() and not list(artifacts.rglob("*.partial"))
    assert all(run.is_finished for run in _runs(home))

    # fly64 report stopped while it draws the report: the one written above stays as it was
    written = report.read_bytes()
    command = Command(["report", "--phase-c-root", str(inputs / "phase_c"), "--phase-d-root", str(inputs / "phase_d"),
                       "--artifact-root", str(artifacts)], env)
    _wait_for_step_start(home, "report_study")
    _assert_stopped(command, command.ctrl_c(), "during the report")
    assert report.read_bytes() == written
    assert all(run.is_finished for run in _runs(home))


@pytest.mark.timeout(600)
def test_ctrl_c_during_a_reconstruction_on_local_dask_workers_stops_them_too(synthetic_study, tmp_path):
    inputs = copy_study(synthetic_study, tmp_path / "inputs")
    env = _environment(tmp_path)
    command = Command(["run", "--phase-c-root", str(inputs / "phase_c"), "--phase-d-root", str(inputs / "phase_d"),
                       "--artifact-root", str(tmp_path / "artifacts"), "--allow-missing-phase-d", "--dose", "1000",
                       "--workers", "1", *FEW_EPOCHS], env)
    command.wait_for_line(r"^\[1/6\] ")
    seconds = command.ctrl_c()
    assert any("multiprocessing" in line for line in command.helpers.values()), f"no dask worker: {command.helpers}"
    _assert_stopped(command, seconds, "during the reconstructions")
    assert not (tmp_path / "artifacts" / "reconstruction_manifest.json").exists()
    assert all(run.is_finished for run in _runs(Path(env["DAGSTER_HOME"])))


@pytest.mark.timeout(600)
def test_ctrl_c_while_fly64_study_simulates_leaves_no_partial_tree_and_a_rerun_completes(tmp_path):
    env = _environment(tmp_path)
    synthetic = tmp_path / "fly64_data" / "synthetic"
    args = ["study", "--scale", "demo", "--workers", "0", *FEW_EPOCHS]
    command = Command(args, env)
    command.wait_for_line("^simulating the synthetic demo study")
    _assert_stopped(command, command.ctrl_c(), "while simulating the synthetic study")
    assert not synthetic.parent.exists() or not list(synthetic.parent.iterdir())  # no part of a tree, not even aside

    command = Command(args, env)
    assert command.finish() == 0, command.output
    assert "simulating the synthetic demo study" in command.output
    assert "12 of 12 reconstruction(s) succeeded" in command.output
    assert (tmp_path / "fly64_data" / "artifacts" / "report" / "study_report.html").is_file()
