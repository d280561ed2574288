"""``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows the sweep's runs, nested, with their artifacts."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Sweep

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def mlflow_ui(literal_sweep: Sweep) -> Iterator[str]:
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow), "ui", "--backend-store-uri", literal_sweep.store, "--host", "127.0.0.1", "--port", str(port)],
        cwd=literal_sweep.cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def call(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_the_ui_serves_the_nested_runs_and_their_artifacts(mlflow_ui: str) -> None:
    api = f"{mlflow_ui}/ajax-api/2.0/mlflow"  # what the UI's pages call
    experiments = call(f"{api}/experiments/search", {"max_results": 100})["experiments"]
    ids = [e["experiment_id"] for e in experiments if e["name"] == "explaunch"]
    runs = call(f"{api}/runs/search", {"experiment_ids": ids, "max_results": 100})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    parents = [r["info"]["run_id"] for r, t in zip(runs, tags, strict=True) if "mlflow.parentRunId" not in t]
    children = [t for t in tags if "mlflow.parentRunId" in t]
    assert len(parents) == 1 and len(children) == 6
    assert {t["mlflow.parentRunId"] for t in children} == set(parents)
    child_id = next(r["info"]["run_id"] for r, t in zip(runs, tags, strict=True) if "mlflow.parentRunId" in t)
    listed = call(f"{api}/artifacts/list?run_id={child_id}")
    assert "job.json" in {f["path"] for f in listed["files"]}
    with urllib.request.urlopen(f"{mlflow_ui}/get-artifact?path=job.json&run_uuid={child_id}", timeout=30) as f:
        assert json.load(f)["status"] == "completed"
