"""The tracking store's check before a sweep: one line naming why, no credentials, nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from explaunch.tracking.store import StoreUnavailable, check_store, display_uri


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://alice:s3cret@mlflow.example.org:5000", "http://mlflow.example.org:5000"),
        ("https://mlflow.example.org/path?token=abc", "https://mlflow.example.org/path"),
        ("sqlite:////tmp/x/mlflow.db", "sqlite:////tmp/x/mlflow.db"),
        ("postgresql://u:pw@db/mlflow", "postgresql://db/mlflow"),
    ],
)
def test_display_uri_strips_credentials(uri: str, shown: str) -> None:
    assert display_uri(uri) == shown


def test_a_sqlite_store_whose_folder_cannot_be_made_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreUnavailable, match="file is not a folder"):
        check_store(f"sqlite:///{tmp_path / 'file' / 'sub' / 'mlflow.db'}", "explaunch")


def test_a_new_sqlite_store_is_writable_and_nothing_is_left_behind(tmp_path: Path) -> None:
    state = check_store(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}", "explaunch")  # MLflow makes the folder
    assert state.experiment_id is None and not state.deleted
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_text("not a database" * 100)
    with pytest.raises(StoreUnavailable, match=r"mlflow\.db"):
        check_store(f"sqlite:///{tmp_path / 'mlflow.db'}", "explaunch")


def test_a_server_that_is_down_is_unavailable_at_once() -> None:
    with pytest.raises(StoreUnavailable, match="no answer from the server"):
        check_store("http://127.0.0.1:9", "explaunch")


def test_a_deleted_experiment_is_seen_in_a_sqlite_store(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("gone")
    client.delete_experiment(experiment_id)
    state = check_store(uri, "gone")
    assert state.experiment_id == experiment_id and state.deleted
    assert not check_store(uri, "other").deleted
