"""What one job's recording does (:class:`RecordingSettings`): from the job's config in explaunch's own app (the
schema's ``tracking``, ``energy``, ``resources`` and ``hardware`` keys), and from the recording callback's arguments
(:class:`RecordingOptions`) in any other Hydra app, whose config knows none of these keys.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

from explaunch.config import EnergyConfig, ResourcesConfig, TrackingConfig, is_explaunch_config
from explaunch.errors import ConfigError


def _rules_of(schema: type, key: str, default: Any) -> Any:
    """A field with the ``spec`` rules of the schema's ``key``: an argument obeys the rules of the key it stands for."""
    rules = next(f.metadata for f in dataclasses.fields(schema) if f.name == key)
    return dataclasses.field(default=default, metadata=rules)


@dataclasses.dataclass(frozen=True)
class RecordingOptions:
    """The recording callback's arguments (``hydra.callbacks.recording.<name>`` in any app's config): each stands
    for a key of explaunch's schema, whose rules it obeys, and is used only where the job's config is not
    explaunch's own (there, the config's keys win)."""

    tracking: str = _rules_of(TrackingConfig, "backend", "mlflow")  # tracking.backend: mlflow | none
    tracking_uri: str | None = _rules_of(TrackingConfig, "uri", None)  # null: $MLFLOW_TRACKING_URI, else ./mlflow.db
    experiment: str | None = _rules_of(TrackingConfig, "experiment", None)  # null: the app's name (hydra.job.name)
    system_metrics: bool = _rules_of(TrackingConfig, "system_metrics", False)
    log_artifacts: bool = _rules_of(TrackingConfig, "log_artifacts", True)
    energy: bool = _rules_of(EnergyConfig, "enabled", True)  # energy.enabled: the whole job's energy
    country_iso_code: str = _rules_of(EnergyConfig, "country_iso_code", "USA")
    resources: bool = _rules_of(ResourcesConfig, "enabled", True)  # resources.enabled: resources.csv
    resources_interval_s: float = _rules_of(ResourcesConfig, "interval_s", 1.0)

    def validated(self, key: str) -> RecordingOptions:
        """These options, or a one-line :class:`ConfigError` naming ``<key>.<argument>`` for the first value not
        allowed."""
        from explaunch.config import validate_node

        hints = typing.get_type_hints(RecordingOptions)
        for f in dataclasses.fields(self):
            _check_type(f"{key}.{f.name}", getattr(self, f.name), hints[f.name])
        validate_node(OmegaConf.create(dataclasses.asdict(self)), RecordingOptions, key)  # choices, min, max
        return self


def _check_type(key: str, value: Any, hint: Any) -> None:
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    optional = type(None) in typing.get_args(hint)
    kind = kinds[0]
    if value is None and optional:
        return
    if kind is bool:
        ok, allowed = isinstance(value, bool), "true or false"
    elif kind is float:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok, allowed = number and math.isfinite(value), "a number"
    else:
        ok, allowed = isinstance(value, str) and value.strip() != "", "a non-empty string"
    if not ok:
        raise ConfigError(key, value, f"must be {allowed}" + (", or null" if optional else ""))


@dataclasses.dataclass(frozen=True)
class RecordingSettings:
    """What one job's recording does: the ``tracking``, ``energy`` and ``resources`` nodes (typed by the schema's
    dataclasses), the devices whose energy counts, and whether the job is explaunch's own app's (its task returns
    ``{"metrics": ..., "info": ...}``; any other app's returned mapping is its metrics)."""

    tracking: Any
    energy: Any
    resources: Any
    device: str = "auto"
    gpu_ids: tuple[int, ...] = ()
    own_app: bool = False

    @classmethod
    def of_job(cls, config: DictConfig, options: RecordingOptions) -> RecordingSettings:
        """explaunch's own app: its config's keys, as ever; any other app: ``options`` (the callback's arguments)."""
        if is_explaunch_config(config):
            device = str(OmegaConf.select(config, "hardware.device", default="auto"))
            gpu_ids = tuple(OmegaConf.select(config, "hardware.gpu_ids", default=None) or [])
            return cls(config.tracking, config.energy, config.resources, device, gpu_ids, own_app=True)
        experiment = options.experiment or str(OmegaConf.select(config, "hydra.job.name", default=None) or "")
        tracking = TrackingConfig(
            backend=options.tracking,
            uri=options.tracking_uri,
            experiment=experiment or TrackingConfig.experiment,
            system_metrics=options.system_metrics,
            log_artifacts=options.log_artifacts,
        )
        energy = EnergyConfig(enabled=options.energy, country_iso_code=options.country_iso_code)
        resources = ResourcesConfig(enabled=options.resources, interval_s=options.resources_interval_s)
        return cls(OmegaConf.structured(tracking), OmegaConf.structured(energy), OmegaConf.structured(resources))
