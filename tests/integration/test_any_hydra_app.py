"""Any Hydra app gets explaunch's records, MLflow runs, retries and resume from its config alone: the example app
(examples/any_hydra_app) run as a user runs it, ``python app.py -m ...`` in a temp working dir, against a real
sqlite MLflow store. Its recording is checked first under Hydra's basic sweeper (the callbacks alone), then under
explaunch's sweeper, which the app's own config chooses."""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import yaml

from explaunch.sweepdir import records
from explaunch.sweepdir.ledger import Ledger
from tests.conftest import ROOT
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow

APP_DIR = ROOT / "examples" / "any_hydra_app"
APP = APP_DIR / "app.py"
RETURNED = ("loss", "accuracy", "weights.norm", "weights.bias")  # the app returns {"weights": {"norm", "bias"}}
SECRET = f"sekrit-{uuid.uuid4().hex}"  # made at run time: a literal would sit in git.patch of a dirty checkout


@dataclass(frozen=True)
class AppSweep:
    cwd: Path
    dir: Path
    proc: subprocess.CompletedProcess[str]

    @property
    def store(self) -> str:
        return f"sqlite:///{self.cwd / 'store' / 'mlflow.db'}"

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr


def run_app(cwd: Path, *args: str, sweep: str = "sweep") -> AppSweep:
    """``python <repo>/examples/any_hydra_app/app.py ARGS`` from ``cwd`` (not the app's folder), its MLflow store
    given by ``MLFLOW_TRACKING_URI``, as the acceptance check runs it."""
    (cwd / "store").mkdir(parents=True, exist_ok=True)
    sweep_dir = cwd / sweep
    done = AppSweep(cwd, sweep_dir, subprocess.CompletedProcess([], 0))
    proc = run_main(
        *args, f"hydra.sweep.dir={sweep_dir}", cwd=cwd, main=APP, env={"MLFLOW_TRACKING_URI": done.store}, timeout=300
    )
    return AppSweep(cwd, sweep_dir, proc)


def basic_sweeper_config(where: Path) -> Path:
    """The app's config with Hydra's basic sweeper instead of explaunch's (whose settings it then cannot hold):
    the recording callbacks alone, as any app with any sweeper gets them. Used with ``--config-dir``."""
    config = yaml.safe_load((APP_DIR / "conf" / "config.yaml").read_text())
    swap = {"override hydra/sweeper": "basic"}
    config["defaults"] = [swap if "override hydra/sweeper" in entry else entry for entry in config["defaults"]]
    config["hydra"].pop("sweeper")
    where.mkdir(parents=True, exist_ok=True)
    (where / "basic_sweeper.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return where


def runs_of(store: str) -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient(store)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id], max_results=1000)]


def job_runs(store: str) -> list[mlflow.entities.Run]:
    return [r for r in runs_of(store) if "mlflow.parentRunId" in r.data.tags]


def files_holding(folder: Path, text: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory: pytest.TempPathFactory) -> AppSweep:
    """Two jobs under Hydra's basic sweeper, a secret given on the command line."""
    cwd = tmp_path_factory.mktemp("basic")
    conf = basic_sweeper_config(cwd / "variant")
    done = run_app(
        cwd,
        "--config-dir", str(conf), "--config-name", "basic_sweeper",
        "-m", "+explaunch_accept=1,2", f"+db_password={SECRET}",
    )  # fmt: skip
    assert done.proc.returncode == 0, done.output[-3000:]
    return done


@pytest.fixture(scope="module")
def app_sweep(tmp_path_factory: pytest.TempPathFactory) -> AppSweep:
    """The acceptance command: the app's own config (explaunch's sweeper), two jobs."""
    done = run_app(tmp_path_factory.mktemp("explaunch"), "-m", "+explaunch_accept=1,2")
    assert done.proc.returncode == 0, done.output[-3000:]
    return done


# ---- the callbacks under Hydra's basic sweeper ----------------------------------------------------------------
def test_each_job_leaves_a_complete_record_in_its_folder(basic_sweep: AppSweep) -> None:
    found = records.iter_job_records(basic_sweep.dir)
    assert [(r.job_num, r.status, r.overrides) for _, r in found] == [
        (0, "completed", ["+explaunch_accept=1", "+db_password=<redacted>"]),
        (1, "completed", ["+explaunch_accept=2", "+db_password=<redacted>"]),
    ]
    for job_dir, record in records.iter_job_records(basic_sweep.dir):
        assert record.callback_errors == []
        assert record.config == {
            "lr": 0.1, "epochs": 30, "samples": 200, "seed": 0, "flaky_attempts": 0,
            "explaunch_accept": 1 + (record.job_num or 0), "db_password": "<redacted>",
        }  # fmt: skip
        assert record.config_hash and record.duration_s > 0 and record.error is None
        assert set(RETURNED) <= set(record.metrics) and 0.5 < record.metrics["accuracy"] <= 1.0
        assert record.snapshot["git"]["commit"] and record.env_hash
        assert record.snapshot["code_dir"] == str(APP_DIR)
        assert (job_dir / "resources.csv").read_text().count("\n") >= 2 and record.resources["samples"] >= 1
        assert record.energy["region"].startswith("the whole job")
        assert record.energy["quality"] in ("ok", "low") and "quality_reasons" in record.energy
        for component in record.energy["components"].values():
            assert component["source"] in ("counter", "sampled", "modelled")
            assert component["scope"] in ("devices", "process", "machine", "apportioned")
        assert record.metrics["job_energy_joules"] == pytest.approx(record.energy["joules"])


def test_each_job_is_one_mlflow_run_nested_under_one_sweep_run(basic_sweep: AppSweep) -> None:
    client = mlflow.MlflowClient(basic_sweep.store)
    assert "any_hydra_app" in [e.name for e in client.search_experiments()]  # besides MLflow's "Default"
    runs = runs_of(basic_sweep.store)
    children = job_runs(basic_sweep.store)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(children) == 2 and len(parents) == 1
    parent = parents[0]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_completed"] == 2
    by_job = {r.data.tags["job_num"]: r for r in children}
    for _, record in records.iter_job_records(basic_sweep.dir):
        run = by_job[str(record.job_num)]
        assert record.tracking["run_id"] == run.info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "COMPLETED"
        assert run.data.params["lr"] == "0.1"
        assert run.data.params["explaunch_accept"] == str(record.config["explaunch_accept"])
        assert run.data.params["db_password"] == "<redacted>"
        for name in (*RETURNED, "job_energy_joules", "resources_peak_rss_mib"):
            assert run.data.metrics[name] == pytest.approx(record.metrics[name]), name
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"job.json", ".hydra", "resources.csv", "emissions.csv", "app.log"} <= artifacts


def test_the_sweep_record_lists_every_job(basic_sweep: AppSweep) -> None:
    sweep = records.read_sweep_record(basic_sweep.dir)
    assert sweep.counts == {"completed": 2} and [row.job_dir for row in sweep.jobs] == ["0", "1"]


def test_no_secret_is_in_the_sweep_folder_the_store_or_the_log(basic_sweep: AppSweep) -> None:
    assert files_holding(basic_sweep.dir, SECRET) == []
    assert files_holding(basic_sweep.cwd / "store", SECRET) == []
    assert SECRET not in basic_sweep.output


def test_a_failing_job_is_recorded_failed_with_its_error(tmp_path: Path) -> None:
    conf = basic_sweeper_config(tmp_path / "variant")
    done = run_app(tmp_path, "--config-dir", str(conf), "--config-name", "basic_sweeper", "-m", "flaky_attempts=0,5")
    assert done.proc.returncode == 1  # Hydra's basic sweeper: a failed job fails the sweep
    failed = records.read_job_record(done.dir / "1")
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.type == "ConnectionError" and "OSError" in failed.error.bases
    assert "flaky: attempt 1 of 5" in failed.error.message and failed.metrics.get("loss") is None
    assert "ConnectionError" in (done.dir / "1" / records.TRACEBACK_FILE).read_text()
    assert records.read_job_record(done.dir / "0").status == "completed"
    statuses = {r.data.tags["job_num"]: (r.info.status, r.data.tags["status"]) for r in job_runs(done.store)}
    assert statuses == {"0": ("FINISHED", "COMPLETED"), "1": ("FAILED", "FAILED")}


def test_arguments_turn_tracking_energy_and_resources_off(tmp_path: Path) -> None:
    conf = basic_sweeper_config(tmp_path / "variant")
    off = ("tracking=none", "energy=false", "resources=false")
    done = run_app(
        tmp_path, "--config-dir", str(conf), "--config-name", "basic_sweeper", "-m", "seed=1",
        *(f"hydra.callbacks.recording.{setting}" for setting in off),
    )  # fmt: skip
    assert done.proc.returncode == 0, done.output[-3000:]
    record = records.read_job_record(done.dir / "0")
    assert record.status == "completed" and set(RETURNED) <= set(record.metrics)
    assert record.energy == {} and record.resources == {} and record.tracking == {"backend": "none"}
    assert not (done.dir / "0" / "resources.csv").exists() and not (done.dir / "0" / "emissions.csv").exists()
    assert list((tmp_path / "store").iterdir()) == []  # no store was created


def test_a_bad_argument_is_one_line_naming_it_and_nothing_runs(tmp_path: Path) -> None:
    done = run_app(tmp_path, "-m", "hydra.callbacks.recording.energy=maybe")
    assert done.proc.returncode != 0
    assert "hydra.callbacks.recording.energy=maybe: must be true or false" in done.proc.stderr
    assert "Traceback" not in done.proc.stderr and not done.dir.exists()


# ---- the app's own config: explaunch's sweeper ------------------------------------------------------------------
def test_acceptance_two_records_and_two_nested_runs(app_sweep: AppSweep) -> None:
    assert len(list(app_sweep.dir.rglob("job.json"))) == 2
    children = job_runs(app_sweep.store)
    assert len(children) == 2 and all(r.data.tags["mlflow.parentRunId"] for r in children)
    for _, record in records.iter_job_records(app_sweep.dir):
        assert record.status == "completed" and record.callback_errors == []
        run = next(r for r in children if r.info.run_id == record.tracking["run_id"])
        for name in RETURNED:
            assert run.data.metrics[name] == pytest.approx(record.metrics[name]), name
    sweep = json.loads((app_sweep.dir / records.SWEEP_FILE).read_text())
    assert sweep["counts"] == {"completed": 2}


def test_a_rerun_into_a_finished_sweep_runs_nothing_again(app_sweep: AppSweep) -> None:
    before = {p: p.stat().st_mtime_ns for p in app_sweep.dir.rglob("job.json")}
    ledger = Ledger(app_sweep.dir).path.read_text()
    again = run_app(app_sweep.cwd, "-m", "+explaunch_accept=1,2")
    assert again.proc.returncode == 0, again.output[-3000:]
    assert {p: p.stat().st_mtime_ns for p in app_sweep.dir.rglob("job.json")} == before
    assert Ledger(app_sweep.dir).path.read_text() == ledger  # no job ran, none was recorded again
    assert len(job_runs(app_sweep.store)) == 2


def test_a_flaky_job_is_retried_and_completes(tmp_path: Path) -> None:
    done = run_app(tmp_path, "-m", "flaky_attempts=1", "seed=0,1")  # the app's config: max_retries 2
    assert done.proc.returncode == 0, done.output[-3000:]
    for _, record in records.iter_job_records(done.dir):
        assert record.status == "completed" and set(RETURNED) <= set(record.metrics)
        (earlier,) = record.attempts
        assert earlier["error_type"] == "ConnectionError" and earlier["files"] == "attempts/1"
    completed = [r for r in job_runs(done.store) if r.data.tags["status"] == "COMPLETED"]
    assert sorted(r.data.tags["job_num"] for r in completed) == ["0", "1"]


def test_a_rerun_runs_only_the_jobs_not_completed(tmp_path: Path) -> None:
    args = ("-m", "flaky_attempts=0,1", "hydra.sweeper.max_retries=0")  # job 1 fails on its first attempt
    first = run_app(tmp_path, *args)
    assert first.proc.returncode == 1
    assert {r.job_num: r.status for _, r in records.iter_job_records(first.dir)} == {0: "completed", 1: "failed"}
    kept = (first.dir / "0" / records.JOB_FILE).stat().st_mtime_ns
    again = run_app(tmp_path, *args)
    assert again.proc.returncode == 0, again.output[-3000:]
    assert {r.job_num: r.status for _, r in records.iter_job_records(first.dir)} == {0: "completed", 1: "completed"}
    assert (first.dir / "0" / records.JOB_FILE).stat().st_mtime_ns == kept  # job 0 did not run again
    completed = [r for r in job_runs(first.store) if r.data.tags["status"] == "COMPLETED"]
    assert sorted(r.data.tags["job_num"] for r in completed) == ["0", "1"]
