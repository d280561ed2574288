"""MLflow store and sweep-folder hygiene for ``explaunch clean``: find what can go, back it up, remove it.

What goes:

- **orphaned experiments** of a file store (``mlruns/``): a folder without a readable ``meta.yaml`` naming its own
  id, which MLflow skips with a "Malformed experiment" warning on every listing;
- **deleted experiments** and **deleted runs** (MLflow's ``deleted`` lifecycle stage: still on disk until
  garbage-collected);
- with ``days_old``, **old runs**: runs that started more than that many days ago;
- **sweep folders** under ``multirun/`` with no completed job, unless written to in the last
  :data:`ACTIVE_WINDOW_S` seconds (such a sweep may still be running).

Store entries are removed the way ``mlflow gc`` removes them (it is run with exactly the runs and
experiments listed; old runs are first marked deleted), so that the store's own bookkeeping and the runs' artifacts
go too; an orphaned folder, which MLflow cannot read, is removed as a folder. A backup copies, before anything is
removed, each folder that goes and, for a sqlite store, the database file (with SQLite's backup API) and the
artifact folders of the runs that go.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from explaunch.errors import ExplaunchError, RecordError
from explaunch.sweepdir import reader, records

ACTIVE_WINDOW_S = 600.0
TRASH = ".trash"
RESERVED_FOLDERS = frozenset({TRASH, "tags", "datasets", "traces", "models"})

ORPHAN, DELETED_EXPERIMENT, DELETED_RUN, OLD_RUN, EMPTY_SWEEP = (
    "orphaned experiment",
    "deleted experiment",
    "deleted run",
    "old run",
    "sweep without a completed job",
)


@dataclass(frozen=True)
class Candidate:
    kind: str
    where: str  # the store URI or the multirun folder
    target: str  # a folder, an experiment id or a run id
    name: str
    reason: str
    path: str | None = None  # the folder on disk that goes with it (backed up first)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExperimentCount:
    store: str
    experiment_id: str
    name: str
    stage: str
    runs: int
    deleted_runs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    candidates: list[Candidate] = field(default_factory=list)
    experiments: list[ExperimentCount] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # what looked removable but stays, and why

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": [c.to_dict() for c in self.candidates],
            "experiments": [e.to_dict() for e in self.experiments],
            "kept": self.kept,
        }


# ---- stores -------------------------------------------------------------------------------------------------------


def file_store_root(uri: str) -> Path | None:
    """The folder of a file store URI (``./mlruns``, ``file:///...``); None for a database or a server."""
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    if "://" not in uri:
        return Path(uri)
    return None


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def default_stores(cwd: Path) -> list[str]:
    """The stores explaunch writes by default and that exist here: ``MLFLOW_TRACKING_URI`` or ``./mlflow.db``, and
    ``./mlruns``."""
    from explaunch.tracking.store import resolve_uri

    found = []
    uri = resolve_uri(None, cwd)
    path = sqlite_path(uri)
    if path is None or path.is_file():
        found.append(uri)
    if (cwd / "mlruns").is_dir() and str((cwd / "mlruns").resolve()) not in found:
        found.append(str((cwd / "mlruns").resolve()))
    return found


def check_store(uri: str) -> None:
    if (
        file_store_root(uri) is None
        and sqlite_path(uri) is None
        and not uri.startswith(("sqlite:", "postgresql", "mysql"))
    ):
        raise ExplaunchError(
            f"--tracking-uri {uri}: clean works on the store itself (sqlite:///..., a database URI or a file store "
            "folder), not through a server; run it where the server's backend store is"
        )
    root, db = file_store_root(uri), sqlite_path(uri)
    if root is not None and not root.is_dir():
        raise ExplaunchError(f"--tracking-uri {uri}: no such folder")
    if db is not None and not db.is_file():
        raise ExplaunchError(f"--tracking-uri {uri}: no such sqlite file")


def meta_problem(folder: Path) -> str | None:
    """Why MLflow cannot read this experiment folder, or None when it can."""
    import yaml

    meta = folder / "meta.yaml"
    if not meta.is_file():
        return "no meta.yaml"
    try:
        data = yaml.safe_load(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as ex:
        return f"unreadable meta.yaml ({type(ex).__name__})"
    if not isinstance(data, dict) or not data:
        return "empty meta.yaml"
    if str(data.get("experiment_id")) != folder.name:
        return f"meta.yaml names experiment {data.get('experiment_id')!r}, not {folder.name!r}"
    if not data.get("name"):
        return "meta.yaml has no name"
    return None


def orphans(uri: str, root: Path) -> list[Candidate]:
    found = []
    for parent in (root, root / TRASH):
        if not parent.is_dir():
            continue
        for folder in sorted(p for p in parent.iterdir() if p.is_dir() and p.name not in RESERVED_FOLDERS):
            problem = meta_problem(folder)
            if problem is not None:
                found.append(Candidate(ORPHAN, uri, str(folder), folder.name, problem, str(folder)))
    return found


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """MLflow's file store logs each malformed experiment (with a traceback) through the root logger."""
    root = logging.getLogger()
    added = logging.NullHandler() if not root.handlers else None
    if added is not None:
        root.addHandler(added)  # else logging.warning() would install a stderr handler for good
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        if added is not None:
            root.removeHandler(added)


def _all_runs(client: Any, experiment_ids: list[str], view: Any) -> list[Any]:
    runs: list[Any] = []
    token = None
    while experiment_ids:
        page = client.search_runs(experiment_ids, "", run_view_type=view, max_results=10_000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


def _local_path(uri: str | None) -> str | None:
    path = file_store_root(uri) if uri and uri.startswith("file:") else None
    return str(path) if path is not None and path.exists() else None


def scan_store(uri: str, days_old: float | None, now: float, plan: Plan) -> None:
    """Add the store's removable entries and its experiment counts to ``plan``."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    check_store(uri)
    root = file_store_root(uri)
    if root is not None:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses a file store otherwise
        plan.candidates.extend(orphans(uri, root))
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with quiet_mlflow():
        experiments = list(client.search_experiments(view_type=ViewType.ALL, max_results=50_000))
        ids = [e.experiment_id for e in experiments]
        active = _all_runs(client, ids, ViewType.ACTIVE_ONLY)
        deleted = _all_runs(client, ids, ViewType.DELETED_ONLY)
    for experiment in sorted(experiments, key=lambda e: (e.lifecycle_stage, e.name)):
        mine = [r for r in active if r.info.experiment_id == experiment.experiment_id]
        gone = [r for r in deleted if r.info.experiment_id == experiment.experiment_id]
        plan.experiments.append(
            ExperimentCount(
                uri, experiment.experiment_id, experiment.name, experiment.lifecycle_stage, len(mine), len(gone)
            )
        )
        if experiment.lifecycle_stage == "deleted":
            path = str(root / TRASH / experiment.experiment_id) if root is not None else None
            plan.candidates.append(
                Candidate(DELETED_EXPERIMENT, uri, experiment.experiment_id, experiment.name, "deleted", path)
            )
    names = {e.experiment_id: e.name for e in experiments}

    def run_candidate(kind: str, run: Any, reason: str) -> Candidate:
        """With a file store's run folder (meta and artifacts), or a database store's run artifacts."""
        folders = [p / run.info.experiment_id / run.info.run_id for p in (root, root / TRASH)] if root else []
        path = next((str(f) for f in folders if f.is_dir()), None) or _local_path(run.info.artifact_uri)
        name = f"{names.get(run.info.experiment_id, '?')}/{run.info.run_name}"
        return Candidate(kind, uri, run.info.run_id, name, reason, path)

    plan.candidates.extend(run_candidate(DELETED_RUN, run, "deleted") for run in deleted)
    if days_old is not None:
        cutoff_ms = (now - days_old * 86400) * 1000
        for run in active:
            if run.info.start_time is not None and run.info.start_time < cutoff_ms:
                age = (now * 1000 - run.info.start_time) / 86_400_000
                plan.candidates.append(run_candidate(OLD_RUN, run, f"started {age:.1f} days ago"))


# ---- sweeps -------------------------------------------------------------------------------------------------------


def has_completed_job(sweep_dir: Path) -> bool:
    for path in sweep_dir.rglob(records.JOB_FILE):
        try:
            if records.read_job_record(path).status == records.COMPLETED:
                return True
        except RecordError:
            continue
    return False


def newest_mtime(folder: Path) -> float:
    return max((p.stat().st_mtime for p in folder.rglob("*")), default=folder.stat().st_mtime)


def scan_sweeps(root: Path, now: float, plan: Plan) -> None:
    if not root.is_dir():
        raise ExplaunchError(f"--multirun {root}: no such folder")
    for sweep in reader.sweep_folders(root, max_depth=None):
        if has_completed_job(sweep):
            continue
        idle = now - newest_mtime(sweep)
        if idle < ACTIVE_WINDOW_S:
            plan.kept.append(f"{sweep}: no completed job, but written to {idle:.0f} s ago (may still be running)")
            continue
        jobs = sum(1 for _ in sweep.rglob(records.JOB_FILE))
        reason = f"{jobs} job records, none completed" if jobs else "no job records"
        plan.candidates.append(Candidate(EMPTY_SWEEP, str(root), str(sweep), sweep.name, reason, str(sweep)))


def find(
    stores: Sequence[str], multirun_dirs: Sequence[Path], days_old: float | None, now: float | None = None
) -> Plan:
    plan = Plan()
    moment = time.time() if now is None else now
    for uri in stores:
        scan_store(uri, days_old, moment, plan)
    for root in multirun_dirs:
        scan_sweeps(root, moment, plan)
    return plan


# ---- backup and removal -------------------------------------------------------------------------------------------


def backup(plan: Plan, dest: Path) -> list[Path]:
    """Copy everything that would go into ``dest`` (a new or empty folder). Returns what was written."""
    if dest.exists() and any(dest.iterdir()):
        raise ExplaunchError(f"--backup {dest}: not empty; give a new or empty folder")
    written: list[Path] = []
    databases = {sqlite_path(c.where) for c in plan.candidates if c.kind != EMPTY_SWEEP} - {None}
    for db in sorted(p for p in databases if p is not None):
        copy = dest / "stores" / db.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        import sqlite3

        with contextlib.closing(sqlite3.connect(db)) as source, contextlib.closing(sqlite3.connect(copy)) as target:
            source.backup(target)
        written.append(copy)
    for candidate in plan.candidates:
        if candidate.path is None or not Path(candidate.path).exists():
            continue
        source_path = Path(candidate.path)
        if candidate.kind == EMPTY_SWEEP:
            copy = dest / "multirun" / source_path.relative_to(Path(candidate.where))
        elif candidate.kind in (ORPHAN, DELETED_EXPERIMENT):
            copy = dest / "stores" / _store_label(candidate.where) / source_path.name
        else:
            copy = dest / "stores" / _store_label(candidate.where) / "run-artifacts" / candidate.target
        if copy.exists():
            continue  # a run's artifacts inside a deleted experiment's folder, copied with it
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source_path.is_dir():
            shutil.copytree(source_path, copy, symlinks=True)
        else:
            shutil.copy2(source_path, copy)
        written.append(copy)
    return written


def _store_label(uri: str) -> str:
    root, db = file_store_root(uri), sqlite_path(uri)
    if root is not None:
        return root.name
    return f"{db.stem}-artifacts" if db is not None else "store"


def remove(plan: Plan) -> list[str]:
    """Remove every candidate. Returns one line per removed thing."""
    done: list[str] = []
    by_store: dict[str, list[Candidate]] = {}
    for candidate in plan.candidates:
        if candidate.kind in (EMPTY_SWEEP, ORPHAN):  # folders MLflow cannot read, or no store at all
            shutil.rmtree(candidate.target)
            done.append(f"removed {candidate.kind} {candidate.target}")
        else:
            by_store.setdefault(candidate.where, []).append(candidate)
    for uri, candidates in by_store.items():
        done.extend(_gc(uri, candidates))
    return done


def _gc(uri: str, candidates: list[Candidate]) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with quiet_mlflow():
        for candidate in candidates:
            if candidate.kind == OLD_RUN:
                client.delete_run(candidate.target)  # gc removes only runs in the deleted stage
    runs = [c.target for c in candidates if c.kind in (DELETED_RUN, OLD_RUN)]
    experiments = [c.target for c in candidates if c.kind == DELETED_EXPERIMENT]
    # gc deletes each run's artifacts where its artifact URI says; artifacts a server proxies (mlflow-artifacts:/...,
    # `mlflow server --serve-artifacts`) are reached through that server: MLFLOW_TRACKING_URI when it names one
    served = os.environ.get("MLFLOW_TRACKING_URI", "")
    args = ["--backend-store-uri", uri, "--tracking-uri", served if served.startswith(("http://", "https://")) else uri]
    if runs:
        args += ["--run-ids", ",".join(runs)]
    if experiments:
        args += ["--experiment-ids", ",".join(experiments)]
    # In a process of its own: `mlflow gc` sets the process's global tracking URI (and MLFLOW_TRACKING_URI).
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "gc", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        check=False,
    )
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()] or [f"exit code {proc.returncode}"]
        raise ExplaunchError(f"mlflow gc on {uri} failed: {lines[-1]}")
    return [f"removed {c.kind} {c.target} ({c.name})" for c in candidates]
