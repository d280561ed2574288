"""Reading the MLflow store back: experiments, runs, the best run, two runs side by side, artifacts, logged models.

:mod:`explaunch.tracking.store` writes the store; this module only reads it (and downloads from it). MLflow is imported
inside the functions, so that importing this module (the ``explaunch`` command does) costs nothing.

The store is found as the jobs found it: ``tracking_uri`` if given, else ``MLFLOW_TRACKING_URI``, else
``sqlite:///mlflow.db`` in the current folder. A sqlite file that does not exist is an error here (MLflow would
create an empty store and report nothing).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from explaunch.errors import ExplaunchError, UsageError

MODES = ("max", "min")
MAX_LISTED = 25  # names listed in an error message
MODEL_FOLDER = "artifacts/model"  # where explaunch's experiments put a model (yolo_train registers this folder)


@dataclass(frozen=True)
class RunSummary:
    """One MLflow run as the review commands show it."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str  # MLflow's run status: FINISHED, FAILED, RUNNING, KILLED
    start_time: str | None  # ISO 8601, UTC
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifact_uri: str
    tracking_uri: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExperimentSummary:
    experiment_id: str
    name: str
    lifecycle_stage: str
    runs: int
    artifact_location: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def store_uri(tracking_uri: str | None = None, cwd: Path | None = None) -> str:
    """The store to read, resolved as the jobs resolve it; an error when a sqlite store's file is missing."""
    from explaunch.tracking.store import resolve_uri

    uri = resolve_uri(tracking_uri, cwd or Path.cwd())
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ExplaunchError(
                f"no MLflow store at {path} (sweeps create mlflow.db in the folder they ran from); "
                "give --tracking-uri URI or set MLFLOW_TRACKING_URI"
            )
    elif is_file_store(uri):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # asked for by name: MLflow 3 refuses it otherwise
    return uri


def is_file_store(uri: str) -> bool:
    """A folder store (``./mlruns``, ``file:///...``) rather than a database or a server."""
    return uri.startswith("file:") or "://" not in uri


def client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _iso(millis: int | None) -> str | None:
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds") if millis else None


def summary(run: Any, uri: str) -> RunSummary:
    return RunSummary(
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        start_time=_iso(run.info.start_time),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(run.data.tags),
        artifact_uri=run.info.artifact_uri,
        tracking_uri=uri,
    )


def _mlflow_error(ex: Exception) -> ExplaunchError:
    message = getattr(ex, "message", None) or str(ex)
    return ExplaunchError(" ".join(str(message).split()))


def list_experiments(uri: str) -> list[ExperimentSummary]:
    """Every active experiment with its number of (active) runs."""
    from mlflow.entities import ViewType

    mlflow_client = client(uri)
    found = []
    for experiment in mlflow_client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=50_000):
        runs = _all_runs(mlflow_client, [experiment.experiment_id], "", [])
        found.append(
            ExperimentSummary(
                experiment.experiment_id,
                experiment.name,
                experiment.lifecycle_stage,
                len(runs),
                experiment.artifact_location,
            )
        )
    return sorted(found, key=lambda e: e.name)


def _all_runs(mlflow_client: Any, experiment_ids: list[str], filter_string: str, order_by: list[str]) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = mlflow_client.search_runs(
            experiment_ids, filter_string, max_results=10_000, order_by=order_by, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def experiment_id(uri: str, experiment: str) -> str:
    """The id of an experiment given by name (or by id)."""
    mlflow_client = client(uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None and experiment.isdigit():
        from mlflow.exceptions import MlflowException

        try:
            found = mlflow_client.get_experiment(experiment)
        except MlflowException:
            found = None
    if found is None:
        names = ", ".join(sorted(e.name for e in mlflow_client.search_experiments())) or "none"
        raise ExplaunchError(f"experiment {experiment!r}: no such experiment in {uri}; there: {names}")
    return str(found.experiment_id)


def search(
    uri: str,
    experiment: str | None,
    filter_string: str = "",
    limit: int | None = None,
    order_by: list[str] | None = None,
) -> list[RunSummary]:
    """Runs of an experiment (None: of every active experiment) matching an MLflow filter (``tags.status =
    'FAILED'``), newest first by default."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    mlflow_client = client(uri)
    if experiment is None:
        found = mlflow_client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=50_000)
        exp_ids = [str(e.experiment_id) for e in found]
    else:
        exp_ids = [experiment_id(uri, experiment)]
    if not exp_ids:
        return []
    order = order_by or ["attributes.start_time DESC"]
    try:
        if limit is None:
            runs = _all_runs(mlflow_client, exp_ids, filter_string, order)
        else:
            runs = list(mlflow_client.search_runs(exp_ids, filter_string, max_results=limit, order_by=order))
    except MlflowException as ex:
        raise ExplaunchError(f"filter {filter_string!r}: {_mlflow_error(ex)}") from None
    return [summary(run, uri) for run in runs]


def tag_filter(tags: Mapping[str, str]) -> str:
    """An MLflow filter matching runs that carry every one of ``tags`` (``{"stage": "tested"}`` ->
    ``tags.`stage` = 'tested'``); a key or value MLflow's filter cannot hold is a :class:`UsageError`."""
    conditions = []
    for key, value in tags.items():
        if "`" in key or not key:
            raise UsageError(f"--tag {key}={value}: a tag key is not empty and holds no backquote")
        if "'" in value and '"' in value:
            raise UsageError(f"--tag {key}={value}: a tag value holds one kind of quote at most")
        quote = '"' if "'" in value else "'"
        conditions.append(f"tags.`{key}` = {quote}{value}{quote}")
    return " and ".join(conditions)


def best_run(uri: str, experiment: str, metric: str, mode: str = "max", filter_string: str = "") -> RunSummary:
    """The finished run with the highest (``mode="max"``) or lowest metric; runs without the metric are ignored."""
    if mode not in MODES:
        raise ExplaunchError(f"mode={mode}: allowed: max, min")
    bound = "> -1e308" if mode == "max" else "< 1e308"  # also keeps only runs that have the metric
    conditions = [f"metrics.`{metric}` {bound}", "attributes.status = 'FINISHED'"]
    if filter_string.strip():
        conditions.append(filter_string)
    direction = "DESC" if mode == "max" else "ASC"
    runs = search(uri, experiment, " and ".join(conditions), limit=1, order_by=[f"metrics.`{metric}` {direction}"])
    if not runs:
        available = sorted({m for run in search(uri, experiment, limit=50) for m in run.metrics})
        listed = ", ".join(available[:MAX_LISTED]) + (
            f", ... ({len(available) - MAX_LISTED} more)" if len(available) > MAX_LISTED else ""
        )
        raise ExplaunchError(
            f"metric={metric}: no finished run of experiment {experiment!r} has it; metrics there: {listed or 'none'}"
        )
    return runs[0]


def get_best_run(experiment: str, metric: str, mode: str = "max", tracking_uri: str | None = None) -> RunSummary:
    """The best finished run of ``experiment`` by ``metric`` (``mode`` "max" or "min"), from the default store
    (``MLFLOW_TRACKING_URI``, else ``./mlflow.db``) unless ``tracking_uri`` is given."""
    return best_run(store_uri(tracking_uri), experiment, metric, mode)


def get_run(uri: str, run: str) -> RunSummary:
    """A run by id, or by the job folder whose ``job.json`` names its run."""
    from mlflow.exceptions import MlflowException

    run_id = run_id_of(run)
    try:
        return summary(client(uri).get_run(run_id), uri)
    except MlflowException as ex:
        raise ExplaunchError(f"run {run_id}: not found in {uri} ({_mlflow_error(ex)})") from None


def run_id_of(run: str) -> str:
    path = Path(run)
    if path.is_dir():
        from explaunch.sweepdir.records import read_job_record

        record = read_job_record(path)
        run_id = record.tracking.get("run_id")
        if not run_id:
            raise ExplaunchError(f"{path}: this job was not tracked in MLflow (tracking.backend={record.tracking})")
        return str(run_id)
    return run


@dataclass(frozen=True)
class ComparedValue:
    section: str  # param, metric or tag
    key: str
    a: str | float | None
    b: str | float | None

    @property
    def differs(self) -> bool:
        return self.a != self.b

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "differs": self.differs}


COMPARED_TAGS = ("status", "config_hash", "env_hash", "git_commit", "host", "sweep_dir", "job_dir")


def compare(a: RunSummary, b: RunSummary) -> list[ComparedValue]:
    """Params, metrics and explaunch's tags of two runs, key by key (a key one run lacks is None there)."""
    rows: list[ComparedValue] = []
    for section, left, right in (
        ("param", a.params, b.params),
        ("metric", a.metrics, b.metrics),
        (
            "tag",
            {k: a.tags[k] for k in COMPARED_TAGS if k in a.tags},
            {k: b.tags[k] for k in COMPARED_TAGS if k in b.tags},
        ),
    ):
        for key in sorted(set(left) | set(right)):
            rows.append(ComparedValue(section, key, left.get(key), right.get(key)))
    return rows


def download(uri: str, run: str, dest: Path, artifact_path: str | None = None) -> list[Path]:
    """The run's artifacts (or those under ``artifact_path``) copied into ``dest``; the files written."""
    import mlflow
    from mlflow.exceptions import MlflowException

    run_id = get_run(uri, run).run_id
    dest.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(dest), tracking_uri=uri
        )
    except MlflowException as ex:
        raise _mlflow_error(ex) from None
    root = Path(local)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]


def load_model(run: RunSummary | str, tracking_uri: str | None = None) -> Any:
    """The model a run logged, loaded: a registered model version linked to the run, else an MLflow model
    (a folder with ``MLmodel``) or explaunch's ``artifacts/model`` folder among its artifacts.

    An MLflow model loads as ``mlflow.pyfunc``; a folder holding ultralytics weights (``best.pt``, what
    ``yolo_train`` registers) loads as ``ultralytics.YOLO``. A run without a model (an ``llm_inference`` job logs
    none) raises :class:`ExplaunchError` saying so.
    """
    import mlflow

    if isinstance(run, RunSummary):
        uri = tracking_uri or run.tracking_uri
        run_id = run.run_id
    else:
        uri = store_uri(tracking_uri)
        run_id = get_run(uri, run).run_id
    source = _model_source(uri, run_id)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=uri))
    return load_model_folder(folder)


def _model_source(uri: str, run_id: str) -> str:
    mlflow_client = client(uri)
    versions = mlflow_client.search_model_versions(f"run_id = '{run_id}'")
    if versions:
        newest = max(versions, key=lambda v: int(v.version))
        return str(mlflow_client.get_model_version_download_uri(newest.name, newest.version))
    run = mlflow_client.get_run(run_id)
    for folder in _artifact_dirs(mlflow_client, run_id, "", depth=3):
        names = {Path(f.path).name for f in mlflow_client.list_artifacts(run_id, folder)}
        if "MLmodel" in names or folder == MODEL_FOLDER:
            return f"{run.info.artifact_uri}/{folder}"
    raise ExplaunchError(
        f"run {run_id} has no logged model: no registered model version, no MLflow model (MLmodel) and no "
        f"{MODEL_FOLDER}/ among its artifacts (an llm_inference job logs none; yolo_train does)"
    )


def _artifact_dirs(mlflow_client: Any, run_id: str, path: str, depth: int) -> list[str]:
    if depth == 0:
        return []
    found: list[str] = []
    for entry in mlflow_client.list_artifacts(run_id, path or None):
        if entry.is_dir:
            found.append(entry.path)
            found.extend(_artifact_dirs(mlflow_client, run_id, entry.path, depth - 1))
    return found


def registered_model_folder(name: str, version: str, tracking_uri: str) -> Path:
    """The files of version ``version`` of registered model ``name``, downloaded from the store's registry."""
    import mlflow

    source = client(tracking_uri).get_model_version_download_uri(name, version)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=tracking_uri))


def load_model_folder(folder: Path) -> Any:
    import importlib

    if (folder / "MLmodel").is_file():
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(str(folder))
    weights = sorted(folder.glob("*.pt"))
    if weights:
        best = folder / "best.pt" if (folder / "best.pt").is_file() else weights[0]
        return importlib.import_module("ultralytics").YOLO(str(best))
    files = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
    raise ExplaunchError(f"{folder}: no MLmodel file and no *.pt weights to load (found: {files})")
