"""The MLflow store: where it is (:func:`resolve_uri`), whether it can be written before any job starts
(:func:`check_store`, without importing MLflow for sqlite and servers), and what the sweep's parent leaves for its jobs
in ``<sweep dir>/tracking.json`` (:class:`SweepTracking`).

The sweep's parent process creates the store, the experiment and the sweep run before any job starts (a fresh sqlite
store created by several processes at once breaks in MLflow's migration; :mod:`explaunch.tracking.sweeprun`) and
leaves their ids in ``tracking.json`` for the jobs. Runs are written by :mod:`explaunch.tracking.writer`, read back by
:mod:`explaunch.tracking.reader`. The ``explaunch.tracking`` package is the only importer of MLflow.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# imported with the store: a worker's warm-up imports this module; flatten is named here by explaunch.review.reproduce
from explaunch.tracking.writer import MlflowTracker
from explaunch.tracking.writer import flatten as flatten

TRACKING_FILE = "tracking.json"
RUN_ID_FILE = "mlflow_run_id"  # in a job folder: its run (for a requeued attempt to go on with, for readers)
DEFAULT_EXPERIMENT = "explaunch"


def resolve_uri(configured: str | None, base_dir: Path) -> str:
    """Config first, then ``MLFLOW_TRACKING_URI``, else ``sqlite:///<base_dir>/mlflow.db`` (absolute, so that every
    worker and SLURM job finds the same file)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(base_dir / 'mlflow.db').resolve()}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{(base_dir / uri.removeprefix('sqlite:///')).resolve()}"
    return uri


STORE_CHECK_TIMEOUT_S = 5.0  # a store that does not answer within this is reported before the first job
CHECK_TAG = "explaunch.store_checked"  # the experiment tag rewritten by the check: a write that leaves no litter


class StoreUnavailable(Exception):
    """The tracking store cannot be read or written; the message is one line naming why (no credentials)."""


@dataclass(frozen=True)
class ExperimentState:
    """What the check found: the experiment's id (None: it does not exist yet) and whether it is soft-deleted."""

    experiment_id: str | None
    deleted: bool


def display_uri(uri: str) -> str:
    """The URI without credentials (``user:password@``) or a query string (tokens ride there too)."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc and not parts.query:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_store(uri: str, experiment: str) -> ExperimentState:
    """Whether the store answers and can be written, and the state of the experiment, before any job starts.

    sqlite and http(s) are checked without importing MLflow (about 2 s): the sqlite file (or its folder) must be
    writable and take a write lock; a server must answer within ``STORE_CHECK_TIMEOUT_S`` and accept an experiment
    tag. Other stores go through MLflow's client. Raises :class:`StoreUnavailable`."""
    try:
        if uri.startswith("sqlite:///"):
            return _check_sqlite(Path(uri.removeprefix("sqlite:///")), experiment)
        if uri.startswith(("http://", "https://")):
            return _check_http(uri, experiment)
        return _check_client(uri, experiment)
    except StoreUnavailable:
        raise
    except Exception as ex:
        raise StoreUnavailable(one_line(ex)) from ex


def one_line(ex: BaseException) -> str:
    text = " ".join(str(getattr(ex, "message", None) or ex).split())
    return f"{type(ex).__name__}: {text}"[:300]


def _check_sqlite(path: Path, experiment: str) -> ExperimentState:
    if not path.exists():  # MLflow creates the file and its missing folders: the nearest existing one must take them
        import tempfile

        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise StoreUnavailable(f"{folder} is not a folder")
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".explaunch-check-"):
                pass
        except OSError as ex:
            raise StoreUnavailable(f"cannot create a file in {folder}: {ex.strerror or ex}") from ex
        return ExperimentState(None, False)
    if not os.access(path.parent, os.W_OK | os.X_OK):  # sqlite writes its journal beside the file
        raise StoreUnavailable(f"folder {path.parent} is not writable")
    try:
        db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=STORE_CHECK_TIMEOUT_S)
    except sqlite3.Error as ex:
        raise StoreUnavailable(f"cannot open {path}: {ex}") from ex
    try:
        db.execute("BEGIN IMMEDIATE")  # the write lock every run's logging needs; nothing is written
        db.execute("ROLLBACK")
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "experiments" not in tables:
            return ExperimentState(None, False)
        query = "SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ?"
        row = db.execute(query, (experiment,)).fetchone()
    except sqlite3.Error as ex:
        raise StoreUnavailable(f"{path}: {ex}") from ex
    finally:
        db.close()
    return ExperimentState(None, False) if row is None else ExperimentState(str(row[0]), row[1] == "deleted")


def _http(uri: str, endpoint: str, body: Mapping[str, Any] | None = None, query: str = "") -> dict[str, Any]:
    parts = urllib.parse.urlsplit(uri)
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path.rstrip("/"), "", ""))
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/{endpoint}{query}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or urllib.parse.unquote(parts.username or "")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or urllib.parse.unquote(parts.password or "")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    elif user:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    with urllib.request.urlopen(request, timeout=STORE_CHECK_TIMEOUT_S) as response:
        answer: dict[str, Any] = json.loads(response.read() or b"{}")
    return answer


def _check_http(uri: str, experiment: str) -> ExperimentState:
    query = "?" + urllib.parse.urlencode({"experiment_name": experiment})
    try:
        found = _http(uri, "experiments/get-by-name", query=query)["experiment"]
    except urllib.error.HTTPError as ex:
        if ex.code != 404:
            raise StoreUnavailable(
                f"the server answered HTTP {ex.code} {ex.reason}{_credentials_hint(ex.code)}"
            ) from ex
        found = None
    except (urllib.error.URLError, OSError) as ex:
        reason = getattr(ex, "reason", ex)
        raise StoreUnavailable(f"no answer from the server: {reason}") from ex
    try:
        if found is None:  # the sweep would create it now anyway
            created = _http(uri, "experiments/create", {"name": experiment})
            return ExperimentState(str(created["experiment_id"]), False)
        state = ExperimentState(str(found["experiment_id"]), found.get("lifecycle_stage") == "deleted")
        if not state.deleted:
            _http(
                uri,
                "experiments/set-experiment-tag",
                {"experiment_id": state.experiment_id, "key": CHECK_TAG, "value": time.strftime("%Y-%m-%dT%H:%M:%S")},
            )
        return state
    except urllib.error.HTTPError as ex:
        raise StoreUnavailable(
            f"the server refused a write: HTTP {ex.code} {ex.reason}{_credentials_hint(ex.code)}"
        ) from ex


def _credentials_hint(code: int) -> str:
    """What an HTTP 401/403 of a server with authentication means, naming the variables (never the password)."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if code == 401 and os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return ": the token in MLFLOW_TRACKING_TOKEN was refused"
    if code == 401 and user:
        return f": wrong credentials for MLFLOW_TRACKING_USERNAME={user} (check MLFLOW_TRACKING_PASSWORD)"
    if code == 401:
        return ": it wants credentials: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (environment or .env)"
    if code == 403 and user:
        return f": user MLFLOW_TRACKING_USERNAME={user} may not write to this experiment (its admin grants that)"
    return ""


def _check_client(uri: str, experiment: str) -> ExperimentState:
    tracker = MlflowTracker(uri)
    found = tracker.client.get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage == "deleted":
        return ExperimentState(str(found.experiment_id), True)
    experiment_id = tracker.experiment_id(experiment)
    tracker.client.set_experiment_tag(experiment_id, CHECK_TAG, time.strftime("%Y-%m-%dT%H:%M:%S"))
    return ExperimentState(experiment_id, False)


def restore_experiment(uri: str, experiment_id: str) -> None:
    MlflowTracker(uri).client.restore_experiment(experiment_id)


@dataclass(frozen=True)
class SweepTracking:
    """What the parent leaves for the jobs of a sweep."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    # "job": every job logs its own run (SLURM, any launcher); "sweep": the sweep's relay process logs the runs of
    # local jobs from their records (explaunch.tracking.relay), and the jobs do not touch MLflow
    logged_by: str = "job"

    def write(self, sweep_dir: Path) -> None:
        from explaunch.sweepdir.records import write_json_atomic

        write_json_atomic(sweep_dir / TRACKING_FILE, asdict(self))

    @classmethod
    def read(cls, sweep_dir: Path) -> SweepTracking | None:
        try:
            return cls(**json.loads((sweep_dir / TRACKING_FILE).read_text()))
        except FileNotFoundError:
            return None
