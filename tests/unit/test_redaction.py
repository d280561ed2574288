"""explaunch.redaction: what counts as a secret, and how it is removed from resolved and unresolved configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from explaunch.redaction import (
    REDACTED,
    is_secret,
    is_secret_variable,
    looks_like_credentials,
    redact_hydra_files,
    redact_override,
    redact_resolved,
    redact_unresolved,
    secret_values,
)


def test_the_pattern_setting_marks_more_keys_secret_and_never_fewer(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not is_secret("params.pin") and is_secret("params.api_token")
    monkeypatch.setenv("EXPLAUNCH_SECRET_PATTERN", r"^pin$|salt")
    assert is_secret("params.pin") and is_secret("hash_salt") and is_secret("params.api_token")
    assert is_secret_variable("MY_SALT") and not is_secret("pinned")
    assert redact_override("+params.pin=1234") == f"+params.pin={REDACTED}"


def test_an_env_reference_is_kept_as_written_even_under_a_secret_key() -> None:
    assert redact_override("password=${oc.env:DB_PW}") == "password=${oc.env:DB_PW}"
    assert redact_override(r"password=$\{oc.env\:DB_PW\}") == r"password=$\{oc.env\:DB_PW\}"
    assert redact_override("password=x${oc.env:DB_PW}") == f"password={REDACTED}"
    assert redact_unresolved({"password": "${oc.env:DB_PW}", "token": "abcd"}) == {
        "password": "${oc.env:DB_PW}",
        "token": REDACTED,
    }


def test_a_resolved_value_read_from_the_environment_is_redacted_wherever_it_was_copied() -> None:
    unresolved = {"db": "${oc.env:DB_PW}", "url": "pg://u:${db}@h/x", "note": "pw is ${db}", "n": 3}
    resolved = {"db": "hunter22", "url": "pg://u:hunter22@h/x", "note": "pw is hunter22", "n": 3}
    values = secret_values(unresolved, {"DB_PW": "hunter22"})
    assert values == {"hunter22"}
    assert redact_resolved(resolved, unresolved, values) == {
        "db": REDACTED,
        "url": "pg://h/x",
        "note": f"pw is {REDACTED}",
        "n": 3,
    }


def test_copies_of_an_override_secret_are_replaced_in_hydras_own_config() -> None:
    hydra = {
        "overrides": {"task": ["seed=1", "+params.api_token=abc123"]},
        "job": {"override_dirname": "+params.api_token=abc123,seed=1", "name": "main"},
    }
    redacted = redact_unresolved(hydra)
    assert redacted["overrides"]["task"] == ["seed=1", f"+params.api_token={REDACTED}"]
    assert "abc123" not in str(redacted) and redacted["job"]["name"] == "main"


def test_url_credentials_go_unless_they_are_an_interpolation() -> None:
    assert redact_override("tracking.uri=https://alice:pw@mlflow.example.org/") == (
        "tracking.uri=https://mlflow.example.org/"
    )
    assert redact_override("+db_url=pg://app:${params.db}@h/x") == "+db_url=pg://app:${params.db}@h/x"


def test_hydras_files_are_rewritten_only_where_they_hold_a_secret(tmp_path: Path) -> None:
    (tmp_path / "overrides.yaml").write_text("- seed=1\n- +params.password=s3cret-pw\n")
    (tmp_path / "config.yaml").write_text("seed: 1\nparams:\n  password: s3cret-pw\n")
    clean = "hydra:\n  job:\n    name: main\n"
    (tmp_path / "hydra.yaml").write_text(clean)
    assert sorted(redact_hydra_files(tmp_path)) == ["config.yaml", "overrides.yaml"]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["params"]["password"] == REDACTED
    assert "s3cret-pw" not in (tmp_path / "overrides.yaml").read_text()
    assert (tmp_path / "hydra.yaml").read_text() == clean
    assert redact_hydra_files(tmp_path) == []


@pytest.mark.parametrize("name", [".env", ".env.local", "prod.env", "x/a.pem", "tls.key", "id_rsa", "secrets.yml"])
def test_credential_files_are_recognised(name: str) -> None:
    assert looks_like_credentials(name)


@pytest.mark.parametrize("name", ["main.py", "conf/config.yaml", "notes.txt", "src/keyboard.py", "tokenizer.py"])
def test_ordinary_files_are_not_taken_for_credentials(name: str) -> None:
    assert not looks_like_credentials(name)


def test_a_config_error_line_names_the_key_but_never_shows_a_secret() -> None:
    """The one-line error of a bad value is printed and often logged (CI, SLURM output): secrets stay out of it."""
    from hydra.errors import HydraException

    from explaunch.errors import ConfigError
    from explaunch.launch.preflight import composition_error

    assert str(ConfigError("params.api_token", "abc123", "must be a number")) == (
        "params.api_token=<redacted>: must be a number"
    )
    assert "pw99" not in str(ConfigError("tracking.uri", "http://alice:pw99@host:5000", "bad"))
    line = str(composition_error(HydraException("broken"), ["seed=0", "+params.password=pw77", "x=http://a:pw88@h"]))
    assert "pw77" not in line and "pw88" not in line and line.startswith("override=seed=0 +params.password=")


def test_a_log_line_loses_secret_pairs_url_credentials_and_known_secret_texts() -> None:
    from explaunch.redaction import install_log_redaction, redact_text

    install_log_redaction({"db": {"password": "hunter2-long"}})
    line = "Launching job #0: seed=1 +params.api_token=abc123 uri=http://u:pw9@h:1/x note=${oc.env:TOKEN} hunter2-long"
    assert redact_text(line) == (
        "Launching job #0: seed=1 +params.api_token=<redacted> uri=http://h:1/x note=${oc.env:TOKEN} <redacted>"
    )
    assert redact_text("max_new_tokens=16 num_key_value_heads=2") == "max_new_tokens=16 num_key_value_heads=2"
