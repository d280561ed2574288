"""The line a record gets when the relay could not log its run says what the store said (no sweep: fast)."""

from __future__ import annotations

import sqlite3

import pytest

from explaunch.tracking.relay import why


def raised(outer: str, inner: BaseException, *, cause: bool) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as ex:
            if cause:
                raise RuntimeError(outer) from ex
            raise RuntimeError(outer)  # noqa: B904 - an error raised while handling another, as MLflow's REST client
    except RuntimeError as ex:
        return ex
    raise AssertionError("not raised")


@pytest.mark.parametrize(
    ("outer", "inner", "cause", "line"),
    [
        (  # MLflow's sqlalchemy store: its own message says only where, the store's error what
            "(raised as a result of Query-invoked autoflush; consider using a session.no_autoflush block)\n[SQL: x]",
            sqlite3.OperationalError("database or disk is full"),
            True,
            "OperationalError: database or disk is full",
        ),
        (
            "API request to http://127.0.0.1:9/api/2.0/mlflow/runs/create failed with exception refused",
            ConnectionRefusedError(111, "Connection refused"),
            False,
            "RuntimeError: API request to http://127.0.0.1:9/api/2.0/mlflow/runs/create failed with exception refused",
        ),
    ],
)
def test_the_line_names_the_stores_own_error(outer: str, inner: BaseException, cause: bool, line: str) -> None:
    assert why(raised(outer, inner, cause=cause)) == line


def test_an_error_without_a_message_is_its_type() -> None:
    assert why(OSError()) == "OSError"
