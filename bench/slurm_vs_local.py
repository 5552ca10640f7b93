"""``fly64 run`` on a batch system against a local cluster, on the same demo study and the same machine.

    python bench/slurm_vs_local.py [--epochs 5] [--repeats 1] [--paths slurm,local] [--dose 1000 --view dense ...]
        [--out bench-output/slurm_vs_local]

slurm: ``fly64 run`` with ``FLY64_DASK_CLUSTER_FILE``: the cluster file docs/CLUSTER.md shows (2 batch jobs, one
       single-threaded worker each) on a one-node Slurm started here (the suite's ``slurm_cluster.py``: Debian's
       slurmctld and slurmd, run as root);
local: ``fly64 run --workers 2``: a local dask cluster of 2 workers started by the run.

Both reconstruct the demo study (every partition whose input exists, or those ``--dose``/``--view``/``--split``
select: ``fly64 run``'s filters) with ``regularization: off``, each into a fresh instance and artifact root. Timed
per path: from the command's launch to the first epoch of any partition (the earliest ``epoch 1/`` line of the
partitions' ``ptychi.log``, which time-stamps each epoch) and the command's whole wall (its summaries included). Both start their workers cold (each imports torch and pty-chi): the
difference is how the workers start (``sbatch`` and a job against a local process) and when work is sent.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fly64_assets.core.bookkeeping import LOG_NAME  # noqa: E402
from fly64_assets.core.synthetic import simulate_study  # noqa: E402
from fly64_assets_tests.slurm_cluster import slurm_installed, throwaway_slurm  # noqa: E402

BIN = Path(sys.executable).parent
EPOCH_ONE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*: epoch 1/")


def documented_cluster_file() -> str:
    """The Slurm cluster file docs/CLUSTER.md shows for ``fly64 run`` (the suite runs the same one)."""
    section = (REPO / "docs/CLUSTER.md").read_text().split("## A batch-system cluster per run", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def environment(out: Path, inputs: Path, name: str, epochs: int) -> dict[str, str]:
    """A fresh instance (the shipped dagster.yaml) and artifact root for one path."""
    home = out / name / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith("FLY64_")},
        "DAGSTER_HOME": str(home),
        "FLY64_PHASE_C_ROOT": str(inputs / "phase_c"),
        "FLY64_PHASE_D_ROOT": str(inputs / "phase_d"),
        "FLY64_ARTIFACT_ROOT": str(out / name / "artifacts"),
        "FLY64_EPOCHS": str(epochs),
        "FLY64_REGULARIZATION": "off",
    }


def first_epoch(artifact_root: Path) -> datetime:
    """When the first epoch of any partition ended (the logs' local time stamps, as ``datetime.now()``)."""
    stamps = [datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
              for log in artifact_root.rglob(LOG_NAME) for line in log.read_text().splitlines()
              if (match := EPOCH_ONE.match(line))]
    if not stamps:
        raise RuntimeError(f"no partition under {artifact_root} logged an epoch")
    return min(stamps)


def timed_run(env: dict[str, str], extra: list[str], cwd: Path) -> tuple[float, float, int]:
    """(launch to first epoch, whole wall, partitions reconstructed) of one ``fly64 run`` started from ``cwd``."""
    launched, started = datetime.now(), time.perf_counter()
    done = subprocess.run([str(BIN / "fly64"), "run", "--allow-missing-phase-d", "--epochs", env["FLY64_EPOCHS"],
                           "--regularization", "off", *extra], env=env, cwd=cwd, capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"fly64 run failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    artifact_root = Path(env["FLY64_ARTIFACT_ROOT"])
    return (first_epoch(artifact_root) - launched).total_seconds(), wall, len(list(artifact_root.rglob(LOG_NAME)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each path, alternating")
    parser.add_argument("--paths", default="slurm,local", help="comma-separated, from slurm,local")
    for name in ("dose", "view", "split"):
        parser.add_argument(f"--{name}", action="append", default=[], help="repeatable: fly64 run's filter")
    parser.add_argument("--out", type=Path, default=REPO / "bench-output" / "slurm_vs_local")
    args = parser.parse_args()
    if not slurm_installed() or os.geteuid() != 0:
        sys.exit("needs Debian's slurmctld, slurmd and slurm-client, run as root (slurmd starts jobs only as root)")

    filters = [f"--{name}={value}" for name in ("dose", "view", "split") for value in getattr(args, name)]
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    simulate_study(out / "inputs", scale="demo")
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start; "
          f"demo study{' (' + ' '.join(filters) + ')' if filters else ''}, {args.epochs} epochs, regularization off")
    print(f"{'path':58} {'to 1st epoch s':>14} {'wall s':>8} {'partitions':>10}")
    with throwaway_slurm() as slurm:
        cluster_file = out / "slurm.yaml"
        cluster_file.write_text(documented_cluster_file())
        for repeat in range(args.repeats):
            for name in args.paths.split(","):
                folder = f"{name}-{repeat}"
                env = environment(out, out / "inputs", folder, args.epochs)
                if name == "slurm":
                    env.update(slurm.env, FLY64_DASK_CLUSTER_FILE=str(cluster_file), FLY64_SHARED_ARTIFACT_ROOT="1",
                               FLY64_SHARED_INPUT_ROOTS="1")
                    label, extra = "slurm: fly64 run, cluster file (2 jobs x 1 worker)", []
                else:
                    label, extra = "local: fly64 run --workers 2", ["--workers", "2"]
                to_first, wall, partitions = timed_run(env, [*extra, *filters], out / folder)
                print(f"{label:58} {to_first:14.1f} {wall:8.1f} {partitions:10d}", flush=True)
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
