"""The recording callbacks' arguments, for any Hydra app: checked in one line each, used only where the job's config
is not explaunch's own; another app's returned mapping as metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from explaunch.callbacks import JobGuardCallback, RecordingCallback
from explaunch.errors import ConfigError
from explaunch.job.hydra_files import redact_sweep_config
from explaunch.job.recording import returned_metrics
from explaunch.job.recording_settings import RecordingOptions, RecordingSettings
from tests.conftest import compose_config


def test_a_returned_mapping_gives_its_numbers_nested_keys_joined_with_a_dot() -> None:
    returned = {"loss": 0.25, "epochs": 3, "val": {"acc": 0.9, "per_class": {"a": 1}}, "ok": True, "name": "x"}
    assert returned_metrics(returned) == {"loss": 0.25, "epochs": 3.0, "val.acc": 0.9, "val.per_class.a": 1.0}


@pytest.mark.parametrize("returned", [None, 0.5, [1.0, 2.0], "loss=0.1"])
def test_a_return_value_that_is_no_mapping_gives_no_metrics(returned: Any) -> None:
    assert returned_metrics(returned) == {}


def test_the_callbacks_take_their_defaults_without_arguments() -> None:
    assert RecordingCallback().options == RecordingOptions()
    assert JobGuardCallback().job_timeout_s is None


ARG = "hydra.callbacks.recording"


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        ({"tracking": "wandb"}, f"{ARG}.tracking=wandb: allowed: mlflow, none"),
        ({"energy": "yes"}, f"{ARG}.energy=yes: must be true or false"),
        ({"resources": None}, f"{ARG}.resources=null: must be true or false"),
        ({"resources_interval_s": 0.01}, f"{ARG}.resources_interval_s=0.01: must be a number >= 0.05"),
        ({"resources_interval_s": "1s"}, f"{ARG}.resources_interval_s=1s: must be a number"),
        ({"experiment": ""}, f"{ARG}.experiment=: must be a non-empty string, or null"),
        ({"tracking_uri": 5}, f"{ARG}.tracking_uri=5: must be a non-empty string, or null"),
    ],
)
def test_a_bad_argument_is_one_line_naming_it_its_value_and_what_is_allowed(
    arguments: dict[str, Any], line: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        RecordingCallback(**arguments)
    assert str(raised.value) == line


@pytest.mark.parametrize("timeout", [0, -1.0, "soon", float("inf")])
def test_a_bad_job_time_limit_is_one_line(timeout: Any) -> None:
    with pytest.raises(ConfigError, match=r"^hydra\.callbacks\.job_guard\.job_timeout_s=.*: must be a number > 0"):
        JobGuardCallback(job_timeout_s=timeout)


def test_a_uri_with_credentials_is_not_shown_in_the_error() -> None:
    with pytest.raises(ConfigError) as raised:
        RecordingCallback(tracking="http://user:pw@host")
    assert "pw" not in str(raised.value)


def test_explaunchs_own_app_records_what_its_config_says_whatever_the_arguments() -> None:
    config = compose_config("tracking=none", "energy.enabled=false", "hardware=cpu")
    options = RecordingOptions(tracking="mlflow", energy=True, resources=False)
    settings = RecordingSettings.of_job(config, options)
    assert settings.own_app and settings.device == "cpu"
    assert settings.tracking.backend == "none" and not settings.energy.enabled and settings.resources.enabled
    assert settings.tracking is config.tracking  # the job's own nodes, as before the arguments existed


def test_any_other_app_records_what_the_arguments_say_whatever_its_keys() -> None:
    config = OmegaConf.create(
        {"lr": 0.1, "tracking": "tensorboard", "energy": 3.5, "resources": [], "hydra": {"job": {"name": "train"}}}
    )
    options = RecordingOptions(tracking_uri="sqlite:///x.db", energy=False, resources_interval_s=0.5)
    settings = RecordingSettings.of_job(config, options)
    assert not settings.own_app and settings.device == "auto" and settings.gpu_ids == ()
    assert settings.tracking.backend == "mlflow" and settings.tracking.uri == "sqlite:///x.db"
    assert settings.tracking.experiment == "train"  # null: the app's name
    assert not settings.energy.enabled and settings.energy.country_iso_code == "USA"
    assert settings.resources.enabled and settings.resources.interval_s == 0.5
    named = RecordingSettings.of_job(config, RecordingOptions(experiment="my_app"))
    assert named.tracking.experiment == "my_app"


def test_the_job_time_limit_is_the_sweepers_where_it_sets_one_else_the_arguments() -> None:
    guard = JobGuardCallback(job_timeout_s=120)
    for sweeper, expected in (({"job_timeout_s": 30.0}, 30.0), ({"job_timeout_s": None}, 120), ({}, 120)):
        config = OmegaConf.create({"hydra": {"sweeper": sweeper}})
        guard.on_job_start(config)
        try:
            assert guard.guard.timeout_s == expected
        finally:
            guard.on_job_end(config, job_return=None)  # type: ignore[arg-type]


def test_multirun_yaml_written_with_secrets_is_rewritten_redacted(tmp_path: Path) -> None:
    path = tmp_path / "multirun.yaml"
    path.write_text(yaml.safe_dump({"lr": 0.1, "db_password": "hunter2-secret", "hydra": {"job": {"name": "x"}}}))
    assert redact_sweep_config(tmp_path)
    assert "hunter2-secret" not in path.read_text() and yaml.safe_load(path.read_text())["lr"] == 0.1
    before = path.stat().st_mtime_ns
    assert redact_sweep_config(tmp_path) and path.stat().st_mtime_ns == before  # nothing left to redact
    assert not redact_sweep_config(tmp_path / "none")
