"""explaunch.job.jobrun.run_job against Hydra's own run_job: the same job, run by both, must see and leave the same."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, run_job
from hydra.experimental.callback import Callback
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict

from explaunch.config import register_configs
from explaunch.job import jobrun

ROOT = Path(__file__).resolve().parents[2]


class Spy(Callback):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.calls.append(("start", config.hydra.runtime.output_dir, sorted(kwargs)))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self.calls.append(("end", config.hydra.runtime.output_dir, job_return.status))


def job_config(sweep_dir: Path, *extra: str) -> DictConfig:
    register_configs(ROOT)
    overrides = ["experiment_type=probe", "seed=3", "+hydra.job.env_set.EXPLAUNCH_JOBRUN=yes", *extra]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(sweep_dir)
        cfg.hydra.job.num = 7
        cfg.hydra.job.id = "main_7"
        cfg.hydra.job.name = "main"
    return cfg


def run_with(runner: str, config: DictConfig, fail: bool) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def task(cfg: DictConfig) -> dict[str, Any]:
        hydra = HydraConfig.get()
        seen.update(
            cwd=str(Path.cwd()),
            env=os.environ.get("EXPLAUNCH_JOBRUN"),
            hydra=OmegaConf.to_container(hydra, resolve=False),
            output_dir=hydra.runtime.output_dir,
            task=OmegaConf.to_container(cfg, resolve=False),
            task_type=OmegaConf.get_type(cfg),
            struct=OmegaConf.is_struct(cfg),
            has_hydra="hydra" in cfg,
        )
        if fail:
            raise ValueError("on purpose")
        return {"metrics": {"x": 1.0}}

    spy = Spy()
    callbacks = Callbacks()
    callbacks.callbacks.append(spy)
    context = HydraContext(config_loader=None, callbacks=callbacks)  # type: ignore[arg-type]
    JobRuntime.instance().set("name", "main")
    before_cwd, before_hydra = str(Path.cwd()), HydraConfig.instance().cfg
    if runner == "hydra":
        ret = run_job(task, config, "hydra.sweep.dir", "hydra.sweep.subdir", hydra_context=context)
    else:
        ret = jobrun.run_job(config, context, task)
    job_dir = Path(config.hydra.sweep.dir) / "7"
    return {
        "seen": seen,
        "files": {p.name: p.read_bytes() for p in sorted((job_dir / ".hydra").iterdir())},
        "return": {
            "overrides": ret.overrides,
            "working_dir": ret.working_dir,
            "status": ret.status,
            "value": repr(ret._return_value),
            "task_name": ret.task_name,
            "cfg": OmegaConf.to_container(ret.cfg, resolve=False),
            "hydra_cfg": OmegaConf.to_container(ret.hydra_cfg, resolve=False),
        },
        "callbacks": spy.calls,
        "restored": (str(Path.cwd()) == before_cwd, HydraConfig.instance().cfg is before_hydra),
        "config_after": OmegaConf.to_container(config, resolve=False),
    }


@pytest.mark.parametrize(("chdir", "fail"), [(False, False), (True, False), (False, True)])
def test_the_same_job_through_hydra_and_explaunch(tmp_path: Path, chdir: bool, fail: bool) -> None:
    sweep = tmp_path / "sweep"
    config = job_config(sweep, f"hydra.job.chdir={chdir}")
    by_hydra = run_with("hydra", copy.deepcopy(config), fail)
    shutil.rmtree(sweep)
    by_explaunch = run_with("explaunch", copy.deepcopy(config), fail)
    assert by_explaunch["files"] == by_hydra["files"]
    assert set(by_explaunch["files"]) == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    assert by_explaunch["seen"] == by_hydra["seen"]
    assert by_explaunch["seen"]["env"] == "yes" and not by_explaunch["seen"]["has_hydra"]
    assert by_explaunch["seen"]["cwd"].endswith("sweep/7") == chdir
    assert by_explaunch["return"] == by_hydra["return"]
    assert by_explaunch["callbacks"] == by_hydra["callbacks"]
    assert by_explaunch["restored"] == by_hydra["restored"] == (True, True)
    assert by_explaunch["config_after"] == by_hydra["config_after"]
    assert os.environ.get("EXPLAUNCH_JOBRUN") is None


def test_yaml_as_omegaconf_writes_it(tmp_path: Path) -> None:
    cfg = OmegaConf.create(
        {"a": "yes", "b": "1.5", "c": [1, "null", {"d": "é ü"}], "e": None, "f": "${a}", "g": "", "h": "x: y"}
    )
    jobrun.save_yaml(cfg, tmp_path / "c.yaml")
    assert (tmp_path / "c.yaml").read_text(encoding="utf-8") == OmegaConf.to_yaml(cfg)


class RedactAtStart(Callback):
    """What the recording callback does first at job start, alone."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from explaunch.job.hydra_files import redact_hydra_output

        redact_hydra_output(config)


def test_a_secret_is_redacted_the_same_by_both_and_never_written_by_explaunch(tmp_path: Path) -> None:
    secret = "hunter2-" + tmp_path.name
    config = job_config(tmp_path / "sweep", f"+params.password={secret}", "+params.db=${oc.env:EXPLAUNCH_DB}")
    files = {}
    for runner in ("hydra", "explaunch"):
        callbacks = Callbacks()
        callbacks.callbacks.append(RedactAtStart())
        context = HydraContext(config_loader=None, callbacks=callbacks)  # type: ignore[arg-type]
        JobRuntime.instance().set("name", "main")
        job = copy.deepcopy(config)
        if runner == "hydra":
            run_job(lambda cfg: None, job, "hydra.sweep.dir", "hydra.sweep.subdir", hydra_context=context)
        else:
            jobrun.run_job(job, context, lambda cfg: None)
        folder = tmp_path / "sweep" / "7" / ".hydra"
        files[runner] = {p.name: p.read_text() for p in sorted(folder.iterdir())}
        shutil.rmtree(tmp_path / "sweep")
    assert files["explaunch"] == files["hydra"]
    assert secret not in str(files) and "+params.password=<redacted>" in files["hydra"]["overrides.yaml"]
    assert "db: ${oc.env:EXPLAUNCH_DB}" in files["hydra"]["config.yaml"]
