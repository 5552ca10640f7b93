"""Partitions as dask tasks on warm worker processes, or one after another in the calling process. No Dagster.

A ``Dispatch`` takes ``PartitionRequest``s and yields each ``PartitionOutcome`` as that partition finishes,
calling ``on_epoch(key, epoch, loss)`` meanwhile. Three places the work can go:

* ``InlineDispatch``: in the calling process, one after another (no cluster; a CPU-only machine's choice when
  measured fastest, and the simplest thing to debug);
* ``ClusterDispatch`` on a ``distributed.Client``: each partition a task. The cluster is a running scheduler
  shared by every run (``fly64 ui`` starts one beside the UI), a ``local_cluster`` started for one run, or a
  dask-jobqueue cluster (``cluster_from_file``).

Workers run one task at a time (``nthreads=1``): pty-chi sets torch's default device and dtype per process.
Each ``local_cluster`` worker is pinned to one GPU (``CUDA_VISIBLE_DEVICES``), imports torch and pty-chi when
it starts (``dask_setup``, the worker preload) and keeps them; because a dask scheduler runs whatever code a client
sends it, every address it opens is on 127.0.0.1 and speaks TLS with credentials made for that cluster
(``lib.dask_security``): another user of the machine cannot connect.

With ``regularization: auto`` a partition's task runs its candidate reconstructions as tasks of their own
(``candidates_as_tasks``, dask's tasks-from-tasks: the partition's task leaves its worker's thread while it waits),
so the six candidates run at once on whichever workers are free, then the final reconstruction follows.

A task learns that its run is over in two ways, checked every epoch: the run sets its cancel ``Event``
(terminated, or its step failed), or the run's lease ``Variable`` stops changing for ``lease_timeout_s`` (the
run process was killed and cannot say so). A worker killed mid-task (SIGKILL, out of memory) costs its
partition one retry on another worker. A batch cluster's run keeps its jobs (``JobKeeper``): a job that ends
(cancelled, preempted, at its walltime) is replaced and its partition runs again; jobs that never start fail the
run after ``worker_start_timeout``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import itertools
import logging
import math
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fly64_assets.core.lsqml import import_ptychi
from fly64_assets.core.partition_task import Cancelled, PartitionOutcome, PartitionRequest, run_partition
from fly64_assets.lib.dask_security import CA_FILE, CERT_FILE, KEY_FILE, temporary_security, write_credentials

LOOPBACK = "127.0.0.1"
LEASE_REFRESH_S = 2.0
POLL_S = 0.2
SUBMIT_TIMEOUT_S = 120.0
"""How long a cluster file's jobs may take to be submitted (``sbatch`` returning) before the run goes on waiting."""
TASK_RETRIES = 1
"""A task whose worker died (killed, out of memory) runs once more on another worker."""
WORKER_START_TIMEOUT_S = 180.0
"""A cluster file's default ``worker_start_timeout``: how long a run waits with no worker (its jobs pending:
held, no free node, an inactive queue) before it fails."""
JOB_CHECK_S = 2.0
"""How often a run waiting on a cluster file's jobs checks that it still has them."""
REPLACEMENTS_WITHOUT_PROGRESS = 3
"""Per job the run keeps: that many jobs in a row ending while no partition finishes fail the run (a partition
longer than a job's worker lifetime would otherwise go from job to job forever)."""
LIFETIME_MARGIN_S = 120.0
"""A batch job's workers leave this long before its walltime (at most half of it): the job's start, the
worker's imports and the batch system's own check interval (Slurm's: 30 s) fit in it."""
CANDIDATE_PRIORITY = 1
"""Above the partitions' 0: a partition waiting on its candidates is served before the next partition starts."""

JOBQUEUE_CLUSTERS = {
    "slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster", "oar": "OARCluster",
    "htcondor": "HTCondorCluster", "moab": "MoabCluster",
}
"""The batch systems a cluster file may name (dask-jobqueue's classes)."""
IDLE_TIMEOUT_S = 300.0
"""Under ``fly64 ui``: how long a batch job's workers may sit idle before the job ends (a cluster file's
``idle_timeout`` sets another)."""
ADAPT_INTERVAL_S = 1.0
ADAPT_TARGET_DURATION_S = 0.01
"""Below any partition's expected duration: adaptive scaling asks for one worker per waiting or running partition
task (up to the file's ``jobs``), never fewer while they run, so no busy worker is retired."""

EpochReport = Callable[[str, int, float], None]
logger = logging.getLogger(__name__)


def dask_setup(worker) -> None:  # noqa: ARG001 - dask's preload hook
    """Preload: a worker imports torch and pty-chi once, when it starts, not in its first task. It ignores Ctrl-C:
    a terminal sends SIGINT to its whole process group, these workers included, and the process that started the
    cluster stops them in order (``lib/interrupts.py``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import_ptychi()


def local_cluster(workers: int, gpus: int, security=None):
    """A ``SpecCluster`` on this machine, on 127.0.0.1 only and TLS only: ``workers`` single-threaded worker
    processes, spread over ``gpus`` GPUs (each pinned to one with ``CUDA_VISIBLE_DEVICES``; with no GPU, none sees
    one). ``security``: its credentials (default: fresh temporary ones); a client needs ``cluster.security``."""
    from distributed import Nanny, Scheduler, SpecCluster

    security = security or temporary_security()

    def worker(index: int) -> dict:
        gpu = str(index % gpus) if gpus else ""
        return {"cls": Nanny, "options": {
            "nthreads": 1, "host": LOOPBACK, "protocol": "tls", "security": security, "dashboard": False,
            "preload": [__name__], "env": {"CUDA_VISIBLE_DEVICES": gpu, "OMP_NUM_THREADS": "1"},
            "silence_logs": logging.WARNING,
        }}

    scheduler = {"cls": Scheduler, "options": {"host": LOOPBACK, "port": 0, "protocol": "tls", "security": security,
                                               "dashboard_address": f"{LOOPBACK}:0"}}
    return SpecCluster(workers={f"worker-{i}": worker(i) for i in range(workers)}, scheduler=scheduler,
                       security=security, silence_logs=logging.WARNING, name="fly64")


def _batch_job_security(folder: Path):
    """TLS for a cluster whose workers run in batch jobs: fresh temporary credentials (``temporary_security``: one
    certificate for every role), the workers' copy written to ``folder`` (made here, mode 0700, each file 0600),
    which the jobs read on the shared filesystem."""
    security = copy.copy(temporary_security())
    files = write_credentials(security, folder)
    security.tls_ca_file = str(files / CA_FILE)
    security.tls_worker_cert, security.tls_worker_key = str(files / CERT_FILE), str(files / KEY_FILE)
    return security


def read_cluster_file(path: Path) -> tuple[str, dict]:
    """A cluster file's batch system (``slurm``, ...) and its options; ``ValueError`` saying what is wrong."""
    import yaml

    try:
        document = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cluster file {path}: cannot read it as YAML: {error}") from error
    if not isinstance(document, dict) or len(document) != 1 or next(iter(document)) not in JOBQUEUE_CLUSTERS:
        found = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise ValueError(f"cluster file {path}: expected exactly one of {sorted(JOBQUEUE_CLUSTERS)} at the top level, found {found}")
    ((kind, options),) = document.items()
    return kind, dict(options or {})


def idle_timeout_s(options: dict, path: Path) -> float:
    """Removes the ``idle_timeout`` of cluster file ``path`` from its ``options``: seconds, or a dask time such as
    ``"5 minutes"`` (default ``IDLE_TIMEOUT_S``). Only ``fly64 ui``'s adaptive cluster uses it."""
    from dask.utils import parse_timedelta

    value = options.pop("idle_timeout", IDLE_TIMEOUT_S)
    try:
        seconds = parse_timedelta(value, default="seconds")
    except (KeyError, ValueError, TypeError):
        seconds = None
    if seconds is None or seconds <= 0:
        raise ValueError(f"cluster file {path}: idle_timeout {value!r} is not a time (seconds, or e.g. '5 minutes')")
    return seconds


@contextlib.contextmanager
def cluster_from_file(path: Path, job_folder: Path, adaptive: bool = False) -> Iterator:
    """The dask-jobqueue cluster of ``batch_cluster``, without its job keeper."""
    with batch_cluster(path, job_folder, adaptive) as (cluster, _):
        yield cluster


@contextlib.contextmanager
def batch_cluster(path: Path, job_folder: Path, adaptive: bool = False) -> Iterator[tuple]:
    """A dask-jobqueue cluster from a YAML file with one entry, e.g. ``slurm: {cores: 8, memory: 64GB,
    job_extra_directives: ["--gres=gpu:1"], jobs: 2}`` (``jobs``: how many batch jobs to start; the other keys
    are the cluster class's arguments; ``processes`` defaults to ``cores``: single-threaded workers), started,
    then closed (its jobs cancelled); with the ``JobKeeper`` that a run waiting on it calls. ``worker_start_timeout``
    (seconds, default ``WORKER_START_TIMEOUT_S``): how long the run may have no worker before it fails. With a
    ``walltime``, the workers leave ``LIFETIME_MARGIN_S`` before it (dask's ``--lifetime``, counted from the
    worker's start), so that their tasks go to a fresh job instead of being killed.

    ``job_folder`` (on the shared filesystem) takes the jobs' logs, unless the file sets ``log_directory``, and,
    while the cluster runs, the workers' TLS credentials: every connection is TLS with credentials made for this
    cluster (what jobqueue's ``security=True`` does, with files the owner's alone).

    ``adaptive`` (``fly64 ui``): no job at first; ``adapt_to_demand`` between 0 and ``jobs`` jobs, each ending after
    the file's ``idle_timeout`` (seconds, or a dask time such as ``"5 minutes"``; default ``IDLE_TIMEOUT_S``)."""
    kind, options = read_cluster_file(path)
    if options.pop("security", True) is not True:
        raise ValueError(f"cluster file {path}: security must be true (TLS with credentials made per cluster) or left out")
    jobs = int(options.pop("jobs", 1))  # under fly64 ui: the most at once
    start_timeout_s = float(options.pop("worker_start_timeout", WORKER_START_TIMEOUT_S))
    if start_timeout_s <= 0:
        raise ValueError(f"cluster file {path}: worker_start_timeout must be a positive number of seconds")
    idle_s = idle_timeout_s(options, path)
    options.setdefault("processes", options.get("cores", 1))  # one single-threaded worker per core: a task at a time
    options.setdefault("log_directory", str(job_folder))
    # Workers preload torch and pty-chi; no worker dashboard (plain HTTP on the node's network).
    options["worker_extra_args"] = [*(options.get("worker_extra_args") or []), "--preload", __name__, "--no-dashboard",
                                    *_lifetime_args(options, path)]
    # The scheduler must listen where the batch jobs' workers reach it; its dashboard need not: this machine only.
    options["scheduler_options"] = {"dashboard_address": f"{LOOPBACK}:0", **(options.get("scheduler_options") or {})}
    try:
        jobqueue = importlib.import_module("dask_jobqueue")
    except ImportError as error:
        raise ValueError(f"cluster file {path} names a {kind} cluster: install dask-jobqueue") from error
    job_folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tls-", dir=job_folder) as private:
        security = _batch_job_security(Path(private) / "worker")
        cluster = getattr(jobqueue, JOBQUEUE_CLUSTERS[kind])(**options, security=security)
        try:
            if adaptive:
                adapt_to_demand(cluster, jobs, idle_s)
            else:
                cluster.scale(jobs=jobs)
                _check_submitted(cluster, jobs, path)
            yield cluster, JobKeeper(cluster, jobs, path, start_timeout_s, kind)
        finally:
            cluster.close()


def adapt_to_demand(cluster, maximum_jobs: int, idle_s: float) -> None:
    """Let ``cluster`` (dask-jobqueue) submit jobs while partition tasks wait or run, up to ``maximum_jobs``, and end
    a job once its workers have been idle ``idle_s``: dask's ``Adaptive`` checks every ``ADAPT_INTERVAL_S`` and
    retires a worker it found idle that many checks in a row (``wait_count``)."""
    cluster.adapt(minimum_jobs=0, maximum_jobs=maximum_jobs, interval=f"{ADAPT_INTERVAL_S}s",
                  wait_count=max(1, math.ceil(idle_s / ADAPT_INTERVAL_S)), target_duration=f"{ADAPT_TARGET_DURATION_S}s")


def _lifetime_args(options: dict, path: Path) -> list[str]:
    """dask's ``--lifetime`` for the workers of a job with a ``walltime`` (unless the file sets one): they leave
    before the batch system kills the job, their running task goes to another worker without counting as a
    failure, and the ``JobKeeper`` asks for a fresh job. Not ``--lifetime-restart``: the job itself ends."""
    walltime = options.get("walltime")
    if not walltime or "--lifetime" in (options.get("worker_extra_args") or []):
        return []
    seconds = _walltime_s(str(walltime), path)
    return ["--lifetime", f"{seconds - min(LIFETIME_MARGIN_S, seconds / 2):.0f}s"]


def _walltime_s(walltime: str, path: Path) -> float:
    """Slurm's forms (``minutes``, ``minutes:seconds``, ``hours:minutes:seconds``, ``days-hours[:minutes[:seconds]]``;
    PBS's ``hours:minutes:seconds`` among them) in seconds."""
    days, dash, clock = walltime.strip().rpartition("-")
    try:
        parts = [float(part) for part in clock.split(":")]
        if len(parts) > 3:
            raise ValueError
        if dash:
            hours, minutes, seconds = [*parts, 0.0, 0.0][:3]
        else:
            hours, minutes, seconds = {1: [0.0, parts[0], 0.0], 2: [0.0, *parts], 3: parts}[len(parts)]
        total = 86400 * float(days or 0) + 3600 * hours + 60 * minutes + seconds
    except ValueError:
        raise ValueError(f"cluster file {path}: walltime {walltime!r} is not [days-]hours:minutes:seconds") from None
    if total <= 0:
        raise ValueError(f"cluster file {path}: walltime {walltime!r} is not positive")
    return total


def _check_submitted(cluster, jobs: int, path: Path) -> None:
    """Raise when the batch system refused every job (a queue or an account that does not exist, ...): dask-jobqueue
    only logs the refusal, and the run would wait for workers forever. A job whose submission ended is in
    ``cluster.workers``; a refused one has no ``job_id``. Jobs that wait in the queue are fine."""
    deadline = time.monotonic() + SUBMIT_TIMEOUT_S
    while len(cluster.workers) < jobs and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if cluster.workers and all(job.job_id is None for job in cluster.workers.values()):
        from distributed.core import Status

        for job in cluster.workers.values():
            job.status = Status.failed  # its start raised; dask's close asserts that every job it made ended
        raise RuntimeError(f"cluster file {path}: the batch system accepted none of its {jobs} job(s); "
                           f"{cluster.job_cls.submit_command}'s error is in this run's log (e.g. a queue or account "
                           "that does not exist)")


class JobKeeper:
    """What a run waiting on a batch cluster's workers checks (``check``, every poll): a job whose workers all left
    (cancelled, preempted, its walltime reached) is replaced, so the run keeps ``jobs`` jobs (dask-jobqueue's
    ``scale`` alone does not notice); a run that has had no worker for ``start_timeout_s`` (its jobs held, no free
    node, an inactive queue) fails in one line with the batch system's pending reason, instead of waiting forever;
    so does a run whose jobs keep ending while no partition finishes (``REPLACEMENTS_WITHOUT_PROGRESS``).

    A job counts as gone when none of its workers was connected for dask's ``lost-worker-timeout`` (the rule dask
    itself applies to a lost worker's job)."""

    def __init__(self, cluster, jobs: int, path: Path, start_timeout_s: float, kind: str) -> None:
        import dask

        self.cluster, self.jobs, self.path, self.start_timeout_s, self.kind = cluster, jobs, path, start_timeout_s, kind
        self.lost_after_s = float(dask.utils.parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout")))
        self._seen: set[str] = set()  # jobs whose workers have connected
        self._asked: set[str] = set()  # jobs asked for again, not yet submitted
        self._left: dict[str, float] = {}  # those jobs with no worker now: since when
        self._no_worker_since = self._checked = time.monotonic()
        self._finished, self._replaced = 0, 0  # partitions finished; jobs replaced since the last one did

    def check(self, finished: int) -> None:
        """``finished``: how many of the run's partitions have finished so far."""
        now = time.monotonic()
        if finished != self._finished:
            self._finished, self._replaced = finished, 0
        if now - self._checked < JOB_CHECK_S:
            return
        self._checked = now
        connected = {str(info.get("name")) for info in self.cluster.scheduler_info.get("workers", {}).values()}
        if connected:
            self._no_worker_since = now
        for name in list(self.cluster.worker_spec):
            if name not in self.cluster.workers:  # dask closed it (its single worker was lost), or it is asked for
                if name not in self._asked:
                    self._replace(name)
                continue
            self._asked.discard(name)
            if any(worker == str(name) or worker.startswith(f"{name}-") for worker in connected):
                self._seen.add(name)
                self._left.pop(name, None)
            elif name in self._seen and now - self._left.setdefault(name, now) >= self.lost_after_s:
                self._replace(name)  # a job of several workers, all lost: dask does not notice
        if now - self._no_worker_since >= self.start_timeout_s:
            raise RuntimeError(self._never_started())

    def _replace(self, name) -> None:
        logger.warning("cluster file %s: a batch job has no worker left (cancelled, preempted or at its walltime): "
                       "asking for a new one", self.path)
        self._seen.discard(name)
        self._left.pop(name, None)
        self._asked.add(name)
        self._replaced += 1
        if self._replaced > REPLACEMENTS_WITHOUT_PROGRESS * self.jobs:
            raise RuntimeError(f"cluster file {self.path}: {self._replaced} batch jobs ended (cancelled, preempted or at "
                               "their walltime) while no partition finished: is a partition longer than a job's "
                               "walltime (less the workers' margin, LIFETIME_MARGIN_S)? Give the jobs a longer walltime")
        self.cluster.sync(self._forget, name)
        self.cluster.scale(jobs=self.jobs)  # submits a job for each name in the plan that has none

    async def _forget(self, name) -> None:
        job = self.cluster.workers.pop(name, None)
        if job is not None:
            await job.close()  # cancels it, if the batch system still has it

    def _never_started(self) -> str:
        ids = [job.job_id for job in self.cluster.workers.values() if getattr(job, "job_id", None)]
        waited = f"cluster file {self.path}: no dask worker for {self.start_timeout_s:.0f} s (worker_start_timeout)"
        if self.kind != "slurm" or not ids:
            return f"{waited}: its {self.kind} job(s) {', '.join(ids) or '(none submitted)'} have not started; cancelled"
        return f"{waited}: its Slurm job(s) {', '.join(ids)} have not started: {_slurm_pending(ids)}; cancelled"


def _slurm_pending(ids: list[str]) -> str:
    """Where and why Slurm keeps the jobs waiting, e.g. ``queue debug (JobHeldUser)``."""
    try:
        done = subprocess.run(["squeue", "--noheader", "--jobs", ",".join(ids), "--format=%P (%r)"], capture_output=True,
                              text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        return f"squeue did not say why ({error})"
    reasons = sorted(set(done.stdout.split("\n")) - {""})
    return "; ".join(f"queue {reason}" for reason in reasons) or "squeue no longer lists them"


class InlineDispatch:
    """Every partition in this process, one after another."""

    def __init__(self, cpu_threads: int | None) -> None:
        self.cpu_threads = cpu_threads

    def run(self, requests: Iterable[PartitionRequest], on_epoch: EpochReport) -> Iterator[PartitionOutcome]:
        for request in requests:
            yield run_partition(request, lambda epoch, loss, key=request.key: on_epoch(key, epoch, loss))


@dataclass(frozen=True)
class RunChannel:
    """The names by which a run's tasks reach back to it through the scheduler."""

    run_id: str
    lease_timeout_s: float

    @property
    def progress(self) -> str:
        return f"fly64-progress-{self.run_id}"

    @property
    def cancel(self) -> str:
        return f"fly64-cancel-{self.run_id}"

    @property
    def lease(self) -> str:
        return f"fly64-lease-{self.run_id}"


class _LeaseWatch:
    """Whether the run still renews its lease: the value must change within ``timeout_s`` of this worker's own
    clock (no clock is compared across machines)."""

    def __init__(self, variable, timeout_s: float) -> None:
        self._variable, self._timeout_s = variable, timeout_s
        self._value, self._seen = None, time.monotonic()

    def expired(self) -> bool:
        try:
            value = self._variable.get(timeout=self._timeout_s)
        except TimeoutError:
            return True
        now = time.monotonic()
        if value != self._value:
            self._value, self._seen = value, now
        return now - self._seen > self._timeout_s


class RunEnded:
    """A run task's ``should_stop``: the run's cancel ``Event`` is set or its lease expired. Picklable (the
    candidates of a choice take it to other workers); it reaches the scheduler from wherever it is called."""

    def __init__(self, channel: RunChannel) -> None:
        self.channel = channel
        self._probes = None

    def __getstate__(self) -> dict:
        return {"channel": self.channel}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["channel"])

    def __call__(self) -> bool:
        if self._probes is None:
            from distributed import Event, Variable

            self._probes = (Event(self.channel.cancel), _LeaseWatch(Variable(self.channel.lease), self.channel.lease_timeout_s))
        cancel, lease = self._probes
        return cancel.is_set() or lease.expired()


def _candidate_task(function, shared, item):
    """One candidate; stopped because its run ended, it returns the ``Cancelled`` (not an error for dask to log and
    retry), and the partition's task raises it."""
    try:
        return function(shared, item)
    except Cancelled as error:
        return error


def candidates_as_tasks(function, shared, items: list) -> list:
    """A ``CandidateMap`` for a task on a worker: each item a task of its own on the same cluster, ``shared`` sent
    once; this task leaves its worker's thread while it waits (``worker_client``), so the candidates may run
    there too."""
    from distributed import worker_client

    with worker_client() as client:
        [shared_future] = client.scatter([shared], hash=False)
        futures = client.map(_candidate_task, [function] * len(items), [shared_future] * len(items), items, pure=False,
                             priority=CANDIDATE_PRIORITY, retries=TASK_RETRIES)
        results = client.gather(futures)
    for result in results:
        if isinstance(result, Cancelled):
            raise result
    return results


def run_on_worker(request: PartitionRequest, channel: RunChannel) -> PartitionOutcome:
    """The task: ``run_partition`` with its epochs sent to the run's progress queue and the run's end noticed
    every epoch (the choice's candidates, tasks of their own, too). A cancelled partition comes back as a failure
    (so dask does not retry it)."""
    from distributed import Queue

    progress = Queue(channel.progress)
    try:
        return run_partition(request, lambda epoch, loss: progress.put((request.key, epoch, loss)), RunEnded(channel),
                             candidates_as_tasks)
    except Cancelled as error:
        return PartitionOutcome(request.key, failure=str(error))


class ClusterDispatch:
    """Every partition a task on ``client``'s cluster, all submitted at once; outcomes as they finish. ``watch``,
    called at every poll while it waits with the number of partitions finished, may raise to end the run (a batch
    cluster's ``JobKeeper.check``)."""

    def __init__(self, client, channel: RunChannel, cpu_threads: int | None, watch: Callable[[int], None] | None = None) -> None:
        self.client, self.channel, self.cpu_threads, self.watch = client, channel, cpu_threads, watch
        self._futures: list = []

    def run(self, requests: Iterable[PartitionRequest], on_epoch: EpochReport) -> Iterator[PartitionOutcome]:
        from distributed import Event, Queue, Variable, as_completed

        progress, lease = Queue(self.channel.progress, client=self.client), Variable(self.channel.lease, client=self.client)
        Event(self.channel.cancel, client=self.client).clear()
        renewals = itertools.count()
        lease.set(next(renewals))
        requests = list(requests)
        self._futures = [
            self.client.submit(run_on_worker, request, self.channel, key=f"fly64-{self.channel.run_id}-{request.key}",
                               pure=False, retries=TASK_RETRIES)
            for request in requests
        ]
        keys = {future.key: request.key for future, request in zip(self._futures, requests)}
        finished, renewed = as_completed(self._futures, loop=self.client.loop), time.monotonic()
        done = 0
        while True:
            for key, epoch, loss in progress.get(batch=True):
                on_epoch(key, epoch, loss)
            if time.monotonic() - renewed > LEASE_REFRESH_S:
                lease.set(next(renewals))
                renewed = time.monotonic()
            ready = finished.next_batch(block=False)
            for future in ready:
                outcome = self._outcome(future, keys[future.key])
                # Forget it: a result held on a worker whose job then ends would be computed again.
                self._futures.remove(future)
                future.release()
                yield outcome
            done += len(ready)
            if finished.is_empty():
                break
            if self.watch:
                self.watch(done)
            if not ready:
                time.sleep(POLL_S)
        for key, epoch, loss in progress.get(batch=True):  # the last epochs of the last partition
            on_epoch(key, epoch, loss)

    @staticmethod
    def _outcome(future, key: str) -> PartitionOutcome:
        """The task's outcome; a task that could not run (its workers died, the cluster went away) is a failure."""
        try:
            return future.result()
        except Exception as error:  # noqa: BLE001 - e.g. KilledWorker: this partition fails, the others go on
            return PartitionOutcome(key, failure=f"its dask task failed: {type(error).__name__}: {error}")

    def stop(self) -> None:
        """Tell this run's tasks to stop (within an epoch) and forget those not started."""
        from distributed import Event

        with contextlib.suppress(Exception):  # the cluster may be gone already
            Event(self.channel.cancel, client=self.client).set()
            self.client.cancel(self._futures)


@contextlib.contextmanager
def cluster_dispatch(
    run_id: str, *, scheduler: str = "", cluster_file: str = "", local_workers: int = 0, gpus: int = 0,
    cpu_threads: int | None = None, lease_timeout_s: float = 30.0, job_folder: Path | None = None, security=None,
) -> Iterator[ClusterDispatch]:
    """A dispatch on the running scheduler at ``scheduler`` (``security``: the credentials it asks of a client; a
    cluster started here hands the client its own), else on a cluster started for this run from
    ``cluster_file`` (its batch jobs' logs in ``job_folder``) or on this machine (``local_workers`` workers over
    ``gpus`` GPUs), closed at the end. However the run ends (done, failed, terminated), its tasks are told to
    stop."""
    from distributed import Client

    with contextlib.ExitStack() as stack:
        watch = None
        if scheduler:
            cluster = None
        elif cluster_file:
            cluster, keeper = stack.enter_context(batch_cluster(Path(cluster_file), job_folder))
            watch = keeper.check
        else:
            cluster = local_cluster(local_workers, gpus)
            stack.callback(cluster.close)
        with Client(scheduler or cluster, security=security, set_as_default=False) as client:
            dispatch = ClusterDispatch(client, RunChannel(run_id, lease_timeout_s), cpu_threads, watch)
            try:
                yield dispatch
            finally:
                dispatch.stop()
