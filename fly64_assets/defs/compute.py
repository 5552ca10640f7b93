"""Where the reconstruction step's partitions run, as a Dagster resource (the launchpad documents it).

Every Dagster path (a UI backfill, one clicked partition, ``dagster asset materialize``, ``fly64 run``, tests)
runs the step in its run's own process; the step hands its partitions to ``lib.dask_compute`` and records each
one's events as it finishes. The default comes from the deployment's environment, read when the code location
loads:

* ``FLY64_DASK_SCHEDULER``: the address of a running dask scheduler that every run shares (``fly64 ui`` / ``make
  ui`` start one beside the UI, so every run uses the same warm workers and the GPU is never oversubscribed); a
  ``tls://`` address with ``FLY64_DASK_SECURITY``, the folder of the credentials it asks of a client (plain TCP lets
  whoever reaches the port run code as the study's owner: refused, except on loopback where the deployment says
  ``FLY64_DASK_ALLOW_PLAIN_LOOPBACK=1``);
* ``FLY64_DASK_CLUSTER_FILE``: a YAML file describing a dask-jobqueue cluster (Slurm, PBS, ...) each run starts
  (``fly64 ui`` instead starts it once, adaptive, and hands its runs the scheduler);
* otherwise a local cluster per run, sized to the machine (``FLY64_DASK_WORKERS``): ``workers_per_gpu``
  single-threaded workers per GPU; on a CPU-only machine none (the partitions run in the step's process, which
  measured fastest there: docs/PERFORMANCE.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from fly64_assets.core.partition import StudyFolders
from fly64_assets.lib.cluster_preflight import (
    TRUE_WORDS, DaskSetupError, remote_roots_problems, scheduler_is_on_this_machine,
)
from fly64_assets.lib.dask_compute import ClusterDispatch, InlineDispatch, cluster_dispatch
from fly64_assets.lib.dask_security import (
    CA_FILE, CERT_FILE, KEY_FILE, ENCRYPTED_SCHEMES, address_scheme, credential_problems, read_credentials,
)

DASK_SCHEDULER_ENV = "FLY64_DASK_SCHEDULER"
DASK_CLUSTER_FILE_ENV = "FLY64_DASK_CLUSTER_FILE"
DASK_WORKERS_ENV = "FLY64_DASK_WORKERS"
DASK_SECURITY_ENV = "FLY64_DASK_SECURITY"
DASK_PLAIN_LOOPBACK_ENV = "FLY64_DASK_ALLOW_PLAIN_LOOPBACK"
CLUSTER_JOBS_FOLDER = "cluster_jobs"
"""Under the artifact root, per run: a cluster file's batch jobs' logs (unless the file sets ``log_directory``)."""
AUTO = -1

WORKERS_PER_GPU = 8
"""Measured on one H100 (docs/PERFORMANCE.md): 4 reconstructions at once gave 2.5x the throughput of one, 8
gave 3.1x, more no further gain: a study-sized pty-chi reconstruction is bound by its kernel launches."""


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _plain_loopback_allowed() -> bool:
    return os.environ.get(DASK_PLAIN_LOOPBACK_ENV, "").strip().lower() in TRUE_WORDS


def ui_cluster_workers(gpus: int) -> int:
    """The shared cluster ``fly64 ui`` starts: ``WORKERS_PER_GPU`` per GPU, else one single-threaded worker per
    core (runs that share it then use the cores without oversubscribing them)."""
    return gpus * WORKERS_PER_GPU if gpus else (os.cpu_count() or 1)


class StudyCompute(ConfigurableResource):
    """Where the reconstruction step's partitions run: a shared dask scheduler, a cluster started per run, or
    the step's own process."""

    # Defaults from the deployment's environment, as the code location loads, so that a run config that sets one
    # field (e.g. lease_timeout_s) keeps the deployment's choice of the others.
    scheduler: str = Field(
        default=os.environ.get(DASK_SCHEDULER_ENV, "").strip(),
        description="Address of a running dask scheduler shared by every run, e.g. tls://127.0.0.1:8786 (fly64 ui "
        "starts one). Empty: each run starts its own cluster (cluster_file, else a local one).",
    )
    security: str = Field(
        default=os.environ.get(DASK_SECURITY_ENV, "").strip(),
        description=f"Folder of the TLS credentials a tls:// scheduler asks of a client: {CA_FILE}, {CERT_FILE}, "
        f"{KEY_FILE} (the key readable by its owner alone). fly64 ui sets it for its own cluster.",
    )
    allow_plain_loopback: bool = Field(
        default=_plain_loopback_allowed(),
        description="Accept an unencrypted tcp:// scheduler on 127.0.0.1. Only on a machine no one else logs in to: "
        "any local user who reaches its port runs code as you.",
    )
    cluster_file: str = Field(
        default=os.environ.get(DASK_CLUSTER_FILE_ENV, "").strip(),
        description="A YAML file naming a dask-jobqueue cluster each run starts, e.g. 'slurm: {queue: gpu, cores: "
        "8, memory: 64GB, jobs: 2}' (docs/CLUSTER.md).",
    )
    workers: int = Field(
        default=int(os.environ.get(DASK_WORKERS_ENV, "").strip() or AUTO),
        ge=AUTO,
        description="A local cluster per run of this many single-threaded workers; 0: no cluster, the partitions "
        f"run in the step's process one after another; {AUTO}: sized to the machine ({WORKERS_PER_GPU} per GPU, "
        "none on a CPU-only machine).",
    )
    lease_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A task whose run stops renewing its lease this long (its process was killed) stops at its "
        "next epoch.",
    )

    @classmethod
    def from_env(cls) -> StudyCompute:
        """The deployment's choice as the environment says now (the field defaults: as it said at load)."""
        return cls(
            scheduler=os.environ.get(DASK_SCHEDULER_ENV, "").strip(),
            security=os.environ.get(DASK_SECURITY_ENV, "").strip(),
            allow_plain_loopback=_plain_loopback_allowed(),
            cluster_file=os.environ.get(DASK_CLUSTER_FILE_ENV, "").strip(),
            workers=int(os.environ.get(DASK_WORKERS_ENV, "").strip() or AUTO),
        )

    @property
    def shared(self) -> bool:
        """Every run sends its partitions to the same running scheduler."""
        return bool(self.scheduler)

    def local_workers(self) -> tuple[int, int]:
        """(workers, GPUs) of a local cluster per run (0 workers: none, the step's own process)."""
        gpus = gpu_count()
        return (gpus * WORKERS_PER_GPU if self.workers == AUTO else self.workers), gpus

    def describe(self, resolve: bool = True) -> str:
        """Where the partitions go, in words; ``resolve=False`` does not count the GPUs (that imports torch, which
        a command that only reports should not pay before its run)."""
        if self.scheduler:
            return f"the dask scheduler at {self.scheduler}"
        if self.cluster_file:
            return f"the dask cluster of {self.cluster_file}"
        if self.workers == AUTO and not resolve:
            return f"the machine's default compute ({WORKERS_PER_GPU} dask workers per GPU; this process without one)"
        workers, gpus = self.local_workers()
        if not workers:
            return "this process, one partition after another"
        return f"a local dask cluster of {workers} worker(s)" + (f" on {gpus} GPU(s)" if gpus else "")

    def scheduler_errors(self) -> list[str]:
        """Why this process may not connect to ``scheduler`` (empty: it may): only over TLS, with credentials."""
        scheme = address_scheme(self.scheduler)
        if not self.scheduler or scheme == "inproc":
            return []
        if scheme in ENCRYPTED_SCHEMES:
            if not self.security:
                return [f"the scheduler at {self.scheduler} speaks TLS: set {DASK_SECURITY_ENV} to the folder of its "
                        f"client credentials ({CA_FILE}, {CERT_FILE}, {KEY_FILE}; docs/CLUSTER.md)"]
            return credential_problems(self.security)
        loopback = scheduler_is_on_this_machine(self.scheduler)
        if loopback and self.allow_plain_loopback:
            return []
        return [f"the scheduler at {self.scheduler} is not encrypted (whoever reaches its port runs code as you): give "
                f"its tls:// address and {DASK_SECURITY_ENV}=<folder with {CA_FILE}, {CERT_FILE}, {KEY_FILE}>"
                + (f", or {DASK_PLAIN_LOOPBACK_ENV}=1 on a machine no one else uses" if loopback else "")
                + " (docs/CLUSTER.md)"]

    def configuration_errors(self, folders: StudyFolders) -> list[str]:
        """One line per reason this compute cannot run the study on ``folders`` (empty: it can): a scheduler only
        over TLS; workers that may be on other machines must see the roots."""
        if self.scheduler and self.cluster_file:
            return [f"both a scheduler ({self.scheduler}) and a cluster file ({self.cluster_file}) are set: set one"]
        problems = self.scheduler_errors()
        if self.cluster_file:
            where = f"the cluster of {self.cluster_file}"
        elif self.scheduler and not scheduler_is_on_this_machine(self.scheduler):
            where = f"the scheduler at {self.scheduler}"
        else:
            return problems
        roots = {"artifact root": folders.artifact_root, "Phase C root": folders.phase_c_root,
                 "Phase D root": folders.phase_d_root}
        return problems + remote_roots_problems(where, roots)

    @contextlib.contextmanager
    def dispatch(
        self, run_id: str, folders: StudyFolders, cpu_threads: int
    ) -> Iterator[InlineDispatch | ClusterDispatch]:
        """Where this run's partitions on ``folders`` go; ``cpu_threads``: the cores a CPU reconstruction may use
        in this process (a local cluster's workers share the machine's cores instead)."""
        problems = self.configuration_errors(folders)
        if problems:
            raise DaskSetupError(problems)
        workers, gpus = self.local_workers()
        if not self.scheduler and not self.cluster_file and workers == 0:
            yield InlineDispatch(cpu_threads)
            return
        # A local cluster's workers share this machine's cores; a scheduler's or a batch job's workers set their own.
        threads = None if self.scheduler or self.cluster_file else max(1, (os.cpu_count() or 1) // workers)
        with cluster_dispatch(
            run_id, scheduler=self.scheduler, cluster_file=self.cluster_file, local_workers=workers, gpus=gpus,
            cpu_threads=threads, lease_timeout_s=self.lease_timeout_s,
            security=read_credentials(self.security) if self.scheduler and self.security else None,
            job_folder=Path(folders.artifact_root) / CLUSTER_JOBS_FOLDER / run_id,
        ) as dispatch:
            yield dispatch
