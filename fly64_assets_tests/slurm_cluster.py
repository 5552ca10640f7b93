"""A throwaway one-node Slurm (Debian's ``slurmctld``, ``slurmd`` and ``slurm-client`` packages, 22.05) in a
temporary folder: the batch system of the Slurm tests (conftest.py's ``slurm`` fixture, test_slurm.py).

What Debian's 22.05 needs on a machine without munge, systemd or cgroups: ``auth/none`` and ``cred/none`` (no
munge daemon), ``proctrack/linuxproc`` and ``task/none`` (no cgroups), ``SlurmctldHost`` the machine's short
hostname (slurmctld exits otherwise), ``select/cons_tres`` (the default hands each job the whole node), and a
``RealMemory`` for the node (dask-jobqueue always asks for ``--mem``). Both daemons run as root (slurmd must, to
start jobs), in the foreground (``-D``) as this process's children, and are stopped by their PIDs. The client
commands (``sbatch``, ``squeue``, ``scancel``) and everything started from them find the configuration through
``SLURM_CONF``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fly64_assets_tests.support import free_port

DAEMONS = ("slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo")
PARTITION = "debug"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

CONFIG = """\
ClusterName=fly64test
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
PlugStackConfig={folder}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
KillWait=5
MinJobAge=60
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass(frozen=True)
class Slurm:
    """A running one-node Slurm: its configuration file (``SLURM_CONF``), node and partition."""

    conf: Path
    node: str
    partition: str

    @property
    def env(self) -> dict[str, str]:
        """The environment that makes Slurm's client commands (and those of any child) use this Slurm."""
        return {"SLURM_CONF": str(self.conf)}

    def command(self, *args: str) -> str:
        """A client command's standard output (``squeue``, ``sinfo``, ...) against this Slurm."""
        done = subprocess.run(list(args), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=30,
                              check=False)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def jobs(self) -> list[str]:
        """The ids of the jobs Slurm still knows as pending or running."""
        return self.command("squeue", "--noheader", "--format=%i").split()


def slurm_installed() -> bool:
    return all(shutil.which(name) for name in (*DAEMONS, *CLIENTS))


def _memory_mb() -> int:
    """The node's ``RealMemory``: three quarters of this machine's (slurmd drains a node that has less)."""
    with open("/proc/meminfo") as meminfo:
        total_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    return total_kb * 3 // 4 // 1024


def _wait_until_idle(slurm: Slurm, daemons: dict[str, subprocess.Popen], folder: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    state = ""
    while time.monotonic() < deadline:
        for name, process in daemons.items():
            if process.poll() is not None:
                log = (folder / f"{name}.log").read_text(errors="replace")[-2000:] if (folder / f"{name}.log").exists() else ""
                raise RuntimeError(f"{name} exited with {process.returncode} while starting:\n{log}")
        try:
            state = slurm.command("sinfo", "--noheader", "--nodes", slurm.node, "--format=%t").strip()
        except (RuntimeError, subprocess.TimeoutExpired):
            state = "no answer"
        if state == "idle":
            return
        time.sleep(0.5)
    raise RuntimeError(f"the Slurm node {slurm.node} is not idle after {START_TIMEOUT_S:.0f} s (state: {state})")


def _cancel_every_job(slurm: Slurm) -> None:
    """A job's processes outlive slurmd (as on a real cluster): cancel what a failed test left, wait until gone."""
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (jobs := slurm.jobs()) and time.monotonic() < deadline:
        slurm.command("scancel", *jobs)
        time.sleep(1)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def throwaway_slurm() -> Iterator[Slurm]:
    """Start slurmctld and slurmd on this machine, wait until the node is idle, yield; cancel the jobs left, stop
    both daemons by PID and delete their folder."""
    folder = Path(tempfile.mkdtemp(prefix="fly64-slurm-"))
    host = socket.gethostname().split(".")[0]
    slurm = Slurm(folder / "slurm.conf", host, PARTITION)
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    (folder / "plugstack.conf").write_text("")  # not the system's plugins (/etc/slurm/plugstack.conf.d)
    slurm.conf.write_text(CONFIG.format(
        host=host, ctld_port=free_port(), slurmd_port=free_port(), folder=folder, cpus=os.cpu_count() or 1,
        memory_mb=_memory_mb(), partition=PARTITION,
    ))
    environment = {**os.environ, **slurm.env}
    daemons: dict[str, subprocess.Popen] = {}
    try:
        # -i: ignore the state of an earlier session (there is none: a fresh StateSaveLocation); -D: foreground.
        daemons["slurmctld"] = subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(slurm.conf)], env=environment,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        daemons["slurmd"] = subprocess.Popen(["slurmd", "-D", "-f", str(slurm.conf), "-N", host], env=environment,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_until_idle(slurm, daemons, folder)
        yield slurm
        _cancel_every_job(slurm)
    finally:
        for name in reversed(list(daemons)):
            _stop(daemons[name])
        shutil.rmtree(folder, ignore_errors=True)
