"""Where the study's steps run: in the run's own process (default), in subprocesses, or on a dask cluster.

Choosing is configuration, never a code change:

* ``FLY64_EXECUTOR`` = ``in_process`` (default), ``multiprocess`` or ``dask``, read when the code location
  loads (``definitions.py`` calls :func:`study_executor`);
* for ``dask``, the cluster comes from ``FLY64_DASK_SCHEDULER`` (the address of a running scheduler: the
  ``existing`` cluster of dagster-dask), else from ``FLY64_DASK_CLUSTER_FILE`` (a YAML file holding one
  dagster-dask ``cluster`` entry, e.g. ``slurm:`` or ``pbs:`` with dask-jobqueue arguments), else a
  throwaway ``local`` cluster per run; a run's config (``execution: config: cluster: ...``) overrides it.

The dask executor is dagster-dask's own (``dagster_dask.dask_executor``); this module only gives it a default
cluster and refuses, with one clear message per problem, a multi-node run that could not work: a local-only
(sqlite) Dagster instance, or study roots that the other nodes cannot see (:func:`check_dask_setup`).

GPU awareness is dask's: the reconstruction step carries :data:`GPU_STEP_TAGS`, which dagster-dask turns into
the dask task resource ``{"GPU": 1}``; start one worker per GPU with ``--resources GPU=1 --nthreads 1``
(pinned by ``CUDA_VISIBLE_DEVICES``), so no GPU ever runs two reconstructions. CPU-only steps carry no
requirement and run on any worker. See docs/CLUSTER.md.

Each dask step re-imports the code location in its worker. :func:`reconstructable_study_job` makes a job that
rebuilds itself from explicit roots (``build_reconstructable_job``), so the ``fly64`` command and the tests do
not depend on the workers' environment; runs launched from the UI rebuild ``fly64_assets.definitions`` from the
workers' ``FLY64_*`` variables, which must therefore match the launcher's.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from dagster import (
    AssetKey,
    DagsterInstance,
    ExecutorDefinition,
    Field,
    JobDefinition,
    build_reconstructable_job,
    execute_job,
    executor,
    in_process_executor,
    multiple_process_executor_requirements,
    multiprocess_executor,
)

from fly64_assets.resources import StudyPaths

EXECUTOR_ENV = "FLY64_EXECUTOR"
DASK_SCHEDULER_ENV = "FLY64_DASK_SCHEDULER"
DASK_CLUSTER_FILE_ENV = "FLY64_DASK_CLUSTER_FILE"
SHARED_ARTIFACT_ROOT_ENV = "FLY64_SHARED_ARTIFACT_ROOT"
SHARED_INPUT_ROOTS_ENV = "FLY64_SHARED_INPUT_ROOTS"

IN_PROCESS, MULTIPROCESS, DASK = "in_process", "multiprocess", "dask"
EXECUTOR_NAMES = (IN_PROCESS, MULTIPROCESS, DASK)

DASK_RESOURCE_REQUIREMENTS_TAG = "dagster-dask/resource_requirements"
"""The op tag dagster-dask reads (``dagster_dask.executor.DASK_RESOURCE_REQUIREMENTS_KEY``); Dagster stores a
dict value as JSON, which is what dagster-dask parses."""

GPU_RESOURCE = "GPU"
GPU_STEP_TAGS: dict[str, dict[str, int]] = {DASK_RESOURCE_REQUIREMENTS_TAG: {GPU_RESOURCE: 1}}
"""``op_tags`` of the reconstruction asset: on dask it runs only on a worker started with ``--resources GPU=1``,
one at a time per such worker. CPU-only steps (quality, manifest, skip summary, report) carry none."""

DASK_CLUSTER_TYPES = ("existing", "local", "yarn", "ssh", "pbs", "moab", "sge", "lsf", "slurm", "oar", "kube")
"""dagster-dask's ``cluster`` choices; all but ``existing`` and ``local`` need their own package
(``dask-jobqueue`` for pbs/slurm/sge/lsf/moab/oar)."""

LOCAL_CLUSTER = {"local": {"n_workers": 1, "resources": {GPU_RESOURCE: 1}}}
"""Without a scheduler: a ``distributed.LocalCluster`` per run with one single-threaded worker that owns the
machine's (first) GPU. Enough to try the dask path on a workstation; a multi-GPU workstation should run its
own scheduler and one pinned worker per GPU and set ``FLY64_DASK_SCHEDULER`` (docs/CLUSTER.md)."""

SHARED_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "fuse.beegfs", "ceph", "cephfs",
        "fuse.ceph-fuse", "glusterfs", "fuse.glusterfs", "panfs", "wekafs", "afs", "openafs", "pvfs2",
        "orangefs", "fuse.juicefs", "quobyte", "fuse.quobyte",
    }
)
"""Mount types that cluster nodes share. Another filesystem every worker sees at the same path can be
declared shared with ``FLY64_SHARED_ARTIFACT_ROOT=1`` / ``FLY64_SHARED_INPUT_ROOTS=1``."""

TRUE_WORDS = ("1", "true", "yes", "on")
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
"""Keep Dagster's per-event console lines out of the command's output; the UI has them all."""


# --- choosing the executor -------------------------------------------------------------------------------


def executor_name(name: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``name``, else ``FLY64_EXECUTOR``, else ``in_process``; an unknown value raises ValueError."""
    env = os.environ if environ is None else environ
    chosen = (name if name is not None else env.get(EXECUTOR_ENV, "")).strip().lower() or IN_PROCESS
    if chosen not in EXECUTOR_NAMES:
        raise ValueError(
            f"unknown executor {chosen!r} (from {EXECUTOR_ENV} or the caller): expected one of {list(EXECUTOR_NAMES)}"
        )
    return chosen


def dask_cluster_from_env(environ: Mapping[str, str] | None = None) -> dict:
    """The dagster-dask ``cluster`` entry: ``{"existing": {"address": FLY64_DASK_SCHEDULER}}``, else the
    contents of ``FLY64_DASK_CLUSTER_FILE``, else :data:`LOCAL_CLUSTER`."""
    env = os.environ if environ is None else environ
    address = env.get(DASK_SCHEDULER_ENV, "").strip()
    cluster_file = env.get(DASK_CLUSTER_FILE_ENV, "").strip()
    if address and cluster_file:
        raise ValueError(
            f"both {DASK_SCHEDULER_ENV} ({address}) and {DASK_CLUSTER_FILE_ENV} ({cluster_file}) are set: "
            "set one (an existing scheduler, or a cluster that each run starts)"
        )
    if address:
        return {"existing": {"address": address}}
    if cluster_file:
        return load_cluster_file(Path(cluster_file))
    return json.loads(json.dumps(LOCAL_CLUSTER))


def load_cluster_file(path: Path) -> dict:
    """A YAML file with exactly one dagster-dask cluster entry, e.g. ``slurm: {queue: gpu, ...}``."""
    import yaml

    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{DASK_CLUSTER_FILE_ENV}={path}: cannot read it as YAML: {error}") from error
    if not isinstance(document, dict) and document is not None:
        raise ValueError(f"{DASK_CLUSTER_FILE_ENV}={path}: expected a mapping like 'slurm: {{...}}'")
    document = document or {}
    if "cluster" in document and len(document) == 1:
        document = document["cluster"] or {}
    if len(document) != 1 or next(iter(document)) not in DASK_CLUSTER_TYPES:
        raise ValueError(
            f"{DASK_CLUSTER_FILE_ENV}={path}: expected exactly one of {list(DASK_CLUSTER_TYPES)} at the top level, "
            f"found {sorted(document)}"
        )
    ((kind, options),) = document.items()
    if kind == "existing" and not (isinstance(options, dict) and options.get("address")):
        raise ValueError(f"{DASK_CLUSTER_FILE_ENV}={path}: 'existing' needs an 'address'")
    return {kind: options or {}}


def study_executor(
    name: str | None = None,
    *,
    cluster: Mapping | None = None,
    study_paths: StudyPaths | None = None,
    environ: Mapping[str, str] | None = None,
) -> ExecutorDefinition:
    """The study's executor: ``in_process`` (default), ``multiprocess`` or ``dask``.

    ``name`` defaults to ``FLY64_EXECUTOR``; for dask, ``cluster`` (a dagster-dask cluster entry) defaults to
    :func:`dask_cluster_from_env`, and ``study_paths`` are the roots the shared-filesystem check looks at
    (default: ``StudyPaths.from_env()`` when a run starts).
    """
    env = os.environ if environ is None else environ
    chosen = executor_name(name, env)
    if chosen == IN_PROCESS:
        return in_process_executor
    if chosen == MULTIPROCESS:
        return multiprocess_executor
    return fly64_dask_executor(dict(cluster) if cluster is not None else dask_cluster_from_env(env), study_paths)


def fly64_dask_executor(default_cluster: Mapping, study_paths: StudyPaths | None = None) -> ExecutorDefinition:
    """dagster-dask's executor with ``default_cluster`` as its default config and :func:`check_dask_setup`
    run once per run, on the launcher, before any step is sent to the cluster."""
    from dagster_dask import dask_executor

    cluster_type = dask_executor.config_schema.config_type.fields["cluster"].config_type

    @executor(
        name="dask",
        config_schema={
            "cluster": Field(
                cluster_type,
                is_required=False,
                default_value=dict(default_cluster),
                description="dagster-dask cluster: existing (address), local (LocalCluster arguments), slurm/pbs/... "
                "(dask-jobqueue arguments). Defaults from FLY64_DASK_SCHEDULER / FLY64_DASK_CLUSTER_FILE; "
                "see docs/CLUSTER.md.",
            )
        },
        requirements=multiple_process_executor_requirements(),
    )
    def dask(init_context):
        """Steps run as dask tasks; the reconstruction needs a worker with the GPU resource."""
        check_dask_setup(init_context.instance, init_context.executor_config["cluster"], study_paths)
        ((cluster_kind, cluster_options),) = init_context.executor_config["cluster"].items()
        return _study_dask_executor_class()(cluster_kind, cluster_options)

    return dask


@functools.cache
def _study_dask_executor_class():
    """dagster-dask's ``DaskExecutor`` with three fixes to its ``execute`` (otherwise the same code):

    * each task's Dagster arguments travel inside a ``functools.partial``: dask 2025+ walks tuple arguments,
      and Dagster's run record (a NamedTuple holding ``@record`` objects that forbid iteration) makes the
      stock ``client.submit`` fail with "Iteration is not allowed on `@record` RunOpConcurrency";
    * task keys carry the run id (``reconstruct_study.ptychi_reconstruction-<run id>``): dask merges tasks
      with equal keys, so two concurrent runs of one job on a shared scheduler would otherwise share one
      step (the second run getting the first one's events);
    * a cluster the executor started (``local``, ``slurm``, ``pbs``, ...) is closed at the end of the run.
    """
    import dask.distributed
    from dagster import _check as check
    from dagster._core.errors import raise_execution_interrupts
    from dagster._core.events import DagsterEvent
    from dagster._utils import iterate_with_context
    from dagster_dask.executor import (
        DaskExecutor,
        get_dask_resource_requirements,
        query_on_dask_worker,
    )

    class StudyDaskExecutor(DaskExecutor):
        def _start_cluster(self, job_name: str):
            if self.cluster_type == "existing":
                return self.cluster_configuration["address"]
            if self.cluster_type == "local":
                return dask.distributed.LocalCluster(**self.build_dict(job_name))
            modules = {
                "ssh": ("dask.distributed", "SSHCluster"), "yarn": ("dask_yarn", "YarnCluster"),
                "pbs": ("dask_jobqueue", "PBSCluster"), "moab": ("dask_jobqueue", "MoabCluster"),
                "sge": ("dask_jobqueue", "SGECluster"), "lsf": ("dask_jobqueue", "LSFCluster"),
                "slurm": ("dask_jobqueue", "SLURMCluster"), "oar": ("dask_jobqueue", "OARCluster"),
                "kube": ("dask_kubernetes", "KubeCluster"),
            }
            if self.cluster_type not in modules:
                raise ValueError(f"unknown dask cluster type {self.cluster_type!r}: expected one of {list(DASK_CLUSTER_TYPES)}")
            module_name, class_name = modules[self.cluster_type]
            import importlib

            return getattr(importlib.import_module(module_name), class_name)(**self.build_dict(job_name))

        def execute(self, plan_context, execution_plan):
            check.invariant(plan_context.instance.is_persistent, "Dask execution requires a persistent DagsterInstance")
            job_name = plan_context.job_name
            run_id = plan_context.dagster_run.run_id
            cluster = self._start_cluster(job_name)
            try:
                with dask.distributed.Client(cluster) as client:
                    futures, futures_by_step = [], {}
                    for step_level in execution_plan.get_steps_to_execute_by_level():
                        for step in step_level:
                            dependencies = [
                                futures_by_step[key] for step_input in step.step_inputs for key in step_input.dependency_keys
                            ]
                            task = functools.partial(
                                query_on_dask_worker,
                                recon_job=plan_context.reconstructable_job,
                                dagster_run=plan_context.dagster_run,
                                run_config=plan_context.run_config,
                                step_keys=[step.key],
                                instance_ref=plan_context.instance.get_ref(),
                                known_state=execution_plan.known_state,
                            )
                            future = client.submit(
                                task,
                                dependencies,
                                key=f"{job_name}.{step.key}-{run_id}",
                                resources=get_dask_resource_requirements(step.tags),
                                pure=False,
                            )
                            futures.append(future)
                            futures_by_step[step.key] = future
                    completed = dask.distributed.as_completed(futures, with_results=True)
                    for _future, events in iterate_with_context(raise_execution_interrupts, completed):
                        for event in events:
                            yield check.inst(event, DagsterEvent)
            finally:
                if not isinstance(cluster, str):
                    cluster.close()

    return StudyDaskExecutor


# --- refusing a multi-node run that cannot work ----------------------------------------------------------


class DaskSetupError(ValueError):
    """A dask run configured so that it cannot work across machines; one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("this dask run cannot work across machines:\n" + "\n".join(f"- {p}" for p in self.problems))


def cluster_is_on_this_machine(cluster: Mapping) -> bool:
    """True for a ``local`` cluster and for a scheduler on a loopback address: a scheduler listening on
    loopback can only have workers on this machine. Any other address, and every batch-system cluster
    (slurm, pbs, ...), may put steps on other machines."""
    ((kind, options),) = dict(cluster).items()
    if kind == "local":
        return True
    if kind != "existing":
        return False
    return _is_loopback(str((options or {}).get("address", "")))


def _is_loopback(address: str) -> bool:
    if address.startswith("inproc://"):
        return True
    rest = address.split("://", 1)[-1]
    if rest.startswith("["):
        host = rest[1:].split("]", 1)[0]
    else:
        host = rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe_cluster(cluster: Mapping) -> str:
    ((kind, options),) = dict(cluster).items()
    if kind == "existing":
        return f"the scheduler at {(options or {}).get('address')}"
    return f"a dagster-dask '{kind}' cluster" if kind != "local" else "a local cluster"


def local_only_storages(instance: DagsterInstance) -> list[str]:
    """The instance's storages that live in this machine's files or memory (sqlite, in-memory)."""
    found = []
    for label, storage in (
        ("run storage", instance.run_storage),
        ("event log storage", instance.event_log_storage),
    ):
        if storage is None:
            continue
        kind = type(storage)
        text = f"{kind.__module__}.{kind.__name__}".lower()
        if "sqlite" in text or "inmemory" in text or "in_memory" in text:
            found.append(f"{label} {kind.__name__}")
    return found


def _mount_entries(mounts_text: str | None) -> list[tuple[str, str]]:
    """(mount point, filesystem type) from /proc/self/mounts text (read from the system when None)."""
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/self/mounts").read_text()
        except OSError:
            return []
    entries = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            point = fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            entries.append((point, fields[2]))
    return entries


def filesystem_of(path: str | Path, mounts_text: str | None = None) -> tuple[str, str] | None:
    """(filesystem type, mount point) holding ``path`` (or its nearest existing parent); None if unknown."""
    target = Path(path).absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    target = target.resolve()
    best: tuple[str, str] | None = None
    for point, fstype in _mount_entries(mounts_text):
        mount = Path(point)
        # The longest mount point wins; among equal ones the later mount (it hides the earlier).
        if target.is_relative_to(mount) and (best is None or len(mount.parts) >= len(Path(best[1]).parts)):
            best = (fstype, point)
    return best


def is_shared_filesystem(path: str | Path, mounts_text: str | None = None) -> bool:
    found = filesystem_of(path, mounts_text)
    return found is not None and found[0].lower() in SHARED_FILESYSTEMS


def dask_setup_problems(
    instance: DagsterInstance,
    cluster: Mapping,
    study_paths: StudyPaths | None = None,
    environ: Mapping[str, str] | None = None,
    mounts_text: str | None = None,
) -> list[str]:
    """Why a dask run on ``cluster`` cannot work (empty: it can). Only a cluster that may use other machines
    is checked: then the Dagster instance must be shared (not sqlite) and the artifact root and the input
    roots must be on a shared filesystem (a known network/parallel mount type, or declared shared)."""
    if cluster_is_on_this_machine(cluster):
        return []
    env = os.environ if environ is None else environ
    paths = study_paths or StudyPaths.from_env()
    where = describe_cluster(cluster)
    problems = []
    local = local_only_storages(instance)
    if local:
        problems.append(
            f"the Dagster instance is local-only ({', '.join(local)}) but {where} is not on this machine: "
            "workers on other nodes cannot record or read the run's events. Use a shared instance: "
            "dagster-postgres storage in $DAGSTER_HOME/dagster.yaml (docs/CLUSTER.md)."
        )

    def declared(name: str) -> bool:
        return env.get(name, "").strip().lower() in TRUE_WORDS

    def describe(root: str) -> str:
        found = filesystem_of(root, mounts_text)
        return f"on a {found[0]} filesystem mounted at {found[1]}" if found else "on a filesystem of unknown type"

    if not declared(SHARED_ARTIFACT_ROOT_ENV) and not is_shared_filesystem(paths.artifact_root, mounts_text):
        problems.append(
            f"the artifact root {paths.artifact_root} is {describe(paths.artifact_root)}, not a shared one, but "
            f"{where} may run steps on other machines, whose outputs (and the asset values under .values/) "
            "would then be scattered. Put FLY64_ARTIFACT_ROOT on the cluster's shared filesystem "
            f"(nfs, lustre, gpfs, beegfs, cephfs, ...), or set {SHARED_ARTIFACT_ROOT_ENV}=1 if every "
            "worker sees this folder at this same path."
        )
    for label, root in (("Phase C root", paths.phase_c_root), ("Phase D root", paths.phase_d_root)):
        if not declared(SHARED_INPUT_ROOTS_ENV) and not is_shared_filesystem(root, mounts_text):
            problems.append(
                f"the {label} {root} is {describe(root)}, not a shared one, but {where} may run steps on other "
                "machines, which would record the inputs they cannot see as missing (skips). Put it on the "
                f"shared filesystem, or set {SHARED_INPUT_ROOTS_ENV}=1 if every worker sees the same files at "
                "this same path (e.g. staged copies)."
            )
    return problems


def check_dask_setup(
    instance: DagsterInstance,
    cluster: Mapping,
    study_paths: StudyPaths | None = None,
    environ: Mapping[str, str] | None = None,
    mounts_text: str | None = None,
) -> None:
    """Raise :class:`DaskSetupError` listing every problem :func:`dask_setup_problems` finds."""
    problems = dask_setup_problems(instance, cluster, study_paths, environ, mounts_text)
    if problems:
        raise DaskSetupError(problems)


# --- running the study's jobs on the chosen executor -----------------------------------------------------


@functools.lru_cache(maxsize=32)
def study_job(
    job_name: str,
    phase_c_root: str,
    phase_d_root: str,
    artifact_root: str,
    executor_choice: str = IN_PROCESS,
    cluster_json: str | None = None,
) -> JobDefinition:
    """One of the study's jobs on the given roots and executor (the function a reconstructable job calls,
    in the launcher and again in every worker; cached, since a worker calls it once per step)."""
    from fly64_assets.definitions import build_definitions

    paths = StudyPaths(phase_c_root=phase_c_root, phase_d_root=phase_d_root, artifact_root=artifact_root)
    cluster = json.loads(cluster_json) if cluster_json else None
    executor_def = study_executor(executor_choice, cluster=cluster, study_paths=paths)
    return build_definitions(paths).resolve_job_def(job_name).with_executor_def(executor_def)


def reconstructable_study_job(
    job_name: str, study_paths: StudyPaths, executor_choice: str | None = None, cluster: Mapping | None = None
):
    """A job that dask workers (or multiprocess subprocesses) rebuild from these explicit roots and executor,
    whatever their own environment says."""
    chosen = executor_name(executor_choice)
    cluster_entry = (dict(cluster) if cluster is not None else dask_cluster_from_env()) if chosen == DASK else None
    return build_reconstructable_job(
        __name__,
        study_job.__name__,
        reconstructable_kwargs={
            "job_name": job_name,
            "phase_c_root": str(study_paths.phase_c_root),
            "phase_d_root": str(study_paths.phase_d_root),
            "artifact_root": str(study_paths.artifact_root),
            "executor_choice": chosen,
            "cluster_json": json.dumps(cluster_entry, sort_keys=True) if cluster_entry else None,
        },
    )


@dataclass
class RunOutcome:
    """One Dagster run launched by :func:`run_on_executor`."""

    run_id: str
    success: bool
    seconds: float
    error: str | None = None
    outputs: dict = field(default_factory=dict)


def run_failure_message(result) -> str:
    """The first step failure's message, else the run failure's (e.g. a refused dask setup)."""
    for event in result.all_events:
        data = getattr(event, "step_failure_data", None) if event.is_step_failure else None
        if data is not None and data.error is not None:
            if data.user_failure_data is not None and data.user_failure_data.description:
                return data.user_failure_data.description.strip()
            return data.error.message.strip()
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if (event.is_run_failure or event.is_engine_event) and error is not None:
            causes = [error] + [cause for cause in (error.cause, error.context) if cause is not None]
            return "\n".join(cause.message.strip() for cause in causes)
    return "the run failed"


def run_on_executor(
    job_name: str,
    study_paths: StudyPaths,
    instance: DagsterInstance,
    run_config: Mapping | None = None,
    partition_key: str | None = None,
    executor_choice: str | None = None,
    cluster: Mapping | None = None,
    asset_values: tuple[str, ...] = (),
) -> RunOutcome:
    """Execute one study job (one partition when ``partition_key`` is given) as a Dagster run in ``instance``
    on the chosen executor (``execute_job``: unlike ``execute_in_process`` it honours the executor); after a
    success, ``outputs`` holds the stored values of the (unpartitioned) assets named in ``asset_values``."""
    from fly64_assets.study import STUDY_PARTITIONS

    chosen = executor_name(executor_choice)
    if chosen == DASK:
        cluster = dict(cluster) if cluster is not None else dask_cluster_from_env()
        # Refuse before a run is created; the executor checks again for runs launched elsewhere (the UI).
        check_dask_setup(instance, cluster, study_paths)
    job = reconstructable_study_job(job_name, study_paths, chosen, cluster)
    tags = STUDY_PARTITIONS.get_tags_for_partition_key(partition_key) if partition_key else None
    started = time.perf_counter()
    with execute_job(job, instance=instance, run_config=dict(run_config or {}), tags=tags, raise_on_error=False) as result:
        outcome = RunOutcome(
            run_id=result.run_id,
            success=result.success,
            seconds=time.perf_counter() - started,
            error=None if result.success else run_failure_message(result),
        )
    if outcome.success and asset_values:
        from fly64_assets.definitions import build_definitions

        defs = build_definitions(study_paths)
        outcome.outputs = {name: defs.load_asset_value(AssetKey(name), instance=instance) for name in asset_values}
    return outcome


def run_partition_on_executor(
    study_paths: StudyPaths,
    partition_key: str,
    reconstruction_config: Mapping,
    instance: DagsterInstance,
    executor_choice: str | None = None,
    cluster: Mapping | None = None,
) -> RunOutcome:
    """Reconstruct and score one study partition (the ``reconstruct_study`` job) on the chosen executor."""
    from fly64_assets.definitions import RECONSTRUCT_JOB

    run_config = _partition_run_config(reconstruction_config)
    return run_on_executor(RECONSTRUCT_JOB, study_paths, instance, run_config, partition_key, executor_choice, cluster)


def _launcher_processes():
    """Processes for concurrent run launchers: forked from a fork server that imported the code location once
    (torch, pty-chi, Dagster), where the platform has one; else spawned, each importing it again."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["fly64_assets.definitions"])
        return context
    return multiprocessing.get_context("spawn")


def _partition_run_config(reconstruction_config: Mapping) -> dict:
    return {**QUIET, "ops": {"ptychi_reconstruction": {"config": dict(reconstruction_config)}}}


def _run_partition_in_child(run_id, paths_dict, instance_ref, executor_choice, cluster) -> RunOutcome:
    """Execute a run the launcher created (:func:`run_study_on_executor`), in a process of its own."""
    from dagster._core.execution.api import execute_run

    from fly64_assets.definitions import RECONSTRUCT_JOB

    with DagsterInstance.from_ref(instance_ref) as instance:
        job = reconstructable_study_job(RECONSTRUCT_JOB, StudyPaths(**paths_dict), executor_choice, cluster)
        started = time.perf_counter()
        result = execute_run(job, instance.get_run_by_id(run_id), instance, raise_on_error=False)
        return RunOutcome(
            run_id=run_id,
            success=result.success,
            seconds=time.perf_counter() - started,
            error=None if result.success else run_failure_message(result),
        )


def _child_outcome(future, dagster_run, instance: DagsterInstance) -> RunOutcome:
    """The child's outcome; a child that died before finishing its run leaves the run marked failed."""
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001 - the process died, or the run could not even start
        if not instance.get_run_by_id(dagster_run.run_id).is_finished:
            instance.report_run_failed(dagster_run, f"the process executing it failed: {error!r}")
        return RunOutcome(run_id=dagster_run.run_id, success=False, seconds=0.0, error=repr(error))


def _report_partitions(finished, plan, executor_choice: str, progress: Callable[[str], None]) -> None:
    for index, (job, outcome) in enumerate(finished, start=1):
        if not outcome.success:
            text = f"FAILED: {outcome.error}"
        else:
            text = "skipped (input missing)" if job in plan.missing else "reconstructed"
        progress(f"[{index}/{len(plan.selected)}] {job.partition_key}: {text} in {outcome.seconds:.1f} s ({executor_choice})")


def run_study_on_executor(
    paths: StudyPaths,
    plan,
    reconstruction_config: Mapping,
    progress: Callable[[str], None] = print,
    instance: DagsterInstance | None = None,
    executor_choice: str | None = None,
    cluster: Mapping | None = None,
    check_inputs: bool = True,
    max_concurrent_runs: int = 1,
) -> dict:
    """``execution.run_study`` on the chosen executor: the DATA-001 input checks (in this process), one run per
    selected partition, then the summaries (manifest, skip summary, report); returns those three values by
    asset name, like ``run_study``. A dask setup that cannot work raises :class:`DaskSetupError` before any
    run. On a dask cluster other than ``local``, up to ``max_concurrent_runs`` partition runs are in flight at
    once, each launched from a process of its own (its steps are dask tasks; the launcher only waits), so the
    cluster's GPU workers fill up; otherwise the partitions run one after another."""
    from fly64_assets.definitions import SUMMARIZE_JOB
    from fly64_assets.execution import record_input_checks

    instance = instance or DagsterInstance.get()
    chosen = executor_name(executor_choice)
    if chosen == DASK:
        cluster = dict(cluster) if cluster is not None else dask_cluster_from_env()
        check_dask_setup(instance, cluster, paths)
    if check_inputs:
        counts = record_input_checks(paths, instance)
        progress(f"DATA-001 on the inputs: {counts['ok']} ok, {counts['invalid']} invalid, {counts['missing']} missing")
    if max_concurrent_runs < 1:
        raise ValueError(f"max_concurrent_runs must be at least 1, got {max_concurrent_runs}")
    jobs = list(plan.selected)
    # A shared scheduler (or a batch system) arbitrates the GPUs between runs; throwaway local clusters,
    # one per run, would each claim the same GPU.
    concurrent = chosen == DASK and "local" not in cluster and max_concurrent_runs > 1 and len(jobs) > 1
    if concurrent:
        # Dagster's execute_job is not thread-safe (it reconfigures logging per run): one process per
        # in-flight run, like the daemon's run workers; the steps themselves run on the cluster.
        # The runs are created here, one after another (concurrent first runs of a job race on its snapshot
        # in a sqlite instance); the processes only execute them.
        from fly64_assets.definitions import RECONSTRUCT_JOB
        from fly64_assets.study import STUDY_PARTITIONS

        recon = reconstructable_study_job(RECONSTRUCT_JOB, paths, chosen, cluster)
        runs = {
            job: instance.create_run_for_job(
                job_def=recon.get_definition(),
                run_config=_partition_run_config(reconstruction_config),
                tags=STUDY_PARTITIONS.get_tags_for_partition_key(job.partition_key),
                job_code_origin=recon.get_python_origin(),
            )
            for job in jobs
        }
        paths_dict = {"phase_c_root": paths.phase_c_root, "phase_d_root": paths.phase_d_root, "artifact_root": paths.artifact_root}
        arguments = (paths_dict, instance.get_ref(), chosen, cluster)
        pool = ProcessPoolExecutor(max_workers=min(max_concurrent_runs, len(jobs)), mp_context=_launcher_processes())
        with pool:
            pending = {pool.submit(_run_partition_in_child, runs[job].run_id, *arguments): job for job in jobs}
            finished = ((pending[f], _child_outcome(f, runs[pending[f]], instance)) for f in as_completed(pending))
            _report_partitions(finished, plan, chosen, progress)
    else:
        finished = (
            (job, run_partition_on_executor(paths, job.partition_key, reconstruction_config, instance, chosen, cluster))
            for job in jobs
        )
        _report_partitions(finished, plan, chosen, progress)
    names = ("reconstruction_manifest", "skip_summary", "study_report")
    summary = run_on_executor(
        SUMMARIZE_JOB,
        paths,
        instance,
        {**QUIET, "ops": {"reconstruction_manifest": {"config": plan.filters}}},
        executor_choice=chosen,
        cluster=cluster,
        asset_values=names,
    )
    if not summary.success:
        raise RuntimeError(f"the summaries failed: {summary.error}")
    return summary.outputs
