"""Where a run's steps execute, chosen by configuration: ``FLY64_EXECUTOR`` read when the code location loads.

* ``in_process`` (default): every step in the run's own process (torch is imported once per run);
* ``multiprocess``: Dagster's multiprocess executor (a process per step);
* ``dask``: dagster-dask's executor (:mod:`fly64_assets.lib.dask_executor`) on the cluster named by
  ``FLY64_DASK_SCHEDULER`` (a running scheduler: warm workers that keep torch and the CUDA context loaded),
  else ``FLY64_DASK_CLUSTER_FILE`` (a YAML file with one dagster-dask ``cluster`` entry, e.g. ``slurm:``),
  else a throwaway local cluster per run. A run's config (``execution: config: cluster: ...``) overrides it.

How many steps run at once is not decided here: the instance's ``dagster.yaml`` (run queue, ``gpu`` pool)
bounds runs and reconstruction steps on one machine; on dask, the workers' ``GPU`` resource does (start one
worker per GPU with ``--resources GPU=1``), because the reconstruction step carries :data:`GPU_STEP_TAGS`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path

from dagster import (
    BackfillPolicy,
    ExecutorDefinition,
    Field,
    executor,
    in_process_executor,
    multiple_process_executor_requirements,
    multiprocess_executor,
)

from fly64_assets.lib.cluster_preflight import StudyRoots, check_dask_setup

EXECUTOR_ENV = "FLY64_EXECUTOR"
DASK_SCHEDULER_ENV = "FLY64_DASK_SCHEDULER"
DASK_CLUSTER_FILE_ENV = "FLY64_DASK_CLUSTER_FILE"

PARTITIONS_PER_RUN_ENV = "FLY64_PARTITIONS_PER_RUN"

IN_PROCESS, MULTIPROCESS, DASK = "in_process", "multiprocess", "dask"
EXECUTOR_NAMES = (IN_PROCESS, MULTIPROCESS, DASK)

GPU_STEP_TAGS: dict[str, dict[str, int]] = {"dagster-dask/resource_requirements": {"GPU": 1}}
"""``op_tags`` of the reconstruction step (the tag dagster-dask reads): on dask it runs only on a worker started
with ``--resources GPU=1``, one at a time per such worker. CPU-only steps carry none and run on any worker."""

DASK_CLUSTER_TYPES = ("existing", "local", "yarn", "ssh", "pbs", "moab", "sge", "lsf", "slurm", "oar", "kube")

LOCAL_CLUSTER = {"local": {"n_workers": 1, "resources": {"GPU": 1}}}
"""Without a scheduler: a ``distributed.LocalCluster`` per run with one worker that owns the machine's GPU."""


def executor_name(environ: Mapping[str, str] | None = None) -> str:
    """``FLY64_EXECUTOR``, else ``in_process``; an unknown value raises ValueError."""
    env = os.environ if environ is None else environ
    chosen = env.get(EXECUTOR_ENV, "").strip().lower() or IN_PROCESS
    if chosen not in EXECUTOR_NAMES:
        raise ValueError(f"unknown executor {chosen!r} in {EXECUTOR_ENV}: expected one of {list(EXECUTOR_NAMES)}")
    return chosen


def reconstruction_backfill_policy(environ: Mapping[str, str] | None = None) -> BackfillPolicy:
    """How many partitions a backfill puts in one run of the reconstruction step: ``FLY64_PARTITIONS_PER_RUN``
    (``all`` or a count), by default ``all`` (single run) in process and 1 on dask.

    In process, a run imports torch and pty-chi once for all its partitions, so few big runs are fastest (a
    whole-study backfill is one run per dose). On dask the run process only waits while a warm worker does the
    work, so one partition per run lets the daemon's concurrent runs keep every GPU worker busy.
    """
    env = os.environ if environ is None else environ
    value = env.get(PARTITIONS_PER_RUN_ENV, "").strip().lower() or ("1" if executor_name(env) == DASK else "all")
    if value == "all":
        return BackfillPolicy.single_run()
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{PARTITIONS_PER_RUN_ENV} must be 'all' or a positive count, got {value!r}")
    return BackfillPolicy.multi_run(int(value))


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
    return copy.deepcopy(LOCAL_CLUSTER)


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


def study_executor(roots: StudyRoots, environ: Mapping[str, str] | None = None) -> ExecutorDefinition:
    """The executor ``FLY64_EXECUTOR`` names; for dask, with the cluster from the environment as its default."""
    chosen = executor_name(environ)
    if chosen == IN_PROCESS:
        return in_process_executor
    if chosen == MULTIPROCESS:
        return multiprocess_executor
    return study_dask_executor(dask_cluster_from_env(environ), roots)


def study_dask_executor(default_cluster: Mapping, roots: StudyRoots) -> ExecutorDefinition:
    """dagster-dask's executor with ``default_cluster`` as its default config; before any step is sent, the
    run is refused if the cluster may use other machines that cannot reach the instance or the roots."""
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
        from fly64_assets.lib.dask_executor import StudyDaskExecutor

        cluster = init_context.executor_config["cluster"]
        check_dask_setup(init_context.instance, cluster, roots)
        ((cluster_kind, cluster_options),) = cluster.items()
        return StudyDaskExecutor(cluster_kind, cluster_options)

    return dask
