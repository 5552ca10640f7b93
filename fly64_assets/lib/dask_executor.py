"""dagster-dask's executor with three fixes, on Dagster's public API only (imported only when dask is chosen).

``StudyDaskExecutor.execute`` is dagster-dask 0.29.27's ``DaskExecutor.execute`` with:

* each task's Dagster arguments travel inside a ``functools.partial``: dask 2025+ walks tuple arguments,
  and Dagster's run record (a NamedTuple holding ``@record`` objects that forbid iteration) makes the stock
  ``client.submit`` fail with "Iteration is not allowed on `@record` RunOpConcurrency" (pinning an older
  dask instead would hold the whole environment back);
* task keys carry the run id: dask merges tasks with equal keys, and the stock key ``<job>.<step>`` is the
  same for the concurrent runs of one backfill (each dose's range run of ``ptychi_reconstruction``), so on a
  shared scheduler the second run would get the first one's events instead of running its own step;
* a cluster the executor started (``local``, ``slurm``, ``pbs``, ...) is closed at the end of the run.
"""

from __future__ import annotations

import functools
import importlib

import dask.distributed
from dagster import DagsterEvent
from dagster_dask.executor import DaskExecutor, get_dask_resource_requirements, query_on_dask_worker

CLUSTER_CLASSES = {
    "local": ("dask.distributed", "LocalCluster"),
    "ssh": ("dask.distributed", "SSHCluster"),
    "yarn": ("dask_yarn", "YarnCluster"),
    "pbs": ("dask_jobqueue", "PBSCluster"),
    "moab": ("dask_jobqueue", "MoabCluster"),
    "sge": ("dask_jobqueue", "SGECluster"),
    "lsf": ("dask_jobqueue", "LSFCluster"),
    "slurm": ("dask_jobqueue", "SLURMCluster"),
    "oar": ("dask_jobqueue", "OARCluster"),
    "kube": ("dask_kubernetes", "KubeCluster"),
}
"""dagster-dask's cluster types other than ``existing``; all but local/ssh need their own package."""


class StudyDaskExecutor(DaskExecutor):
    def _start_cluster(self, job_name: str):
        """The scheduler address of an ``existing`` cluster, else a cluster started for this run."""
        if self.cluster_type == "existing":
            return self.cluster_configuration["address"]
        if self.cluster_type not in CLUSTER_CLASSES:
            raise ValueError(f"unknown dask cluster type {self.cluster_type!r}: expected existing or one of {sorted(CLUSTER_CLASSES)}")
        module_name, class_name = CLUSTER_CLASSES[self.cluster_type]
        return getattr(importlib.import_module(module_name), class_name)(**self.build_dict(job_name))

    def execute(self, plan_context, execution_plan):
        if not plan_context.instance.is_persistent:
            raise ValueError("dask execution needs a persistent Dagster instance (DAGSTER_HOME)")
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
                for _future, events in dask.distributed.as_completed(futures, with_results=True):
                    for event in events:
                        if not isinstance(event, DagsterEvent):
                            raise TypeError(f"a dask worker returned {type(event).__name__}, not a DagsterEvent")
                        yield event
        finally:
            if not isinstance(cluster, str):
                cluster.close()
