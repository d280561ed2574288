"""A shared tracking server as teams run one: ``make mlflow-server-up`` (scripts/mlflow_server/up.sh) starts a real
PostgreSQL (Debian's package) and ``mlflow server`` with proxied artifacts on loopback, in a folder and on ports of
this test's own. A joblib sweep logs 8 jobs at once to it; the review commands read it; the server stopped in the
middle of a sweep loses nothing: the jobs complete, the summary says which runs wait, and ``explaunch sync`` logs them
once the server is back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from explaunch.sweepdir import records
from tests.conftest import ROOT
from tests.integration.helpers import run_main
from tests.integration.test_mlflow_ui import free_port

pytestmark = pytest.mark.slow
SCRIPTS = ROOT / "scripts" / "mlflow_server"
EXPLAUNCH = ROOT / ".venv" / "bin" / "explaunch"


@dataclass
class PgServer:
    uri: str
    env: dict[str, str]
    base: Path

    def script(self, name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPTS / name)], env=self.env, capture_output=True, text=True, timeout=600, check=False
        )

    def stop_mlflow_only(self) -> None:
        pid = int((self.base / "mlflow.pid").read_text())
        os.killpg(pid, 15)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@pytest.fixture(scope="module")
def server() -> Iterator[PgServer]:
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and os.geteuid() != 0:
        pytest.skip("PostgreSQL is not installed and installing it needs root")
    # PostgreSQL runs as Debian's `postgres` user when we are root: the folder must be one it can reach
    base = Path(tempfile.mkdtemp(prefix="explaunch-pg-", dir="/tmp"))
    base.chmod(0o755)
    env = {
        **os.environ,
        "EXPLAUNCH_MLFLOW_SERVER_DIR": str(base),
        "EXPLAUNCH_PG_PORT": str(free_port()),
        "EXPLAUNCH_MLFLOW_PORT": str(free_port()),
    }
    pg = PgServer(f"http://127.0.0.1:{env['EXPLAUNCH_MLFLOW_PORT']}", env, base)
    up = pg.script("up.sh")
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        assert pg.uri in up.stdout
        yield pg
    finally:
        down = pg.script("down.sh")
        assert down.returncode == 0, down.stderr[-2000:]
        shutil.rmtree(base, ignore_errors=True)


def job_runs(uri: str, sweep_dir: Path) -> dict[str, mlflow.entities.Run]:
    client = mlflow.MlflowClient(uri)
    found = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], max_results=5000):
            if run.data.tags.get("mlflow.parentRunId") and run.data.tags.get("sweep_dir") == str(sweep_dir.resolve()):
                found[run.data.tags["job_num"]] = run
    return found


def test_the_server_runs_on_postgresql_with_its_secret_kept_private(server: PgServer) -> None:
    assert (server.base / "pg" / "data" / "PG_VERSION").exists()
    assert oct((server.base / "db.pass").stat().st_mode & 0o777) == "0o600"
    assert oct((server.base / "pgpass").stat().st_mode & 0o777) == "0o600"
    password = (server.base / "db.pass").read_text().strip()
    listed = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert password not in listed  # no command line holds it
    again = server.script("up.sh")  # a second start starts nothing
    assert again.returncode == 0 and "initdb" not in again.stdout and server.uri in again.stdout


def test_eight_jobs_logging_at_once_land_with_every_metric(server: PgServer, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "experiment_type=probe", "seed=range(8)", "experiment_type.duration_s=0.5", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", f"tracking.uri={server.uri}", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = job_runs(server.uri, sweep)
    assert sorted(runs) == [str(n) for n in range(8)]
    for _, record in records.iter_job_records(sweep):
        run = runs[str(record.job_num)]
        assert run.info.status == "FINISHED"
        assert run.info.run_id == record.tracking["run_id"]
        for name, value in record.metrics.items():
            assert run.data.metrics[name] == pytest.approx(value), name
        assert "job.json" in {a.path for a in mlflow.MlflowClient(server.uri).list_artifacts(run.info.run_id)}

    # the review commands against the server
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri}

    def explaunch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(EXPLAUNCH), *args], env=env, capture_output=True, text=True, timeout=120)

    listed = explaunch("runs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "explaunch" in listed.stdout
    best = explaunch("runs", "best", "explaunch", "--metric", "slept_s", "--mode", "min", "--json")
    assert best.returncode == 0, best.stderr
    a, b = runs["0"].info.run_id, runs["1"].info.run_id
    compared = explaunch("runs", "compare", a, b)
    assert compared.returncode == 0, compared.stderr
    searched = explaunch("runs", "search", "explaunch", "--filter", "tags.job_num = '3'", "--json")
    assert searched.returncode == 0 and runs["3"].info.run_id in searched.stdout, searched.stderr
    downloaded = explaunch("runs", "download", a, "--dest", str(tmp_path / "got"))
    assert downloaded.returncode == 0, downloaded.stderr
    assert json.loads(next((tmp_path / "got").rglob("job.json")).read_text())["job_num"] == 0
    # explaunch clean works on the store itself (not through the server): the PostgreSQL database, its password
    # from the server's libpq password file; a run deleted in the UI is listed by a dry run and removed by --force
    mlflow.MlflowClient(server.uri).delete_run(runs["7"].info.run_id)
    store = f"postgresql://mlflow@127.0.0.1:{server.env['EXPLAUNCH_PG_PORT']}/mlflow"
    env["PGPASSFILE"] = str(server.base / "pgpass")
    dry = explaunch("clean", "--tracking-uri", store, "--json")
    assert dry.returncode == 0, dry.stderr
    assert runs["7"].info.run_id in dry.stdout and runs["6"].info.run_id not in dry.stdout
    assert len(job_runs(server.uri, sweep)) == 7  # a dry run removes nothing (the deleted run is not listed)
    forced = explaunch("clean", "--tracking-uri", store, "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    with pytest.raises(mlflow.exceptions.MlflowException):
        mlflow.MlflowClient(server.uri).get_run(runs["7"].info.run_id)
    assert len(job_runs(server.uri, sweep)) == 7
    assert server.env["EXPLAUNCH_PG_PORT"] not in forced.stdout or "password" not in forced.stdout


def test_a_server_stopped_mid_sweep_loses_no_run(server: PgServer, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "main.py"), "-m", "experiment_type=probe",
         "seed=range(6)", "experiment_type.duration_s=1.5", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
         f"tracking.uri={server.uri}", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(600):
            if len(list(sweep.glob("*/job.json"))) >= 2:
                break
            time.sleep(0.1)
        server.stop_mlflow_only()
        _, stderr = proc.communicate(timeout=600)
    finally:
        proc.kill()
        proc.communicate()
        up = server.script("up.sh")
    assert up.returncode == 0, up.stderr[-2000:]
    assert proc.returncode == 0, stderr[-3000:]  # every job completed
    statuses = {r.job_num: r.status for _, r in records.iter_job_records(sweep)}
    assert statuses == dict.fromkeys(range(6), records.COMPLETED)
    pending = [r.job_num for _, r in records.iter_job_records(sweep) if r.tracking.get("pending")]
    assert pending, "the server was down for the later jobs: their runs wait"
    assert "explaunch sync" in stderr
    synced = subprocess.run(
        [str(EXPLAUNCH), "sync", str(sweep), "--tracking-uri", server.uri], capture_output=True, text=True, timeout=300
    )
    assert synced.returncode == 0, synced.stderr[-2000:]
    runs = job_runs(server.uri, sweep)
    assert sorted(runs) == [str(n) for n in range(6)]  # each job once
    assert all(r.info.status == "FINISHED" for r in runs.values())
