from __future__ import annotations

import os
from pathlib import Path

import pytest

from explaunch.errors import SettingsFileError
from explaunch.settings import SETTINGS, load_dotenv, read_dotenv


def test_dotenv_fills_what_the_environment_lacks_and_never_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "# team settings\nMLFLOW_TRACKING_URI=sqlite:///team.db\nexport EXPLAUNCH_SLURM_PARTITION='gpu'\n"
        'EXPLAUNCH_SLURM_ACCOUNT="proj 42"\n'
    )
    # what load_dotenv adds to os.environ goes when the test ends (it would leak into every later test's subprocesses)
    for name in ("MLFLOW_TRACKING_URI", "EXPLAUNCH_SLURM_ACCOUNT"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("EXPLAUNCH_SLURM_PARTITION", "cpu")  # given explicitly: it wins
    added = load_dotenv(tmp_path)
    assert sorted(added) == ["EXPLAUNCH_SLURM_ACCOUNT", "MLFLOW_TRACKING_URI"]
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///team.db"
    assert os.environ["EXPLAUNCH_SLURM_ACCOUNT"] == "proj 42"
    assert os.environ["EXPLAUNCH_SLURM_PARTITION"] == "cpu"


def test_no_dotenv_is_nothing_to_do(tmp_path: Path) -> None:
    assert load_dotenv(tmp_path) == []


def test_a_malformed_line_is_one_error_naming_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("A=1\nthis is not a setting\nB=2\n")
    with pytest.raises(SettingsFileError) as caught:
        read_dotenv(path)
    assert str(caught.value).startswith(f"{path}:2: not a KEY=value line")


def test_every_setting_is_documented_in_the_cli_reference() -> None:
    from tests.conftest import ROOT

    text = (ROOT / "docs" / "cli.md").read_text()
    assert [name for name in SETTINGS if name not in text] == []


def test_the_variables_a_test_s_dotenv_added_are_gone_again() -> None:
    assert os.environ.get("MLFLOW_TRACKING_URI") != "sqlite:///team.db"
    assert "EXPLAUNCH_SLURM_ACCOUNT" not in os.environ or os.environ["EXPLAUNCH_SLURM_ACCOUNT"] != "proj 42"
