"""The ``fly64`` command: simulate, check, plan (dry run), run (through Dagster), report, and the whole study.

It keeps the old study script's command line (``--phase-c-root --phase-d-root --artifact-root``,
``--dose --view --split`` filters, ``--allow-missing-phase-d``) so users' scripts keep working.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import sys
import time
import warnings
from enum import Enum
from pathlib import Path

from pydantic import ValidationError

from fly64_assets.core import bookkeeping
from fly64_assets.core.artifacts import write_json
from fly64_assets.core.contract import check_file
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.core.synthetic import DEFAULT_SCALE, SCALES, simulate_study, simulated_scale
from fly64_assets.defs.resources import StudyPaths, default_data_dir, synthetic_root
from fly64_assets.defs.compute import DASK_WORKERS_ENV, StudyCompute
from fly64_assets.lib.interrupts import EXIT_INTERRUPTED, Stopped, ctrl_c_stops_the_command
from fly64_assets.lib.progress import progress_for
from fly64_assets.core.design import ALL_DATASETS, DOSES, SIMULATION_SEED, SPLITS, VIEWS, Dataset, select_datasets

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SCALE_HELP = (
    "size of the synthetic study: demo (98 patterns per split, for a first look and the tests), standard (128 per "
    "split, a dense view that covers its area: the default), full (2048 per split, like fly64)"
)


class UsageError(Exception):
    """A problem with the command line or configuration: printed as one clear message, exit 2."""


def _add_roots(parser: argparse.ArgumentParser, artifacts: bool = True) -> None:
    defaults = StudyPaths.from_env()
    parser.add_argument("--phase-c-root", default=defaults.phase_c_root, help="Phase C root (env FLY64_PHASE_C_ROOT)")
    parser.add_argument("--phase-d-root", default=defaults.phase_d_root, help="Phase D root (env FLY64_PHASE_D_ROOT)")
    if artifacts:
        parser.add_argument("--artifact-root", default=defaults.artifact_root, help="outputs (env FLY64_ARTIFACT_ROOT)")


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dose", type=int, action="append", default=[], help=f"repeatable; one of {list(DOSES)}")
    parser.add_argument("--view", action="append", default=[], help=f"repeatable; one of {list(VIEWS)}")
    parser.add_argument("--split", action="append", default=[], help=f"repeatable; one of {list(SPLITS)}")
    parser.add_argument(
        "--allow-missing-phase-d",
        action="store_true",
        help="record a missing Phase D view as a skip (missing_jobs) instead of stopping",
    )


def _add_reconstruction(parser: argparse.ArgumentParser) -> None:
    """One flag per reconstruction option (``--epochs``, ``--batch-size``, ...), documented by the options model."""
    for name, info in ReconstructionOptions.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = info.default.value if isinstance(info.default, Enum) else info.default
        help_text = f"{info.description} (default {default})".replace("%", "%%")  # argparse formats help with %
        if info.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=info.default, help=help_text)
        elif isinstance(info.default, Enum):
            choices = [member.value for member in type(info.default)]
            parser.add_argument(flag, choices=choices, default=info.default.value, help=help_text)
        else:
            parser.add_argument(flag, type=int if name != "device" else str, default=info.default, help=help_text)
    parser.add_argument(
        "--workers", type=int, default=None,
        help=f"a local dask cluster of this many worker processes for the run (0: none, in this process; default "
        f"{DASK_WORKERS_ENV}, else sized to the machine); ignored when FLY64_DASK_SCHEDULER names a running one",
    )
    parser.add_argument("--max-concurrent-runs", help=argparse.SUPPRESS)


def _options(args) -> ReconstructionOptions:
    """The reconstruction options from the flags; a value the model refuses is a usage error."""
    if getattr(args, "max_concurrent_runs", None) is not None:
        print("fly64: --max-concurrent-runs is no longer used and is ignored: the command's partitions are one run, "
              "spread over the dask workers (--workers)", file=sys.stderr)
    try:
        return ReconstructionOptions(**{name: getattr(args, name) for name in ReconstructionOptions.model_fields})
    except ValidationError as error:
        raise UsageError("; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in error.errors())) from error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fly64", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="write the synthetic Phase C/D tree")
    simulate.add_argument("out", type=Path, help="output folder (gets phase_c/ and phase_d/)")
    simulate.add_argument("--scale", choices=list(SCALES), default=DEFAULT_SCALE, help=SCALE_HELP)
    simulate.add_argument("--seed", type=int, default=SIMULATION_SEED)

    check = commands.add_parser("check", help="DATA-001 on every expected input file")
    _add_roots(check, artifacts=False)
    check.add_argument("--json", action="store_true", help="print a JSON list instead of a table")

    plan = commands.add_parser("plan", help="dry run: write the manifest and skip summary, reconstruct nothing")
    _add_roots(plan)
    _add_filters(plan)

    run = commands.add_parser("run", help="reconstruct the selected partitions through Dagster")
    _add_roots(run)
    _add_filters(run)
    _add_reconstruction(run)

    report = commands.add_parser("report", help="score every reconstruction against the truth and write the study report")
    _add_roots(report)

    ui = commands.add_parser("ui", help="the Dagster UI with one warm dask cluster that every run shares (make ui)")
    ui.add_argument("--port", type=int, default=3000, help="the UI's port on 127.0.0.1 (default 3000)")
    ui.add_argument("--workers", type=int, default=None,
                    help="worker processes (default: 8 per GPU, else one per core)")

    repeat = commands.add_parser(
        "repeat", help="reconstruct a partition again from its reconstruction.json and compare with the original")
    repeat.add_argument("record", type=Path, help="a reconstruction.json (under the artifact root: dose_*/<view>/<split>/)")
    repeat.add_argument("--artifact-root", type=Path, default=None,
                        help="where the repeat goes (default: repeats/<dose>_<view>_<split>-<UTC time> in the original's "
                        "artifact root), with its own Dagster instance")
    repeat.add_argument("--workers", type=int, default=None,
                        help="a local dask cluster of this many workers (0: in this process; default as fly64 run)")

    study = commands.add_parser("study", help="the whole default study: simulate if absent, run all, summarize")
    _add_reconstruction(study)
    study.add_argument("--scale", choices=list(SCALES), default=DEFAULT_SCALE, help=SCALE_HELP)
    return parser


def _paths(args) -> StudyPaths:
    paths = StudyPaths(
        phase_c_root=str(Path(args.phase_c_root).resolve()),
        phase_d_root=str(Path(args.phase_d_root).resolve()),
        artifact_root=str(Path(args.artifact_root).resolve()),
    )
    errors = paths.configuration_errors()
    if errors:
        raise UsageError("\n".join(errors))
    return paths


def _plan(args, paths: StudyPaths) -> bookkeeping.StudyPlan:
    """The selected jobs and their inputs; stops before any work on an unexpected missing input."""
    try:
        selected = select_datasets(args.dose, args.view, args.split)
    except ValueError as error:
        raise UsageError(str(error)) from error
    filters = {"dose": args.dose, "view": args.view, "split": args.split}
    plan = bookkeeping.plan_study(selected, paths.input_path, filters)
    not_allowed = [dataset for dataset in plan.missing if not (dataset.is_phase_d and args.allow_missing_phase_d)]
    if not_allowed:
        listing = "\n".join(f"  {dataset.partition_key}: {paths.input_path(dataset)}" for dataset in not_allowed)
        hint = "" if all(not dataset.is_phase_d for dataset in not_allowed) else "\n(use --allow-missing-phase-d to record missing Phase D views as skips)"
        raise UsageError(f"missing input files, nothing was run:\n{listing}{hint}")
    return plan


def _write_reports(paths: StudyPaths, manifest: dict) -> None:
    write_json(paths.artifact_file("reconstruction_manifest.json"), manifest)
    write_json(paths.artifact_file("skip_summary.json"), bookkeeping.build_skip_summary(manifest))


def _print_simulated(summary: dict) -> None:
    for name, n_patterns in summary["written"].items():
        print(f"  wrote {name} ({n_patterns} patterns)")
    for name, skipped in summary["skipped"].items():
        print(f"  not written: {name}: {skipped['reason']}")


def cmd_simulate(args) -> int:
    started = time.perf_counter()
    _print_simulated(simulate_study(args.out, scale=args.scale, seed=args.seed))
    print(f"synthetic {args.scale} study written to {args.out} in {time.perf_counter() - started:.1f} s")
    return EXIT_OK


def check_inputs(paths: StudyPaths) -> list[dict]:
    """DATA-001 on each of the 18 expected files: ok, invalid (with violations) or missing."""
    entries = []
    for dataset in ALL_DATASETS:
        path = paths.input_path(dataset)
        violations = [] if not path.exists() else [str(v) for v in check_file(path)]
        status = "missing" if not path.exists() else ("invalid" if violations else "ok")
        entries.append({**dataset.as_record(), "path": str(path), "status": status, "violations": violations})
    return entries


def cmd_check(args) -> int:
    paths = StudyPaths(phase_c_root=args.phase_c_root, phase_d_root=args.phase_d_root, artifact_root=".")
    entries = check_inputs(paths)
    if args.json:
        print(json.dumps(entries, indent=2))
    else:
        for entry in entries:
            print(f"{entry['status']:8} {Dataset(entry['dose'], entry['view'], entry['split']).partition_key:18} {entry['path']}")
            for violation in entry["violations"]:
                print(f"         {violation}")
    return EXIT_FAILED if any(entry["status"] == "invalid" for entry in entries) else EXIT_OK


def cmd_plan(args) -> int:
    paths = _paths(args)
    plan = _plan(args, paths)
    manifest = bookkeeping.build_manifest(plan, {}, paths.input_path, Path(paths.artifact_root), dry_run=True)
    _write_reports(paths, manifest)
    print(f"dry run: {len(plan.runnable)} dataset(s) to reconstruct, {len(plan.missing)} missing input(s), "
          f"{len(ALL_DATASETS) - len(plan.selected)} outside the filters")
    print(f"wrote {paths.artifact_file('reconstruction_manifest.json')} and {paths.artifact_file('skip_summary.json')}")
    return EXIT_OK


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, else the study's own instance folder (the one ``make ui`` uses)."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(default_data_dir() / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    return home


def _environment_compute(workers: int | None) -> StudyCompute:
    """The environment's choice of where partitions go, ``--workers`` overriding a local cluster's size."""
    compute = StudyCompute.from_env()
    if workers is None:
        return compute
    if workers < 0:
        raise UsageError(f"--workers must be 0 or more, not {workers}")
    # a new resource, not model_copy: Dagster builds a resource from the values it was constructed with
    fields = {name: getattr(compute, name) for name in StudyCompute.model_fields}
    return StudyCompute(**{**fields, "workers": workers})


def _compute(args) -> StudyCompute:
    """Where the run's partitions go (``_environment_compute``), checked against the run's roots."""
    compute = _environment_compute(args.workers)
    problems = compute.configuration_errors(_paths(args).folders())
    if problems:
        raise UsageError("\n".join(problems))
    return compute


def cmd_run(args) -> int:
    from dagster import DagsterInstance

    from fly64_assets import launch

    paths = _paths(args)
    plan = _plan(args, paths)
    options = _options(args)
    ensure_dagster_home()
    compute = _compute(args)
    with DagsterInstance.get() as instance:
        print(f"{len(plan.selected)} partition(s) through Dagster on {compute.describe(resolve=False)}, instance {os.environ['DAGSTER_HOME']}")
        progress = progress_for(sys.stdout)
        try:
            outputs = launch.run_study(paths, plan, options, instance, progress, compute)
        finally:
            progress.close()
    manifest, study_report = outputs["reconstruction_manifest"], outputs["study_report"]
    results = manifest["execution_results"]
    failed = [r for r in results if r["status"] != bookkeeping.RECONSTRUCTED]
    print(f"{len(results) - len(failed)} of {len(results)} reconstruction(s) succeeded, "
          f"{len(manifest['missing_jobs'])} missing input(s) recorded as skips")
    print(f"manifest: {paths.artifact_file('reconstruction_manifest.json')}")
    print(f"report:   {study_report['html_path']}")
    print(f"headline: {study_report['headline']}")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_ui(args) -> int:
    """``make ui``: one warm dask cluster on this machine and ``dagster dev`` beside it, every run sending its
    partitions to that cluster (so a backfill's runs, automation runs and a clicked partition share the same
    workers and never oversubscribe the GPU). Ctrl-C stops both. With FLY64_DASK_SCHEDULER set, that running
    scheduler is used instead and no cluster is started; with FLY64_DASK_CLUSTER_FILE set, the cluster is that
    file's batch-system cluster, its jobs coming and going with the work (``_batch_cluster``).

    The cluster speaks TLS only (a scheduler runs any client's code): the runs, processes of ``dagster dev``, get
    its client credentials as files in a private temporary folder (FLY64_DASK_SECURITY), removed when this stops."""
    import signal
    import subprocess

    from fly64_assets.defs.compute import (
        DASK_CLUSTER_FILE_ENV, DASK_SCHEDULER_ENV, DASK_SECURITY_ENV, StudyCompute, gpu_count, ui_cluster_workers,
    )
    from fly64_assets.lib.dask_compute import local_cluster
    from fly64_assets.lib.dask_security import private_credentials, temporary_security

    ensure_dagster_home()
    command = [str(Path(sys.executable).parent / "dagster"), "dev", "-m", "fly64_assets.definitions",
               "--host", "127.0.0.1", "--port", str(args.port)]

    def serve(environ: dict[str, str]) -> int:
        # Ctrl-C, or a plain `kill`, stops both (a shell that started us in the background ignores SIGINT)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        process = subprocess.Popen(command, env=environ)
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.terminate()  # dagster dev stops its webserver, daemon and code server
            try:
                return process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                return process.wait()

    existing = os.environ.get(DASK_SCHEDULER_ENV, "").strip()
    if existing:
        problems = StudyCompute.from_env().scheduler_errors()
        if problems:
            raise UsageError("\n".join(problems))
        print(f"fly64 ui: every run sends its partitions to the running dask scheduler at {existing}")
        return serve(dict(os.environ))
    if os.environ.get(DASK_CLUSTER_FILE_ENV, "").strip():
        with _batch_cluster() as (address, credentials):
            environ = {key: value for key, value in os.environ.items() if key != DASK_CLUSTER_FILE_ENV}
            return serve({**environ, DASK_SCHEDULER_ENV: address, DASK_SECURITY_ENV: str(credentials)})
    gpus = gpu_count()
    workers = args.workers if args.workers is not None else ui_cluster_workers(gpus)
    if workers < 1:
        raise UsageError(f"--workers must be 1 or more, not {workers}")
    security = temporary_security()
    with private_credentials(security) as credentials, local_cluster(workers, gpus, security) as cluster:
        print(f"fly64 ui: a dask cluster of {workers} warm worker(s)" + (f" on {gpus} GPU(s)" if gpus else "")
              + f", scheduler {cluster.scheduler_address}, dashboard {cluster.dashboard_link}, client TLS credentials "
              f"{credentials}", flush=True)
        return serve({**os.environ, DASK_SCHEDULER_ENV: cluster.scheduler_address,
                      DASK_SECURITY_ENV: str(credentials)})


@contextlib.contextmanager
def _batch_cluster():
    """``fly64 ui``'s cluster from FLY64_DASK_CLUSTER_FILE, shared by every run: no batch job while nothing runs,
    jobs submitted while partitions wait or run (at most the file's ``jobs``), each ending once idle for the file's
    ``idle_timeout``. Yields the scheduler's address and the folder of its client credentials (owner-only)."""
    from datetime import datetime, timezone

    from fly64_assets.defs.compute import CLUSTER_JOBS_FOLDER
    from fly64_assets.lib.dask_compute import cluster_from_file, idle_timeout_s, read_cluster_file
    from fly64_assets.lib.dask_security import private_credentials

    compute = StudyCompute.from_env()
    paths = StudyPaths.from_env()
    problems = compute.configuration_errors(paths.folders())  # checked here: the runs see only a scheduler
    try:
        kind, options = read_cluster_file(Path(compute.cluster_file))
        idle_s = idle_timeout_s(options, compute.cluster_file)
    except ValueError as error:
        problems.append(str(error))
    if problems:
        raise UsageError("\n".join(problems))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    job_folder = Path(paths.artifact_root) / CLUSTER_JOBS_FOLDER / f"fly64-ui-{stamp}"
    with cluster_from_file(Path(compute.cluster_file), job_folder, adaptive=True) as cluster, \
            private_credentials(cluster.security) as credentials:
        print(f"fly64 ui: the {kind} cluster of {compute.cluster_file}: no job until a run sends partitions, then up "
              f"to {options.get('jobs', 1)} job(s), each ending after {idle_s:g} s idle, logs in {job_folder}; "
              f"scheduler {cluster.scheduler_address}, dashboard {cluster.dashboard_link}, client TLS credentials "
              f"{credentials}", flush=True)
        yield cluster.scheduler_address, credentials


def cmd_report(args) -> int:
    from dagster import DagsterInstance

    from fly64_assets import launch

    paths = _paths(args)
    ensure_dagster_home()
    with DagsterInstance.get() as instance:
        study_report = launch.rescore(paths, instance)
    print(f"report:   {study_report['html_path']}")
    print(f"headline: {study_report['headline']}")
    return EXIT_OK


def _simulate_whole(root: Path, scale: str, why: str) -> None:
    """Simulate into a folder beside ``root``, then put it in place: Ctrl-C leaves the earlier tree or none, never
    part of one (which the next ``fly64 study`` would take for a whole one)."""
    staging, earlier = root.with_name(f".{root.name}.partial"), root.with_name(f".{root.name}.earlier")
    try:
        print(f"simulating the synthetic {scale} study into {root} ({why})")
        shutil.rmtree(staging, ignore_errors=True)
        summary = simulate_study(staging, scale=scale, seed=SIMULATION_SEED)
    except KeyboardInterrupt:
        shutil.rmtree(staging, ignore_errors=True)
        raise Stopped("while simulating the synthetic study", "nothing was run; the next fly64 study simulates it "
                      "again") from None
    shutil.rmtree(earlier, ignore_errors=True)
    if root.exists():
        root.rename(earlier)
    staging.rename(root)
    shutil.rmtree(earlier, ignore_errors=True)
    _print_simulated(summary)


def cmd_study(args) -> int:
    """The README's study command: the whole default study on the synthetic tree."""
    started = time.perf_counter()
    root = synthetic_root()
    present = (root / "phase_c").is_dir()
    existing = simulated_scale(root) if present else None
    if not present or existing not in (None, args.scale):
        why = f"the tree there is the {existing} scale" if present else "none there yet"
        _simulate_whole(root, args.scale, why)
    defaults = StudyPaths.from_env()
    run_args = argparse.Namespace(
        phase_c_root=defaults.phase_c_root, phase_d_root=defaults.phase_d_root, artifact_root=defaults.artifact_root,
        dose=[], view=[], split=[], allow_missing_phase_d=True,
        **{name: getattr(args, name) for name in (*ReconstructionOptions.model_fields, "workers", "max_concurrent_runs")},
    )
    code = cmd_run(run_args)
    print(f"study finished in {time.perf_counter() - started:.0f} s; results under {defaults.artifact_root}")
    return code


def cmd_repeat(args) -> int:
    """Repeat one partition from its record: exit 0 when the repeat matches the original (bit for bit on a CPU),
    1 when it differs or fails, 2 when the record cannot be repeated (e.g. its input changed since)."""
    from datetime import datetime, timezone

    from fly64_assets import launch
    from fly64_assets.core.repeat import RecordRefused, plan_repeat

    try:
        plan = plan_repeat(args.record)
    except RecordRefused as error:
        raise UsageError(str(error)) from error
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    artifact_root = (args.artifact_root or plan.default_artifact_root(stamp)).resolve()
    compute = _environment_compute(args.workers)
    print(f"repeating {plan.dataset.partition_key} from {plan.record_path}: its input unchanged (SHA-256), "
          f"{plan.options.epochs} epochs, regularization {plan.options.regularization.value}, seed "
          f"{plan.options.random_seed}, CPU threads {plan.cpu_threads}; into {artifact_root}")
    progress = progress_for(sys.stdout)
    try:
        outcome, comparison = launch.repeat(plan, artifact_root, progress, compute)
    finally:
        progress.close()
    if comparison is None:
        print(f"fly64 repeat: the repeat failed: {outcome.error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"repeat: {comparison.summary()}")
    return EXIT_OK if comparison.within else EXIT_FAILED


COMMANDS = {
    "simulate": cmd_simulate,
    "check": cmd_check,
    "plan": cmd_plan,
    "run": cmd_run,
    "report": cmd_report,
    "study": cmd_study,
    "repeat": cmd_repeat,
    "ui": cmd_ui,
}


def _quiet_library_warnings() -> None:
    """Dagster's beta/preview notices and a torch notice raised inside pty-chi say nothing to a user."""
    from dagster import BetaWarning, PreviewWarning

    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")


RUNS_DAGSTER = {"run", "report", "study", "repeat"}
"""The commands that execute Dagster runs in this process: Ctrl-C stops them in order (lib/interrupts.py)."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_library_warnings()
    gc.freeze()  # what is loaded so far lives until the process ends: out of the collector's way (core.imports)
    try:
        with ctrl_c_stops_the_command() if args.command in RUNS_DAGSTER else contextlib.nullcontext():
            return COMMANDS[args.command](args)
    except UsageError as error:
        print(f"fly64 {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Stopped as stopped:
        print(f"fly64 {args.command}: stopped by Ctrl-C {stopped.where}: {stopped.whole}; run it again to finish",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"fly64 {args.command}: stopped by Ctrl-C: every file written so far is whole", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        gc.freeze()  # the same for what the command made: Python's collections at exit skip it


if __name__ == "__main__":
    sys.exit(main())
