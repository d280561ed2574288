"""A tracking server as the store (``tracking.uri=http://...``): a real ``mlflow server`` started by the test. The
check before the first job talks to it over its REST API; the sweep's runs land in it; a server that is down, or
an experiment deleted in it, stops the sweep before its folder is made (issue 18, item 2)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from explaunch.sweepdir import records
from explaunch.tracking.store import StoreUnavailable, check_store
from tests.integration.helpers import run_main
from tests.integration.test_mlflow_ui import free_port

pytestmark = pytest.mark.slow


@dataclass
class Server:
    uri: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, "mlflow server exited"
                time.sleep(0.5)
        yield Server(uri, proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def sweep(tmp_path: Path, sweep_dir: Path, uri: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_main(
        "-m", "experiment_type=probe", "seed=0,1", "hydra/launcher=basic", f"tracking.uri={uri}",
        f"hydra.sweep.dir={sweep_dir}", *extra, cwd=tmp_path, timeout=300,
    )  # fmt: skip


def test_a_sweep_logs_into_a_live_server_and_a_dead_one_stops_it_before_its_folder(
    tmp_path: Path, server: Server
) -> None:
    assert check_store(server.uri, "explaunch").deleted is False  # answers, takes a write (an experiment tag)
    proc = sweep(tmp_path, tmp_path / "s1", server.uri)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = mlflow.MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("explaunch")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    job_runs = {r.data.tags["job_dir"]: r for r in runs if "job_dir" in r.data.tags}
    assert len(job_runs) == 2 and {r.info.status for r in job_runs.values()} == {"FINISHED"}
    for _, record in records.iter_job_records(tmp_path / "s1"):
        assert record.tracking["run_id"] in {r.info.run_id for r in job_runs.values()}
        artifacts = {f.path for f in client.list_artifacts(record.tracking["run_id"])}
        assert "job.json" in artifacts  # uploaded through the server's artifact proxy

    client.delete_experiment(experiment.experiment_id)
    proc = sweep(tmp_path, tmp_path / "s2", server.uri, "tracking.restore_deleted=false")
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        f"error: MLflow experiment 'explaunch' (id {experiment.experiment_id}) is deleted in {server.uri}: restore "
        f"it (mlflow experiments restore --experiment-id {experiment.experiment_id}), purge it (mlflow gc "
        f"--backend-store-uri {server.uri} --experiment-ids {experiment.experiment_id}), or set tracking.experiment"
    ]
    assert not (tmp_path / "s2").exists()

    server.stop()
    with pytest.raises(StoreUnavailable, match="no answer from the server"):
        check_store(server.uri, "explaunch")
    secret_uri = server.uri.replace("http://", "http://alice:hunter2-pw@")  # credentials in the URI stay secret
    proc = sweep(tmp_path, tmp_path / "s3", secret_uri)
    assert proc.returncode == 2
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: MLflow store http://"), proc.stderr
    assert "cannot be written: no answer from the server" in line
    assert "hunter2-pw" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "s3").exists()
