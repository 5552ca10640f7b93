"""``fly64 run`` shows its progress: rich bars on a terminal, plain lines otherwise (test_cli.py covers those)."""

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

from fly64_assets.lib.progress import PlainProgress, progress_for


def test_plain_lines_count_partitions_and_estimate_the_time_left(tmp_path):
    with open(tmp_path / "log.txt", "w") as log:
        progress = progress_for(log)
        assert isinstance(progress, PlainProgress)  # a file is not a terminal
        progress.study_started(3)
        progress.partition_started("1000|baseline_train", 2)
        progress.epoch("1000|baseline_train", 1, 0.5)
        progress.epoch("1000|baseline_train", 2, 0.25)
        progress.partition_finished("1000|baseline_train", "reconstructed")
        progress.partition_finished("1000|sparse_train", "skipped (input missing)")
        progress.partition_finished("1000|sparse_test", "skipped (input missing)")
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert re.fullmatch(r"\[1/3\] 1000\|baseline_train: reconstructed, 2 epochs, final loss 0\.25 "
                        r"\(elapsed 0:00, about 0:00 left\)", lines[0])
    assert lines[1].startswith("[2/3] 1000|sparse_train: skipped (input missing) (elapsed")
    assert lines[2].endswith("(elapsed 0:00)")  # nothing left to estimate


def _run_on_a_terminal(args: list[str], env: dict) -> str:
    """Run a command with a pseudo-terminal as its stdout and stderr; return all it wrote."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(args, stdout=terminal, stderr=terminal, stdin=subprocess.DEVNULL, env=env)
    os.close(terminal)
    chunks = []
    while True:
        ready, _, _ = select.select([controller], [], [], 600)
        if not ready:
            process.kill()
            raise TimeoutError("no output from the command for 600 s")
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(controller)
    return b"".join(chunks).decode(errors="replace")


def test_fly64_run_on_a_terminal_shows_bars_with_epoch_and_loss(study_paths, tmp_path):
    fly64 = Path(sys.executable).with_name("fly64")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "TERM": "xterm", "COLUMNS": "160", "NO_COLOR": "1"}
    args = [str(fly64), "run", "--phase-c-root", study_paths.phase_c_root, "--phase-d-root", study_paths.phase_d_root,
            "--artifact-root", study_paths.artifact_root, "--dose", "100000", "--view", "baseline", "--epochs", "12",
            "--device", "cpu"]
    output = _run_on_a_terminal(args, env)
    assert "partitions" in output and "2/2" in output  # the study's bar, finished
    assert re.search(r"100000\|baseline_(train|test)\s.*\d+/12\s+loss \d", output)  # a partition's epochs and loss
    assert "100000|baseline_train: reconstructed" in output and "100000|baseline_test: reconstructed" in output
    assert "left" in output  # the time-left column
    assert "2 of 2 reconstruction(s) succeeded" in output
