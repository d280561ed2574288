"""A model in the MLflow store, found and fetched to be evaluated without training (``yolo_val``).

Three ways to name one:

- ``models:/NAME/VERSION`` (also ``models:/NAME/latest`` and ``models:/NAME@ALIAS``): a registered model version;
- ``runs:/RUN_ID/PATH``: an artifact folder of a run (``yolo_train`` logs its weights under ``artifacts/model``;
  ``runs:/RUN_ID`` alone means that folder);
- the best completed job of a sweep folder by one of its metrics (``max`` or ``min``): its run's ``artifacts/model``.
  The job's run id is in its record (``job.json``, ``tracking.run_id``) or in its ``mlflow_run_id`` file.

:func:`resolve` checks that the model is there before any job starts, and raises a :class:`ConfigError` naming the
key, the value and what is allowed; :func:`download` copies the model into a folder of the job. MLflow is imported
inside the functions (this package is the only one that imports it); nothing is downloaded from the internet.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explaunch.errors import ConfigError, ExplaunchError, RecordError
from explaunch.redaction import strip_url_credentials

MODEL_FOLDER = "artifacts/model"  # where yolo_train puts its weights (and the folder it registers)
MODES = ("max", "min")
_MAX_LISTED = 10
_RUNS = re.compile(r"runs:/(?P<run>[^/]+)(?:/(?P<path>.+?))?/?")
_MODELS = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>[^/]+)|@(?P<alias>[^/]+))/?")
URI_FORMS = "models:/NAME/VERSION (or /latest, @ALIAS) or runs:/RUN_ID/PATH"


@dataclass(frozen=True)
class ModelSource:
    """Where the model to evaluate is: its run, the URI naming it, the artifact location to download."""

    run_id: str
    model_uri: str  # as given; for a sweep's best job: runs:/RUN_ID/artifacts/model
    download_uri: str
    store: str
    job_dir: str | None = None  # best_of: the job it came from
    metric_value: float | None = None  # best_of: its value of the metric


def store_uri(configured: str | None, key: str, value: object) -> str:
    """The store to read (as the jobs resolve it), or a ConfigError when a sqlite store's file is missing."""
    from explaunch.tracking import reader

    try:
        return reader.store_uri(configured)
    except ExplaunchError as ex:
        raise ConfigError(key, value, str(ex)) from None


def resolve(
    store: str | None,
    *,
    model_uri: str | None,
    best_of: str | None,
    metric: str | None,
    mode: str,
    key: str = "experiment_type",
) -> ModelSource:
    """The model ``model_uri`` or ``best_of`` names (exactly one of them), checked in the store ``store`` (None: the
    one the jobs log to: ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the current folder)."""
    if (model_uri is None) == (best_of is None):
        given = f"both (best_of={best_of})" if model_uri else "neither"
        raise ConfigError(
            f"{key}.model_uri",
            model_uri,
            f"give exactly one of {key}.model_uri ({URI_FORMS}) and {key}.best_of (a sweep folder, with "
            f"{key}.metric and {key}.mode); given: {given}",
        )
    value_key, value = (f"{key}.model_uri", model_uri) if model_uri is not None else (f"{key}.best_of", best_of)
    if model_uri is not None and metric is not None:
        raise ConfigError(f"{key}.metric", metric, f"only with {key}.best_of; {key}.model_uri names one model")
    if best_of is not None and metric is None:
        raise ConfigError(f"{key}.metric", None, f"required with {key}.best_of: the metric the best job is chosen by")
    if mode not in MODES:
        raise ConfigError(f"{key}.mode", mode, "allowed: " + ", ".join(MODES))
    uri = store_uri(store, value_key, value)
    try:
        if model_uri is not None:
            return _resolve_uri(uri, model_uri, value_key)
        assert best_of is not None and metric is not None
        return _resolve_best(uri, best_of, metric, mode, key)
    except ConfigError:
        raise
    except Exception as ex:  # the store does not answer, refuses (HTTP 401), is damaged
        text = " ".join(str(getattr(ex, "message", None) or ex).split())[:300]
        raise ConfigError(
            value_key, value, f"cannot read the store {_where(uri)}: {type(ex).__name__}: {text}"
        ) from None


@functools.lru_cache(maxsize=16)
def resolve_cached(
    store: str | None, model_uri: str | None, best_of: str | None, metric: str | None, mode: str, cwd: str
) -> ModelSource:
    """:func:`resolve`, once per process for the same arguments and current folder (a job's config is validated,
    and resolved, more than once). Errors are not kept: the next call tries again."""
    return resolve(store, model_uri=model_uri, best_of=best_of, metric=metric, mode=mode)


def source_field(field: str, spec: Any) -> str:
    """``field`` (``run_id``, ``model_uri``) of the model ``spec`` (the ``yolo_val`` config node) names, or "" where
    it names none: the config's check then says why, in one line (a tag cannot be null, so "" rather than None)."""
    try:
        source = resolve_cached(
            _text(spec.store), _text(spec.model_uri), _text(spec.best_of), _text(spec.metric), str(spec.mode),
            str(Path.cwd()),
        )  # fmt: skip
    except Exception:
        return ""
    return str(getattr(source, field) or "")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def download(source: ModelSource, dest: Path) -> Path:
    """The model's files copied into ``dest``; the folder holding them."""
    import mlflow

    dest.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=source.download_uri, dst_path=str(dest), tracking_uri=source.store
    )
    return Path(local)


def _client(store: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store, registry_uri=store)


def _where(store: str) -> str:
    return strip_url_credentials(store)


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "") if names else "none"


def _resolve_uri(store: str, uri: str, key: str) -> ModelSource:
    if match := _RUNS.fullmatch(uri):
        return _resolve_run(store, match["run"], match["path"] or MODEL_FOLDER, uri, key)
    if match := _MODELS.fullmatch(uri):
        return _resolve_registered(store, match["name"], match["version"], match["alias"], uri, key)
    raise ConfigError(key, uri, f"must be {URI_FORMS}")


def _resolve_run(store: str, run_id: str, path: str, uri: str, key: str, value: str | None = None) -> ModelSource:
    from mlflow.exceptions import MlflowException

    client = _client(store)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(key, value or uri, f"no run {run_id} in the store {_where(store)}") from None
    path = path.strip("/")
    parent = path.rpartition("/")[0]
    entries = client.list_artifacts(run_id, parent or None)
    if not any(entry.path == path for entry in entries):
        there = [entry.path for entry in entries]
        raise ConfigError(
            key, value or uri, f"run {run_id} has no artifact {path}; under {parent or 'its root'}: {_listed(there)}"
        )
    return ModelSource(run.info.run_id, uri, f"{run.info.artifact_uri}/{path}", store)


def _resolve_registered(
    store: str, name: str, version: str | None, alias: str | None, uri: str, key: str
) -> ModelSource:
    from mlflow.exceptions import MlflowException

    client = _client(store)
    versions = sorted(
        (v for v in client.search_model_versions(f"name = '{_quoted(name)}'")), key=lambda v: int(v.version)
    )
    if not versions:
        names = sorted(m.name for m in client.search_registered_models())
        raise ConfigError(
            key, uri, f"no registered model '{name}' in the store {_where(store)}; registered: {_listed(names)}"
        )
    if alias is not None:
        try:
            found = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            raise ConfigError(key, uri, f"registered model '{name}' has no alias '{alias}'") from None
    elif version == "latest":
        found = versions[-1]
    else:
        matching = [v for v in versions if str(v.version) == version]
        if not matching:
            numbers = [str(v.version) for v in versions]
            raise ConfigError(
                key, uri, f"registered model '{name}' has no version {version}; versions: {_listed(numbers)}, latest"
            )
        found = matching[0]
    if not found.run_id:
        raise ConfigError(key, uri, f"version {found.version} of '{name}' is linked to no run")
    download_uri = str(client.get_model_version_download_uri(name, found.version))
    return ModelSource(str(found.run_id), uri, download_uri, store)


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")


def _resolve_best(store: str, best_of: str, metric: str, mode: str, key: str) -> ModelSource:
    from explaunch.sweepdir import records

    folder = Path(best_of).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{key}.best_of", best_of, "must be an existing sweep folder (multirun/DATE/TIME)")
    if not _is_sweep(folder):
        raise ConfigError(
            f"{key}.best_of", best_of, "not a sweep folder: no multirun.yaml, sweep.json or job folders (job.json)"
        )
    try:
        jobs = list(records.iter_job_records(folder))
    except RecordError as ex:
        raise ConfigError(f"{key}.best_of", best_of, str(ex)) from None
    if not jobs:
        raise ConfigError(f"{key}.best_of", best_of, "a sweep folder with no job record (job.json) yet")
    done = [(job_dir, record) for job_dir, record in jobs if record.status == records.COMPLETED]
    if not done:
        raise ConfigError(f"{key}.best_of", best_of, f"none of its {len(jobs)} jobs completed")
    scored = [(job_dir, r, r.metrics[metric]) for job_dir, r in done if _finite(r.metrics.get(metric))]
    if not scored:
        names = sorted({name for _, r in done for name in r.metrics})
        raise ConfigError(
            f"{key}.metric", metric, f"no completed job of {best_of} has it; metrics there: {_listed(names)}"
        )
    pick = max if mode == "max" else min
    job_dir, record, value = pick(scored, key=lambda item: float(item[2]))
    run_id = str(record.tracking.get("run_id") or "")
    if not run_id and (job_dir / "mlflow_run_id").is_file():
        run_id = (job_dir / "mlflow_run_id").read_text().strip()
    if not run_id:
        raise ConfigError(
            f"{key}.best_of",
            best_of,
            f"its best job by {metric} ({job_dir}) has no MLflow run yet: log it with explaunch sync {best_of}",
        )
    uri = f"runs:/{run_id}/{MODEL_FOLDER}"
    found = _resolve_run(store, run_id, MODEL_FOLDER, uri, f"{key}.best_of", best_of)
    return ModelSource(found.run_id, uri, found.download_uri, store, str(job_dir), float(value))


def _is_sweep(folder: Path) -> bool:
    """A folder the sweeper wrote, one with job folders right below it, or a single run's folder."""
    if any((folder / name).is_file() for name in ("multirun.yaml", "sweep.json", "job.json")):
        return True
    try:
        return any((child / "job.json").is_file() for child in folder.iterdir() if child.is_dir())
    except OSError:
        return False


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
