"""explaunch's sweeper in any Hydra app: only explaunch's own app is held to its schema; another app's jobs are known
by their task config, recorded from what the launcher returned where they wrote no record, and come back from
``sweep()`` as Hydra's basic sweeper returns them. The sweeps here run in this process on Hydra's own test app
(``hydra.test_utils.a_module``: ``foo``, ``bar`` from ``group1``/``group2``) with the basic launcher."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import ConfigCompositionException
from hydra.test_utils.test_utils import SweepTaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from explaunch.config import is_explaunch_config, task_config_hash
from explaunch.errors import ConfigError
from explaunch.job.jobrun import ComposedJobReturn
from explaunch.launch.composition import JobComposer
from explaunch.launch.lost import RECORDED_FROM_RETURN, record_from_return, task_ran
from explaunch.launch.plan import program_fingerprint
from explaunch.launch.settings import Job
from explaunch.launch.sweeper import SweepRunner
from explaunch.sweepdir import records
from explaunch.sweepdir.ledger import Ledger, LedgerEntry
from tests.conftest import CONF_DIR

pytestmark = pytest.mark.usefixtures("hydra_restore_singletons")


def sweep_of(
    tmp_path: Path, task: Callable[[DictConfig], Any] | None, *overrides: str, launcher: str = "basic"
) -> SweepTaskFunction:
    """``python a_module.py -m hydra/sweeper=explaunch hydra/launcher=basic OVERRIDES`` in this process; the sweep
    folder is ``tmp_path/sweep``. ``hydra.job.chdir=false``: the test app sets no version_base (Hydra 1.1's)."""
    sweep = SweepTaskFunction()
    sweep.calling_module = "hydra.test_utils.a_module"
    sweep.config_path = "configs"
    sweep.config_name = "compose"
    sweep.task_function = task
    sweep.overrides = ["hydra/sweeper=explaunch", f"hydra/launcher={launcher}", "hydra.job.chdir=false", *overrides]
    sweep.temp_dir = str(tmp_path / "sweep")
    return sweep


# ---- which app ---------------------------------------------------------------------------------------------------
def test_explaunch_app_is_told_from_any_other_app() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        assert is_explaunch_config(compose("config", return_hydra_config=True))
        assert is_explaunch_config(compose("config", overrides=["experiment_type=probe", "seed=3"]))
    GlobalHydra.instance().clear()
    with initialize_config_module("hydra.test_utils.configs", version_base="1.3"):
        assert not is_explaunch_config(compose("compose", return_hydra_config=True))
    assert not is_explaunch_config(OmegaConf.create({"seed": 0, "batch": 8}))
    assert not is_explaunch_config({"seed": 0})


# ---- a job's identity --------------------------------------------------------------------------------------------
def test_another_apps_job_is_known_by_its_resolved_task_config_without_hydra() -> None:
    given = OmegaConf.create({"a": 1, "b": "${a}", "hydra": {"job": {"num": 3}}})
    again = OmegaConf.create({"a": 1, "b": "${a}", "hydra": {"job": {"num": 7}}})
    literal = OmegaConf.create({"a": 1, "b": 1})
    assert task_config_hash(given) == task_config_hash(again) == task_config_hash(literal)
    assert task_config_hash(given) != task_config_hash(OmegaConf.create({"a": 2, "b": "${a}"}))


def test_a_value_that_resolves_only_in_the_job_counts_as_written() -> None:
    """``${hydra.job.num}`` has no ``hydra`` node to resolve against once it is dropped; a missing value is ``???``."""
    one = OmegaConf.create({"out": "run_${hydra.job.num}", "later": "???", "hydra": {"job": {"num": 0}}})
    two = OmegaConf.create({"out": "run_${hydra.job.num}", "later": "???", "hydra": {"job": {"num": 1}}})
    assert task_config_hash(one) == task_config_hash(two)
    assert task_config_hash(one) != task_config_hash(OmegaConf.create({"out": "run_0", "later": "???"}))


# ---- composition errors ------------------------------------------------------------------------------------------
def test_another_apps_bad_key_raises_hydras_own_error_ours_one_line() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_module("hydra.test_utils.configs", version_base="1.3"):
        loader: Any = GlobalHydra.instance().config_loader()
        master = compose("compose", return_hydra_config=True)

        def composer(one_line: bool) -> JobComposer:
            return JobComposer(lambda o: loader.load_sweep_config(master, o), loader, one_line_errors=one_line)

        assert composer(False)(["bar=5"]).bar == 5
        with pytest.raises(ConfigCompositionException, match="Could not override 'boo'"):
            composer(False)(["boo=bar"])
        with pytest.raises(ConfigError, match="boo"):
            composer(True)(["boo=bar"])


# ---- records from the launcher's JobReturn -----------------------------------------------------------------------
def job_of(overrides: list[str]) -> Job:
    cfg = OmegaConf.create({"lr": 0.1, "hydra": {"job": {"num": 0}}})
    return Job(0, overrides, "k", cfg, num=0, overrides=overrides)


def test_a_completed_task_is_recorded_with_the_numbers_it_returned_as_metrics(tmp_path: Path) -> None:
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("[]")
    returned = JobReturn(status=JobStatus.COMPLETED, task_name="app", _return_value={"loss": 0.5, "name": "a"})
    assert task_ran(returned)
    record = record_from_return(job_of(["lr=0.1"]), returned, tmp_path, "k", launched=0.0)
    assert record.status == "completed" and record.error is None and record.config == {"lr": 0.1}
    assert record.metrics == {"loss": 0.5} and record.config_hash == "k" and record.job_num == 0
    assert record.info == {"recorded_by": RECORDED_FROM_RETURN}
    assert 0 <= record.duration_s < 60  # from its .hydra files, not from `launched` (the epoch)


def test_a_failed_task_is_recorded_with_its_error_and_traceback(tmp_path: Path) -> None:
    try:
        raise ConnectionError("flaky network\nsecond line")
    except ConnectionError as ex:
        error = ex
    returned = JobReturn(status=JobStatus.FAILED, task_name="app", _return_value=error)
    record = record_from_return(job_of([]), returned, tmp_path, "k", launched=0.0)
    assert record.status == "failed" and record.metrics == {} and record.error is not None
    assert (record.error.type, record.error.message) == ("ConnectionError", "flaky network")
    assert "OSError" in record.error.bases  # what hydra.sweeper.retry_on matches
    assert "raise ConnectionError" in (tmp_path / records.TRACEBACK_FILE).read_text()


def test_a_launchers_word_that_a_job_left_no_result_is_not_a_task_that_ran() -> None:
    """explaunch's submitit launchers return such a JobReturn for a job SLURM ended: the sweep records it lost."""
    assert not task_ran(JobReturn(overrides=[], status=JobStatus.FAILED, _return_value=RuntimeError("TIMEOUT")))


def test_a_program_is_told_by_its_task_functions_file() -> None:
    mine = program_fingerprint(test_a_program_is_told_by_its_task_functions_file)
    assert mine == hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    assert mine == program_fingerprint(sweep_of)  # another function of the same file
    assert program_fingerprint(SweepRunner.run) not in (mine, None)
    assert program_fingerprint(SweepTaskFunction()) not in (mine, None)  # a callable object: its class's file
    assert program_fingerprint(len) is None


# ---- sweeps of another app ---------------------------------------------------------------------------------------
def test_returns_come_in_batches_of_max_batch_size_in_job_order(tmp_path: Path) -> None:
    with sweep_of(tmp_path, lambda cfg: cfg.bar, "bar=1,2,3", "hydra.sweeper.max_batch_size=2") as sweep:
        assert sweep.returns is not None
        assert [[r.return_value for r in batch] for batch in sweep.returns] == [[1, 2], [3]]
        assert [r.overrides for batch in sweep.returns for r in batch] == [["bar=1"], ["bar=2"], ["bar=3"]]
        assert all(r.cfg == {"foo": 10, "bar": r.return_value} for b in sweep.returns for r in b)
    with sweep_of(tmp_path / "one", lambda cfg: cfg.bar, "bar=1,2,3") as sweep:
        assert sweep.returns is not None and [len(b) for b in sweep.returns] == [3]


@pytest.mark.parametrize("workers", [1, 2])
def test_joblib_returns_the_configs_of_each_job(tmp_path: Path, workers: int) -> None:
    """One worker: joblib runs the jobs in this process; two: in worker processes, which send no configs back."""
    overrides = ("bar=1,2", f"hydra.launcher.n_jobs={workers}")
    with sweep_of(tmp_path, lambda cfg: cfg.bar, *overrides, launcher="joblib") as sweep:
        assert sweep.returns is not None
        (batch,) = sweep.returns
        assert [r.cfg for r in batch] == [{"foo": 10, "bar": 1}, {"foo": 10, "bar": 2}]
        assert [r.hydra_cfg.hydra.job.id for r in batch] == ["a_module_0", "a_module_1"]
        assert [r.return_value for r in batch] == [1, 2]


def test_jobs_without_a_record_are_recorded_from_their_return_and_retried(tmp_path: Path) -> None:
    calls: list[int] = []

    def flaky(cfg: DictConfig) -> dict[str, float]:
        calls.append(cfg.bar)
        if cfg.bar == 2 and calls.count(2) == 1:
            raise ConnectionError("flaky: first attempt")
        return {"score": cfg.bar * 10.0}

    overrides = ("bar=1,2", "hydra.sweeper.max_retries=1", "hydra.sweeper.backoff_s=0")
    with sweep_of(tmp_path, flaky, *overrides) as sweep:
        folder = Path(str(sweep.temp_dir))
        assert sweep.returns is not None
        assert [r.return_value for r in sweep.returns[0]] == [{"score": 10.0}, {"score": 20.0}]
        second = records.read_job_record(folder / "1")
        assert second.status == "completed" and second.metrics == {"score": 20.0}
        assert second.info["recorded_by"] == RECORDED_FROM_RETURN
        (earlier,) = second.attempts
        assert earlier["error_type"] == "ConnectionError" and (folder / "1" / "attempts" / "1" / "record.json").exists()
        assert records.read_sweep_record(folder).counts == {"completed": 2}
        assert calls == [1, 2, 2]
        # a rerun of the same program into the finished folder runs nothing, as in explaunch's app
        with sweep_of(tmp_path, flaky, *overrides) as again:
            assert again.returns == [] and calls == [1, 2, 2]


def test_a_failed_job_fails_the_sweep_and_a_rerun_runs_only_it(tmp_path: Path) -> None:
    broken = {"on": True}

    def task(cfg: DictConfig) -> int:
        if cfg.bar == 2 and broken["on"]:
            raise ValueError("bad bar")
        return int(cfg.bar)

    with pytest.raises(SystemExit) as ended, sweep_of(tmp_path, task, "bar=1,2"):
        pass
    assert ended.value.code == 1
    folder = tmp_path / "sweep"
    failed = records.read_job_record(folder / "1")
    assert failed.status == "failed" and failed.error is not None and failed.error.type == "ValueError"
    kept = (folder / "0" / records.JOB_FILE).stat().st_mtime_ns
    broken["on"] = False
    with sweep_of(tmp_path, task, "bar=1,2") as again:
        assert again.returns is not None and [r.return_value for r in again.returns[0]] == [2]
        assert (folder / "0" / records.JOB_FILE).stat().st_mtime_ns == kept
        assert records.read_job_record(folder / "1").status == "completed"


def test_another_program_rerun_into_a_finished_folder_runs_every_job_again(tmp_path: Path) -> None:
    with sweep_of(tmp_path, lambda cfg: 1, "bar=1,2") as first:
        folder = Path(str(first.temp_dir))
        ledger = Ledger(folder)
        for entry in list(ledger.latest.values()):  # as if another program had run them
            ledger.append(LedgerEntry(**{**entry.__dict__, "details": {**entry.details, "program": "other"}}))
        with sweep_of(tmp_path, lambda cfg: 2, "bar=1,2") as second:
            assert second.returns is not None and [r.return_value for r in second.returns[0]] == [2, 2]
            assert [p.name for p in sorted(folder.iterdir()) if p.is_dir()] == ["0", "1"]


def test_a_bad_sweeper_setting_is_one_line_exit_2_and_nothing_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ended, sweep_of(tmp_path, None, "hydra.sweeper.max_failure_rate=2"):
        pass
    assert ended.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: hydra.sweeper.max_failure_rate=2.0: must be a number <= 1.0"
    ]
    assert not (tmp_path / "sweep").exists() or list((tmp_path / "sweep").iterdir()) == []


def test_a_job_that_cannot_begin_is_recorded_once_not_retried_forever(tmp_path: Path) -> None:
    """The basic launcher raises before the job began (its folder is a file, so is its record's): the job is
    recorded lost, and, its record not writable, the sweep stops."""
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "1").write_text("not a folder")
    with pytest.raises(SystemExit) as ended, sweep_of(tmp_path, lambda cfg: 0, "bar=1,2,3"):
        pass
    assert ended.value.code == 1
    lines = [json.loads(line) for line in (folder / "ledger.jsonl").read_text().splitlines()]
    assert [(line["job_num"], line["status"]) for line in lines] == [(0, "completed"), (1, "failed")]
    assert "cannot write job 1's record" in str(records.read_sweep_record(folder).stop_reason)


def test_a_job_run_in_a_worker_returns_the_configs_hydras_run_job_makes(tmp_path: Path) -> None:
    """explaunch's joblib path: the worker sends back no configs; the sweep's process makes them when first read."""
    GlobalHydra.instance().clear()
    with initialize_config_module("hydra.test_utils.configs", version_base="1.3"):
        config = compose("compose", overrides=["bar=5"], return_hydra_config=True)
    with open_dict(config):
        config.hydra.sweep.dir, config.hydra.sweep.subdir = str(tmp_path), "${hydra.job.num}"
        config.hydra.job.num, config.hydra.job.id, config.hydra.job.name = 3, "app_3", "app"
    sent = JobReturn(overrides=["bar=5"], status=JobStatus.COMPLETED, task_name="app", _return_value=7)
    returned = pickle.loads(pickle.dumps(ComposedJobReturn(sent, config)))  # not made yet: nothing to pickle
    assert returned.cfg == {"foo": 10, "bar": 5} and "hydra" not in returned.cfg
    assert returned.hydra_cfg is not None and returned.hydra_cfg.hydra.job.id == "app_3"
    assert returned.hydra_cfg.hydra.runtime.output_dir == str(tmp_path / "3")
    assert (returned.return_value, returned.overrides, returned.task_name) == (7, ["bar=5"], "app")
