"""The job folders and the MLflow store kept in agreement: checked before a sweep, reconciled on every (re)start and
on demand (``explaunch sync``).

Why: the folder is the truth and the store a view of it, but the view can fall behind — a sweep killed hard before
its relay logged the last runs, a store that was down or unwritable, runs deleted by hand. A run missing for a
job's record is logged from the record, by the same code the relay uses (:func:`explaunch.tracking.relay.log_job`);
a run left ``RUNNING`` by a job that has since ended is closed with what its record says. Runs are found by their
``job_dir`` tag and, for the record's own run, by its id or its start time (a run logged from a record starts at the
record's start time), so a second sync finds everything and adds nothing, into the same store or into another.

Cost: the check before a sweep imports no MLflow for sqlite and http stores (see :func:`tracking.check_store`);
reconciling imports it (about 1 s) and queries the store (about 2 s for 64 jobs), and runs only when the sweep folder
already holds records (a resume or a rerun). A sweep that ends with every run logged in a sqlite store writes an
agreement stamp (:data:`STAMP_FILE`: the store file's and every job record's size, modification time and inode);
a rerun that finds the store file and the records as stamped knows nothing can have changed on either side and skips
reconciling. Any write to the store — a run deleted by hand, another sweep logging into it — changes the file and
the next start reconciles in full. Server stores are always reconciled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explaunch.errors import EXIT_USAGE, RecordError
from explaunch.sweepdir import records
from explaunch.tracking.store import SweepTracking

log = logging.getLogger(__name__)
STAMP_FILE = ".store_agreement.json"  # in a sweep folder: the store and the records as they were when they agreed


@dataclass
class SyncResult:
    logged: list[Path] = field(default_factory=list)  # records that got a new run
    ended: list[Path] = field(default_factory=list)  # runs left RUNNING, closed with their record
    killed: list[str] = field(default_factory=list)  # runs left RUNNING by a job that left no record
    present: int = 0  # records whose run was already there
    failed: list[str] = field(default_factory=list)  # "job dir: why"
    sweep_run: str = ""


def job_records(sweep_dir: Path) -> list[tuple[Path, records.JobRecord]]:
    """Every readable ``job.json`` of the sweep (earlier attempts, under ``attempts/``, are not job records)."""
    found = []
    for path in sorted(sweep_dir.rglob(records.JOB_FILE)):
        try:
            found.append((path.parent, records.read_job_record(path)))
        except RecordError:
            continue
    return found


def unlogged(record: records.JobRecord) -> bool:
    """A record of a tracked job whose run is missing or incomplete."""
    if any(e.startswith("mlflow") for e in record.callback_errors):
        return True
    return record.tracking.get("backend") == "mlflow" and not record.tracking.get("run_id")


def _sweep_dir_tags(sweep_dir: Path) -> list[str]:
    """How runs may name the sweep: as configured (often relative to where it ran) or absolute."""
    absolute = sweep_dir.resolve()
    names = {str(sweep_dir), str(absolute)}
    with contextlib.suppress(ValueError):
        names.add(str(absolute.relative_to(Path.cwd())))
    return sorted(names)


def _runs_of_sweep(tracker: Any, experiment_id: str, sweep_dir: Path) -> list[Any]:
    from explaunch.tracking.reader import _all_runs

    runs: dict[str, Any] = {}
    for name in _sweep_dir_tags(sweep_dir):
        quoted = name.replace("\\", "\\\\").replace("'", "\\'")
        for run in _all_runs(tracker.client, [experiment_id], f"tags.sweep_dir = '{quoted}'", []):
            runs[run.info.run_id] = run
    return sorted(runs.values(), key=lambda r: r.info.start_time or 0)


def _sweep_run(tracker: Any, uri: str, experiment_id: str, sweep_dir: Path, runs: list[Any]) -> tuple[str, bool]:
    """The sweep's own run in this store, created when missing; True when it was created here."""
    tracking = SweepTracking.read(sweep_dir)
    ids = {r.info.run_id for r in runs}
    if tracking is not None and tracking.tracking_uri == uri and tracking.parent_run_id in ids:
        return tracking.parent_run_id, False
    own = [r for r in runs if "job_dir" not in r.data.tags]
    if own:
        return str(own[-1].info.run_id), False
    name = f"sweep {sweep_dir.parent.name}/{sweep_dir.name}"
    tags = {"sweep_dir": str(sweep_dir.resolve()), "command": "explaunch sync"}
    return tracker.start_run(experiment_id, name, tags), True


def _match(runs: list[Any], record: records.JobRecord) -> Any:
    from explaunch.tracking.writer import epoch_ms

    run_id = record.tracking.get("run_id")
    start = epoch_ms(record.start_time)
    for run in reversed(runs):
        if run.info.run_id == run_id or run.info.start_time == start:
            return run
    running = [r for r in runs if r.info.status == "RUNNING"]
    return running[-1] if running else None


def _prepare_record(job_dir: Path, record: records.JobRecord, uri: str) -> None:
    """The record names the store its run is about to be logged in; the lines saying it was not are dropped."""
    from explaunch.redaction import redact

    tracking = {k: v for k, v in record.tracking.items() if k not in ("run_id", "pending", "registered_model")}
    tracking.update(backend="mlflow", uri=redact("uri", uri))
    records.write_job_record(job_dir, dataclasses.replace(record, tracking=tracking, callback_errors=_kept(record)))


def _kept(record: records.JobRecord) -> list[str]:
    """The record's callback errors less those about its run, once the run is there."""
    return [e for e in record.callback_errors if not e.startswith("mlflow")]


def sync_sweep(sweep_dir: Path, uri: str, experiment: str, *, close_sweep_run: bool = True) -> SyncResult:
    """Make the store hold one run per job record of ``sweep_dir`` (see the module's docstring)."""
    from explaunch.tracking.relay import log_job
    from explaunch.tracking.sweeprun import log_sweep_end
    from explaunch.tracking.writer import MlflowTracker

    tracker = MlflowTracker(uri)
    experiment_id = tracker.experiment_id(experiment)
    runs = _runs_of_sweep(tracker, experiment_id, sweep_dir)  # as the sweep named itself (often relative)
    sweep_dir = sweep_dir.resolve()  # what this sync logs names the folders from anywhere
    by_job: dict[Path, list[Any]] = {}
    for run in runs:
        if "job_dir" in run.data.tags:
            by_job.setdefault(Path(run.data.tags["job_dir"]).resolve(), []).append(run)
    result = SyncResult()
    parent, created = _sweep_run(tracker, uri, experiment_id, sweep_dir, runs)
    result.sweep_run = parent
    target = SweepTracking(uri, experiment_id, parent, "sweep")
    found = job_records(sweep_dir)
    for job_dir, record in found:
        match = _match(by_job.get(job_dir.resolve(), []), record)
        try:
            if match is None:
                _prepare_record(job_dir, record, uri)
                log_job(tracker, target, sweep_dir, job_dir)
                result.logged.append(job_dir)
            elif match.info.status == "RUNNING":
                _end_run(tracker, match.info.run_id, job_dir, record)
                result.ended.append(job_dir)
            else:
                result.present += 1
        except Exception as ex:  # one job's run; the others go on
            from explaunch.tracking.store import one_line

            result.failed.append(f"{job_dir}: {one_line(ex)}")
            log.warning("MLflow: job %s not synced: %s", job_dir, one_line(ex))
    recorded = {job_dir.resolve() for job_dir, _ in found}
    for job_dir, job_runs in by_job.items():
        for run in job_runs:
            if job_dir not in recorded and run.info.status == "RUNNING":  # its job died and left no record
                tracker.client.set_terminated(run.info.run_id, status="KILLED")
                result.killed.append(run.info.run_id)
    tracking = SweepTracking.read(sweep_dir)
    if tracking is None or tracking.tracking_uri == uri:  # the sweep's own store: the jobs find the sweep run
        dataclasses.replace(target, logged_by=tracking.logged_by if tracking else "sweep").write(sweep_dir)
    if created or close_sweep_run:
        status = tracker.client.get_run(parent).info.status
        if created or status == "RUNNING":
            try:
                log_sweep_end(tracker, parent, sweep_dir, records.read_sweep_record(sweep_dir))
            except RecordError:  # no sweep.json (killed before its end): closed without counts
                tracker.client.set_terminated(parent, status="KILLED")
    return result


def _end_run(tracker: Any, run_id: str, job_dir: Path, record: records.JobRecord) -> None:
    """A run left RUNNING by a job that has ended since: what its record holds is logged, the run closed."""
    artifacts = bool(record.config.get("tracking", {}).get("log_artifacts", True))
    tracking = {k: v for k, v in record.tracking.items() if k != "pending"}
    record = dataclasses.replace(record, tracking={**tracking, "run_id": run_id}, callback_errors=_kept(record))
    records.write_job_record(job_dir, record)
    records.write_text_atomic(job_dir / "mlflow_run_id", run_id)
    try:
        tracker.log_job(run_id, record, job_dir, artifacts=artifacts)
    except Exception:  # e.g. params half logged with other values: the status at least
        tracker.finish(run_id, failed=record.status != records.COMPLETED, end_time_ms=None)


# ---- around a sweep (explaunch.launch.sweeper) ----------------------------------------------------------------------
def sweep_uri(config: Any) -> str:
    from explaunch.tracking.store import resolve_uri

    uri = config.tracking.uri
    return resolve_uri(None if uri is None else str(uri), Path.cwd())


def check_before_sweep(config: Any) -> bool:
    """Before any job of a sweep and before its folder is made: the store must answer and take writes, and its
    experiment must not be deleted. A store that cannot be written stops the sweep with one line and exit 2, unless
    ``tracking.required=false``: then False, and the jobs run with records saying their runs are pending, for
    ``explaunch sync``. True when the sweep logs into the store (or tracks nothing)."""
    from omegaconf import OmegaConf

    from explaunch.tracking.store import StoreUnavailable, check_store, display_uri, restore_experiment

    if OmegaConf.select(config, "tracking.backend") != "mlflow":
        return True
    uri, experiment = sweep_uri(config), str(config.tracking.experiment)
    try:
        state = check_store(uri, experiment)
    except StoreUnavailable as ex:
        line = f"MLflow store {display_uri(uri)} cannot be written: {ex}"
        if OmegaConf.select(config, "tracking.required", default=True):
            stop(f"{line} (tracking.required=false runs the sweep and leaves the runs to `explaunch sync`)")
        log.warning("%s; the jobs run and their runs are left to `explaunch sync`", line)
        return False
    if state.deleted:
        assert state.experiment_id is not None
        where = f"--backend-store-uri {display_uri(uri)}"
        if not OmegaConf.select(config, "tracking.restore_deleted", default=True):
            stop(
                f"MLflow experiment '{experiment}' (id {state.experiment_id}) is deleted in {display_uri(uri)}: "
                f"restore it (mlflow experiments restore --experiment-id {state.experiment_id}), purge it "
                f"(mlflow gc {where} --experiment-ids {state.experiment_id}), or set tracking.experiment"
            )
        restore_experiment(uri, state.experiment_id)
        print(f"MLflow: experiment '{experiment}' was deleted in {display_uri(uri)}; restored it", file=sys.stderr)
    return True


def reconcile_before_sweep(config: Any, sweep_dir: Path, store_ok: bool) -> None:
    """Holding the sweep folder's lock (no other sweep logs runs of its jobs meanwhile; this process must not take
    that lock a second time), before any job: the runs of jobs already in the folder are reconciled with the store,
    unless the stamp says they still agree; without a store (``store_ok`` False) the jobs are told to leave MLflow
    alone."""
    from omegaconf import OmegaConf

    from explaunch.tracking.store import one_line

    if OmegaConf.select(config, "tracking.backend") != "mlflow":
        return
    uri, experiment = sweep_uri(config), str(config.tracking.experiment)
    if not store_ok:
        _without_store(sweep_dir, uri)
        return
    if not sweep_dir.is_dir() or not job_records(sweep_dir):
        return
    agreed = in_agreement(sweep_dir, uri)
    with contextlib.suppress(OSError):  # this sweep may change either side: its own end stamps them again
        (sweep_dir / STAMP_FILE).unlink(missing_ok=True)
    if agreed:
        log.debug("MLflow: the store and %s are as they were when they last agreed", sweep_dir)
        return
    try:
        result = sync_sweep(sweep_dir, uri, experiment, close_sweep_run=False)
    except Exception as ex:  # the jobs still run; their records say what is missing
        log.warning("MLflow: the sweep folder was not reconciled with the store: %s", one_line(ex))
        return
    if result.logged or result.ended or result.killed:
        log.info(
            "MLflow: %d run(s) logged from their records, %d left running closed, %d of dead jobs ended",
            len(result.logged),
            len(result.ended),
            len(result.killed),
        )


def _fingerprint(sweep_dir: Path, uri: str) -> dict[str, Any] | None:
    """What must stay the same for the store and the folder to still agree: (size, mtime, inode) of the sqlite file
    and its journals, and of every job record; None for stores that are not a local file."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))

    def stat(path: Path) -> list[int] | None:
        try:
            found = path.stat()
        except FileNotFoundError:
            return None
        return [found.st_size, found.st_mtime_ns, found.st_ino]

    files = {str(db): stat(db)}
    files.update({f"{db}{suffix}": stat(Path(f"{db}{suffix}")) for suffix in ("-wal", "-journal")})
    if files[str(db)] is None:
        return None
    jobs = {str(path.relative_to(sweep_dir)): stat(path) for path in sorted(sweep_dir.rglob(records.JOB_FILE))}
    return {"uri": uri, "store": files, "records": jobs}


def in_agreement(sweep_dir: Path, uri: str) -> bool:
    """Whether the stamp left by the sweep's last end still holds (see the module's docstring)."""
    try:
        stamp = json.loads((sweep_dir / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return False
    return stamp is not None and stamp == _fingerprint(sweep_dir, uri)


def stamp_agreement(config: Any, sweep_dir: Path) -> None:
    """At a sweep's end, after its last write to the store: the stamp when every record has its run, else none."""
    from omegaconf import OmegaConf

    stamp_path = sweep_dir / STAMP_FILE
    with contextlib.suppress(OSError):
        stamp_path.unlink(missing_ok=True)
        if OmegaConf.select(config, "tracking.backend") != "mlflow" or not sweep_dir.is_dir():
            return
        found = job_records(sweep_dir)
        if any(unlogged(record) or record.tracking.get("pending") for _, record in found):
            return
        fingerprint = _fingerprint(sweep_dir, sweep_uri(config))
        if fingerprint is not None:
            records.write_text_atomic(stamp_path, json.dumps(fingerprint))


def _without_store(sweep_dir: Path, uri: str) -> None:
    """No relay and no sweep run: jobs see ``logged_by: sweep`` and leave MLflow alone; nobody logs their runs."""
    from explaunch.callbacks import deferred

    deferred.sweep_start = None
    sweep_dir.mkdir(parents=True, exist_ok=True)
    previous = SweepTracking.read(sweep_dir)
    if previous is not None and previous.tracking_uri == uri:
        dataclasses.replace(previous, logged_by="sweep").write(sweep_dir)
    else:
        SweepTracking(uri, "", "", "sweep").write(sweep_dir)


def pending_runs_lines(sweep_dir: Path, config: Any) -> list[str]:
    """At a sweep's end: each record without its run says ``pending``; the lines saying how many, and the command
    that logs them."""
    from omegaconf import OmegaConf

    from explaunch.tracking.store import display_uri

    if OmegaConf.select(config, "tracking.backend") != "mlflow" or not sweep_dir.is_dir():
        return []
    missing = 0
    for job_dir, record in job_records(sweep_dir):
        if unlogged(record):
            missing += 1
            if not record.tracking.get("pending"):
                records.write_job_record(
                    job_dir, dataclasses.replace(record, tracking={**record.tracking, "pending": True})
                )
    if not missing:
        return []
    uri = sweep_uri(config)
    return [
        f"MLflow: {missing} run(s) not logged; to log them: "
        f"explaunch sync {sweep_dir} --tracking-uri {display_uri(uri)}"
    ]


def stop(line: str) -> None:
    print(f"error: {line}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)
