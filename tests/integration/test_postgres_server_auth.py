"""The shared server with MLflow's basic-auth app (``make mlflow-server-up AUTH=1``): its secrets are generated and
kept private, jobs authenticate with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD from the environment, wrong
or missing credentials stop a sweep with one line before any job, and the password is written nowhere: not in the
sweep folder, not in the store's params, tags or artifacts."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from explaunch.sweepdir import records
from tests.integration.helpers import run_main
from tests.integration.test_mlflow_ui import free_port
from tests.integration.test_postgres_server import PgServer, job_runs

pytestmark = pytest.mark.slow
USER = "admin"


@pytest.fixture(scope="module")
def server() -> Iterator[PgServer]:
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and os.geteuid() != 0:
        pytest.skip("PostgreSQL is not installed and installing it needs root")
    base = Path(tempfile.mkdtemp(prefix="explaunch-pg-auth-", dir="/tmp"))
    base.chmod(0o755)  # PostgreSQL runs as Debian's `postgres` user when we are root: it must reach the folder
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")},
        "EXPLAUNCH_MLFLOW_SERVER_DIR": str(base),
        "EXPLAUNCH_PG_PORT": str(free_port()),
        "EXPLAUNCH_MLFLOW_PORT": str(free_port()),
        "EXPLAUNCH_MLFLOW_AUTH": "1",
    }
    pg = PgServer(f"http://127.0.0.1:{env['EXPLAUNCH_MLFLOW_PORT']}", env, base)
    up = pg.script("up.sh")
    try:
        assert up.returncode == 0, up.stderr[-3000:] + up.stdout[-2000:]
        assert pg.uri in up.stdout
        assert f"MLFLOW_TRACKING_USERNAME={USER}" in up.stdout and str(base / "auth" / "admin.pass") in up.stdout
        assert password(pg) not in up.stdout + up.stderr  # it says where the password is, not what it is
        warm_up(pg)
        yield pg
    finally:
        down = pg.script("down.sh")
        assert down.returncode == 0, down.stderr[-2000:]
        shutil.rmtree(base, ignore_errors=True)


def warm_up(server: PgServer) -> None:
    """Authenticated requests, unhurried, enough to reach each of the server's workers: a worker's first one imports
    and opens what the auth app needs, which on a busy machine takes longer than the store check waits (5 s)."""
    import base64

    token = base64.b64encode(f"{USER}:{password(server)}".encode()).decode()
    request = urllib.request.Request(
        f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Authorization": f"Basic {token}"}
    )
    for _ in range(12):
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.status == 200


def password(server: PgServer) -> str:
    return (server.base / "auth" / "admin.pass").read_text().strip()


def credentials(server: PgServer, secret: str | None = None) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": secret or password(server)}


def test_the_auth_server_keeps_its_secrets_private_and_wants_credentials(server: PgServer) -> None:
    auth = server.base / "auth"
    assert oct(auth.stat().st_mode & 0o777) == "0o700"
    for name in ("admin.pass", "flask.secret", "basic_auth.ini"):
        assert oct((auth / name).stat().st_mode & 0o777) == "0o600", name
    assert (auth / "basic_auth.db").is_file()  # the users, in the server folder
    listed = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert "--app-name basic-auth" in listed and password(server) not in listed  # no command line holds it
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=20)
    assert refused.value.code == 401
    refused.value.close()
    again = server.script("up.sh")  # a second start starts nothing, and keeps the password
    assert again.returncode == 0 and "restarting" not in again.stdout and server.uri in again.stdout
    assert (auth / "admin.pass").read_text().strip() == password(server)


def test_a_sweep_logs_with_credentials_from_the_environment_and_writes_the_password_nowhere(
    server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = password(server)
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "experiment_type=probe", "seed=0,1", "hydra.launcher.n_jobs=2", f"tracking.uri={server.uri}",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path, env=credentials(server),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert secret not in proc.stdout + proc.stderr
    for key, value in credentials(server).items():
        monkeypatch.setenv(key, value)
    runs = job_runs(server.uri, sweep)
    assert sorted(runs) == ["0", "1"]
    statuses = {r.job_num: r.status for _, r in records.iter_job_records(sweep)}
    assert statuses == {0: records.COMPLETED, 1: records.COMPLETED}

    # the sweep folder: records, multirun.yaml, .hydra/*, logs, everything
    files = [p for p in sweep.rglob("*") if p.is_file()]
    assert {"job.json", "multirun.yaml", "config.yaml", "overrides.yaml"} <= {p.name for p in files}
    assert any(p.suffix == ".log" for p in files)
    leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
    assert not leaked, leaked
    # the store: every run's params and tags (the jobs' and the sweep's), and the job records logged as artifacts
    client = mlflow.MlflowClient(server.uri)
    parent = runs["0"].data.tags["mlflow.parentRunId"]
    for run in [*runs.values(), client.get_run(parent)]:
        values = [*run.data.params.values(), *run.data.tags.values(), *run.data.params, *run.data.tags]
        assert not [v for v in values if secret in v], run.info.run_id
    got = Path(
        mlflow.artifacts.download_artifacts(
            run_id=runs["1"].info.run_id, dst_path=str(tmp_path / "got"), tracking_uri=server.uri
        )
    )
    logged = [p for p in got.rglob("*") if p.is_file()]
    assert any(p.name == "job.json" for p in logged)
    assert not [str(p) for p in logged if secret.encode() in p.read_bytes()]


@pytest.mark.parametrize("given", ["wrong", "none"])
def test_wrong_or_missing_credentials_stop_the_sweep_with_one_line(
    server: PgServer, tmp_path: Path, given: str
) -> None:
    wrong = "not-the-password-" + "x" * 8
    env = credentials(server, wrong) if given == "wrong" else {}
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "experiment_type=probe", "seed=0,1", f"tracking.uri={server.uri}", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "HTTP 401" in lines[0] and "MLFLOW_TRACKING_USERNAME" in lines[0]
    if given == "wrong":
        assert f"wrong credentials for MLFLOW_TRACKING_USERNAME={USER}" in lines[0]
    assert wrong not in proc.stdout + proc.stderr and password(server) not in proc.stdout + proc.stderr
    assert not sweep.exists()  # before any job
