"""MLflow, and the only module that imports it. Used through :class:`MlflowTracker` by the recording callbacks.

Only ``MlflowClient`` is used, never MLflow's fluent API: no global "active run" exists that could leak from one job
into the next in a reused worker. The sweep's parent process creates the store, the experiment and the sweep run
before any job starts (a fresh sqlite store created by several processes at once breaks in MLflow's migration) and
leaves their ids in ``<sweep dir>/tracking.json`` for the jobs.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import os
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from explaunch.redaction import redact

TRACKING_FILE = "tracking.json"
RUN_ID_FILE = "mlflow_run_id"  # in a job folder: its run (for a requeued attempt to go on with, for readers)
DEFAULT_EXPERIMENT = "explaunch"
_MAX_PARAMS, _MAX_METRICS, _MAX_TAGS = 100, 1000, 100  # MLflow's log_batch limits per request
_MAX_PARAM_CHARS = 6000
LOG_FILES = ("*.log", "stdout.txt", "stderr.txt")

# A tracking server that is down must not hold a job for minutes of retries (MLflow defaults: 7 retries, 120 s).
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


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
            raise StoreUnavailable(f"the server answered HTTP {ex.code} {ex.reason}") from ex
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
        raise StoreUnavailable(f"the server refused a write: HTTP {ex.code} {ex.reason}") from ex


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


def artifact_root(uri: str) -> str | None:
    """Artifacts of a sqlite store live beside it in ``mlartifacts/``; a server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


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


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"name": "llama"}}`` -> ``{"model.name": "llama"}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def params_from_config(config: Mapping[str, Any]) -> dict[str, str]:
    """MLflow params: the flattened resolved config, secrets redacted by key name, values cut to MLflow's limit."""
    params = {}
    for key, value in flatten(config).items():
        text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        params[key] = str(redact(key, text))[:_MAX_PARAM_CHARS]
    return params


@functools.lru_cache(maxsize=8)
def _client(tracking_uri: str, pid: int) -> Any:
    """One client per store and process: building one opens the store (for sqlite: an engine and a schema check,
    ~0.1 s), which a worker running many jobs should pay once. ``pid`` keeps a forked child from sharing it."""
    from mlflow import MlflowClient

    with _opening(tracking_uri):
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)  # registry in the same store


@contextlib.contextmanager
def _opening(tracking_uri: str) -> Iterator[None]:
    """Opening a sqlite store waits for any other process opening it: MLflow creates a missing store's tables (and
    migrates an old one) when it opens it, and two processes doing that at once break it (``duplicate column name``,
    ``table ... already exists``): two sweeps started together on a fresh ``mlflow.db``. The lock is the kernel's
    (flock) on the store's folder (or the nearest one that exists): nothing is left behind, and it goes with the
    process however it ends. Where the filesystem cannot lock a folder, the store opens unlocked, as before."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    folder = Path(tracking_uri.removeprefix("sqlite:///")).parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    fd = None
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


class MlflowTracker:
    def __init__(self, tracking_uri: str) -> None:
        for key, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self.tracking_uri = tracking_uri
        self.client = _client(tracking_uri, os.getpid())

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created (with the store itself on first use) when missing."""
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        try:
            return str(self.client.create_experiment(name, artifact_location=artifact_root(self.tracking_uri)))
        except MlflowException:  # created meanwhile by another process
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)

    def start_run(
        self,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        start_time_ms: int | None = None,
    ) -> str:
        all_tags = {k: str(redact(k, v)) for k, v in tags.items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(experiment_id, start_time=start_time_ms, run_name=run_name, tags=all_tags)
        return str(run.info.run_id)

    def running(self, run_id: str) -> bool:
        """Whether ``run_id`` exists here and is still RUNNING (an attempt that was stopped and requeued)."""
        try:
            return str(self.client.get_run(run_id).info.status) == "RUNNING"
        except Exception:  # deleted, another store: start a new run
            return False

    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
    ) -> None:
        """Everything in as few ``log_batch`` calls as MLflow's per-request limits allow."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        param_list = [Param(k, v) for k, v in (params or {}).items()]
        metric_list = [
            Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if isinstance(v, (int, float))
        ]
        metric_list = [m for m in metric_list if not math.isinf(m.value)]
        tag_list = [RunTag(k, str(redact(k, v))) for k, v in (tags or {}).items()]
        batches = max(
            math.ceil(len(param_list) / _MAX_PARAMS),
            math.ceil(len(metric_list) / _MAX_METRICS),
            math.ceil(len(tag_list) / _MAX_TAGS),
        )
        for i in range(batches):
            self.client.log_batch(
                run_id,
                metrics=metric_list[i * _MAX_METRICS : (i + 1) * _MAX_METRICS],
                params=param_list[i * _MAX_PARAMS : (i + 1) * _MAX_PARAMS],
                tags=tag_list[i * _MAX_TAGS : (i + 1) * _MAX_TAGS],
            )

    def log_series(self, run_id: str, series: Mapping[str, list[list[float]]]) -> None:
        """Metric histories ``{name: [[step, value], ...]}`` (per-epoch curves), in as few requests as allowed."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [Metric(name, float(v), now, int(step)) for name, pts in series.items() for step, v in pts]
        for i in range(0, len(points), _MAX_METRICS):
            self.client.log_batch(run_id, metrics=points[i : i + _MAX_METRICS])

    def register_model(self, run_id: str, name: str, artifact_path: str) -> str:
        """A new version of registered model ``name`` made of the run's artifact, linked to the run."""
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # it exists already: add a version
            self.client.create_registered_model(name)
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"
        return str(self.client.create_model_version(name, source=source, run_id=run_id).version)

    def log_artifacts(self, run_id: str, paths: Iterable[Path], base: Path) -> None:
        """Files and folders, kept at their place relative to ``base`` (the job folder)."""
        for path in paths:
            if not path.exists():
                continue
            parent = path.relative_to(base).parent
            artifact_path = None if str(parent) == "." else str(parent)
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=str(path.relative_to(base)))
            else:
                self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)

    def finish(self, run_id: str, failed: bool, end_time_ms: int | None = None) -> None:
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED", end_time=end_time_ms)

    def log_job(self, run_id: str, record: Any, job_dir: Path, *, artifacts: bool) -> dict[str, Any] | None:
        """A finished job's record as its run (params, metrics, per-step series, tags, artifacts, a registered
        model), then the run closed. Returns the registered model (name, version) when the job asked for one."""
        from explaunch.sweepdir import records

        tags = {
            "status": record.status.upper(),  # COMPLETED, FAILED, TIMEOUT, INTERRUPTED, CANCELLED
            "git_commit": record.snapshot.get("git", {}).get("commit") or "",
            "config_hash": record.config_hash or "",
            "env_hash": record.env_hash or "",
            "mlflow.source.git.commit": record.snapshot.get("git", {}).get("commit") or "",
        }
        if record.error is not None:
            tags["error_type"] = record.error.type
            tags["error"] = record.error.message[:5000]
        if record.callback_errors:
            tags["callback_errors"] = "; ".join(record.callback_errors)[:5000]
        series = record.info.get("series") or {}  # per-step curves (epochs): logged with their steps, not at 0
        plain = {k: v for k, v in record.metrics.items() if k not in series}
        self.log(run_id, params=params_from_config(record.config), metrics=plain, tags=tags)
        if series:
            self.log_series(run_id, series)
        registered = None
        if artifacts:
            files = [job_dir / n for n in (records.JOB_FILE, records.TRACEBACK_FILE, "resources.csv")]
            files += [job_dir / "emissions.csv", job_dir / "git.patch", job_dir / ".hydra"]
            files += [job_dir / "artifacts"]  # what an experiment collected (a script's outputs)
            # files the experiment wrote and named in its record (generated outputs, per-call figures)
            files += [job_dir / str(record.info[k]) for k in ("outputs_file", "iterations_file") if record.info.get(k)]
            files += [p for pattern in LOG_FILES for p in sorted(job_dir.glob(pattern))]
            self.log_artifacts(run_id, files, job_dir)
            wanted = record.info.get("register_model")
            if wanted:
                version = self.register_model(run_id, wanted["name"], wanted["artifact_path"])
                registered = {"name": wanted["name"], "version": version}
        self.finish(run_id, failed=record.status != records.COMPLETED, end_time_ms=epoch_ms(record.end_time))
        return registered


def epoch_ms(iso_time: str) -> int | None:
    """A record's ISO time as MLflow's milliseconds since the epoch."""
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(iso_time).timestamp() * 1000)
    except ValueError:
        return None


def run_name(overrides: Iterable[str]) -> str:
    return ",".join(overrides) or "default"


def job_run_tags(job_dir: Path, host: str, sweep_dir: Path | None, job_num: int | None) -> dict[str, str]:
    """The tags a job's run starts with (whoever logs it)."""
    tags = {"job_dir": str(job_dir), "status": "RUNNING", "host": host}
    if sweep_dir is not None:
        tags["sweep_dir"] = str(sweep_dir)
        tags["job_num"] = str(job_num)
    return tags


def start_sweep(
    tracking_uri: str,
    experiment: str,
    sweep_dir: Path,
    tags: Mapping[str, str],
    logged_by: str = "job",
    start_time_ms: int | None = None,
) -> SweepTracking:
    """In the parent, before any job: store, experiment and the sweep's parent run (the same run again when a
    stopped sweep is resumed into its folder)."""
    tracker = MlflowTracker(tracking_uri)
    previous = SweepTracking.read(sweep_dir)
    if previous is not None and previous.tracking_uri == tracking_uri and previous.parent_run_id:
        tracker.client.update_run(previous.parent_run_id, status="RUNNING")
        sweep = replace(previous, logged_by=logged_by)
    else:
        experiment_id = tracker.experiment_id(experiment)
        name = f"sweep {sweep_dir.parent.name}/{sweep_dir.name}"
        run_id = tracker.start_run(experiment_id, name, tags, start_time_ms=start_time_ms)
        sweep = SweepTracking(tracking_uri, experiment_id, run_id, logged_by)
    sweep.write(sweep_dir)
    return sweep


def finish_sweep(sweep_dir: Path, sweep: Any) -> None:
    """In the parent, after the jobs: counts as metrics, the sweep summary as artifacts, the run closed."""
    tracking = SweepTracking.read(sweep_dir)
    if tracking is None or not tracking.parent_run_id:
        return
    log_sweep_end(MlflowTracker(tracking.tracking_uri), tracking.parent_run_id, sweep_dir, sweep)


def log_sweep_end(tracker: MlflowTracker, run_id: str, sweep_dir: Path, sweep: Any) -> None:
    """The sweep's counts as metrics, its summary files as artifacts, its run closed."""
    counts = sweep.counts
    metrics = {f"jobs_{status}": float(n) for status, n in counts.items()}
    metrics["jobs_total"] = float(len(sweep.jobs))
    tracker.log(run_id, metrics=metrics)
    files = [sweep_dir / name for name in ("sweep.json", "sweep.csv", "multirun.yaml")]
    tracker.log_artifacts(run_id, files, sweep_dir)
    tracker.finish(run_id, failed=counts.get("completed", 0) != len(sweep.jobs))
