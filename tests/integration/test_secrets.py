"""No secret leaves the process: a real sweep given secrets five ways (a secret-named config key, a swept override of
``password``, an ``${oc.env:...}`` interpolation, an untracked ``.env`` in the code's repository, a tracked config
file edited to hold a password), logged to a real sqlite MLflow store with artifacts, then every file it left and
every dashboard answer searched for them."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from explaunch.review.dashboard.app import STATIC_FILES
from explaunch.review.dashboard.server import start_in_thread
from explaunch.sweepdir import records
from tests.conftest import MAIN
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow

# Made at run time: a literal here would sit in git.patch (the uncommitted test file) of a dirty checkout.
RUN = uuid.uuid4().hex[:12]
KEY_SECRET = f"SEKRIT-1-{RUN}"
OVERRIDE_SECRETS = (f"SEKRIT-2a-{RUN}", f"SEKRIT-2b-{RUN}")
ENV_SECRET = f"SEKRIT-3-{RUN}"
FILE_SECRET = f"SEKRIT-4-{RUN}"
TRACKED_SECRET = f"SEKRIT-5-{RUN}"
SECRETS = (KEY_SECRET, *OVERRIDE_SECRETS, ENV_SECRET, FILE_SECRET, TRACKED_SECRET)


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True
    )


def code_repository(where: Path) -> Path:
    """main.py and conf/ in a repository of their own (the code folder a job's snapshot finds), with an untracked
    ``.env`` and ``id_rsa``, an untracked note and tracked changes: a tracked config file (one this sweep does not
    load) given a password, and a comment in main.py naming the value the sweep reads from the environment."""
    where.mkdir()
    shutil.copy(MAIN, where / "main.py")
    shutil.copytree(MAIN.parent / "conf", where / "conf")
    git(where, "init", "-q", "-b", "main")
    git(where, "add", ".")
    git(where, "commit", "-q", "-m", "code")
    (where / ".env").write_text(f"DB_PASSWORD={FILE_SECRET}\n")
    (where / "id_rsa").write_text(f"-----BEGIN KEY-----\n{FILE_SECRET}\n")
    (where / "notes.txt").write_text("an untracked note\n")
    (where / "main.py").write_text((where / "main.py").read_text() + f"# a tracked change; the db: {ENV_SECRET}\n")
    tracked = where / "conf" / "tracking" / "none.yaml"
    tracked.write_text(tracked.read_text() + f"password: {TRACKED_SECRET}\n")
    return where


def leaks(folder: Path) -> list[str]:
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path}: {secret}" for secret in SECRETS if secret.encode() in data]
    return found


def get(port: int, path: str, token: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"token {token}"} if token else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    tmp_path = tmp_path_factory.mktemp("secrets")
    code = code_repository(tmp_path / "code")
    work, sweep_dir = tmp_path / "work", tmp_path / "work" / "sweep"
    (work / "store").mkdir(parents=True)
    proc = run_main(
        "-m",
        "experiment_type=probe",
        "experiment_type.duration_s=0.05",
        f"+params.api_token={KEY_SECRET}",
        f"+params.password={','.join(OVERRIDE_SECRETS)}",
        "+params.db=${oc.env:EXPLAUNCH_TEST_DB_PASSWORD}",
        "+params.db_url=postgres://app:${params.db}@db.example.org/x",
        f"tracking.uri=sqlite:///{work / 'store' / 'mlflow.db'}",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=work,
        env={"EXPLAUNCH_TEST_DB_PASSWORD": ENV_SECRET, "EXPLAUNCH_PATCH_UNTRACKED": "1"},
        main=code / "main.py",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, sweep_dir, proc.stdout + proc.stderr


def test_no_secret_is_in_any_file_of_the_sweep_or_the_store_or_its_log(sweep: tuple[Path, Path, str]) -> None:
    work, sweep_dir, output = sweep
    assert [s for s in SECRETS if s in output] == []  # the sweep's own log lines show overrides redacted
    assert len(list(sweep_dir.glob(f"*/{records.JOB_FILE}"))) == 2
    assert (work / "store" / "mlflow.db").is_file()
    artifacts = [p for p in work.rglob("*") if p.is_file() and "artifacts" in p.parts]
    assert any(p.name == "config.yaml" for p in artifacts), "the .hydra/ files were uploaded"
    assert leaks(work) == []
    record = json.loads((sweep_dir / "0" / records.JOB_FILE).read_text())
    assert record["config"]["params"]["api_token"] == "<redacted>"
    assert record["config"]["params"]["db"] == "<redacted>"
    assert record["config"]["params"]["db_url"] == "postgres://db.example.org/x"  # credentials in a URL stripped
    patch = (sweep_dir / "0" / "git.patch").read_text()
    assert "a tracked change" in patch and "an untracked note" in patch  # untracked files asked for, not credentials
    assert "+password: <redacted>\n" in patch and "+# a tracked change; the db: <redacted>\n" in patch
    config = (sweep_dir / "0" / ".hydra" / "config.yaml").read_text()
    assert "db: ${oc.env:EXPLAUNCH_TEST_DB_PASSWORD}" in config  # kept as written: a rerun reads the variable again
    assert "api_token: <redacted>" in config
    assert "db_url: postgres://app:${params.db}@db.example.org/x" in config


def test_no_dashboard_answer_holds_a_secret(sweep: tuple[Path, Path, str]) -> None:
    """Every route the app serves (review/dashboard/app.py): the page and its static files, the sweep's state with
    each metric and parameter chosen, the trade-off view with each choice, every file; for the sweep folder and for
    its parent (a folder of sweeps, here with the store and its artifacts beside them)."""
    work, sweep_dir, _output = sweep
    for root, chosen in ((sweep_dir, ""), (work, "sweep=sweep&")):
        dashboard = start_in_thread(root)
        try:
            assert get(dashboard.port, f"/api/sweep?{chosen}", None)[0] == 403
            state = json.loads(get(dashboard.port, f"/api/sweep?{chosen}", dashboard.token)[1])
            metrics = state["metrics"][:3]
            assert len(metrics) >= 2, state  # two to set against each other in the trade-off view
            paths = ["/", *(f"/static/{name}" for name in STATIC_FILES), "/api/sweeps", f"/api/tradeoff?{chosen}"]
            paths += [f"/api/sweep?{chosen}metric={quote(m)}&param={quote(p)}"
                      for m in metrics for p in (*state["params"], "+params.password")]  # fmt: skip
            paths += [f"/api/tradeoff?{chosen}x={quote(x)}&y={quote(y)}&better_x=max&better_y=min"
                      for x in metrics for y in metrics if x != y]  # fmt: skip
            paths += [f"/files/{quote(str(p.relative_to(root)))}" for p in root.rglob("*") if p.is_file()]
            for path in paths:
                status, body = get(dashboard.port, path, dashboard.token)
                assert status in (200, 404), (path, status)
                assert not [s for s in SECRETS if s.encode() in body], path
                assert dashboard.token.encode() not in body, path
        finally:
            dashboard.stop()


def test_reproduce_asks_for_literal_secrets_reads_the_environment_again_and_archives_none(
    sweep: tuple[Path, Path, str], tmp_path: Path
) -> None:
    work, sweep_dir, _output = sweep
    explaunch = [sys.executable, "-m", "explaunch", "reproduce", str(sweep_dir / "0")]
    env = {**os.environ, "EXPLAUNCH_TEST_DB_PASSWORD": ENV_SECRET, "MLFLOW_DISABLE_TELEMETRY": "true"}
    refused = subprocess.run([*explaunch, "--out", str(tmp_path / "a")], env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "its value was redacted" in refused.stderr, refused.stderr
    given = ["--override", "+params.api_token=again-1", "--override", "+params.password=again-2"]
    rerun = subprocess.run(
        [*explaunch, *given, "--out", str(tmp_path / "b")], env=env, capture_output=True, text=True, cwd=work
    )
    assert rerun.returncode in (0, 1), rerun.stderr[-3000:]  # REPRODUCED or DIFFERS (a probe's timings): it ran
    assert json.loads((tmp_path / "b" / records.JOB_FILE).read_text())["status"] == records.COMPLETED
    assert "db: ${oc.env:EXPLAUNCH_TEST_DB_PASSWORD}" in (tmp_path / "b" / ".hydra" / "config.yaml").read_text()
    archive = tmp_path / "job.tar.gz"
    packed = subprocess.run([*explaunch, "--archive", str(archive)], env=env, capture_output=True, text=True)
    assert packed.returncode == 0, packed.stderr[-3000:]
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            assert not [s for s in SECRETS if s.encode() in data], member.name
    assert leaks(tmp_path) == []


def test_a_single_run_rewrites_hydras_own_files_redacted(tmp_path: Path) -> None:
    """Hydra's own ``run_job`` (single runs, SLURM) writes ``.hydra/`` before any hook; the job start rewrites it."""
    out = tmp_path / "run"
    proc = run_main(
        "experiment_type=probe",
        "experiment_type.duration_s=0.05",
        f"+params.api_token={KEY_SECRET}",
        f"+params.password={OVERRIDE_SECRETS[0]}",
        "tracking=none",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / ".hydra" / "hydra.yaml").is_file() and (out / records.JOB_FILE).is_file()
    assert "+params.password=<redacted>" in (out / ".hydra" / "overrides.yaml").read_text()
    assert leaks(tmp_path) == []


@pytest.mark.parametrize("launcher", ["basic", "joblib", "explaunch_local"])
def test_hydras_launchers_log_the_jobs_overrides_redacted(launcher: str, tmp_path: Path) -> None:
    """Hydra's launchers (and explaunch's) log each job's overrides ("#0 : ...") to the console and to the job's log
    file, after configuring logging themselves: the lines come out redacted all the same."""
    proc = run_main(
        "-m", "experiment_type=probe", "experiment_type.duration_s=0", "seed=0,1", "tracking=none",
        f"hydra/launcher={launcher}", f"+params.api_token={KEY_SECRET}", "+params.note=${oc.env:EXPLAUNCH_TEST_SECRET}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, env={"EXPLAUNCH_TEST_SECRET": ENV_SECRET},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert "#0 : " in console and "+params.api_token=<redacted>" in console
    assert not [s for s in SECRETS if s in console]
    assert leaks(tmp_path) == []
