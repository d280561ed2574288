"""Running one composed job the way Hydra's ``hydra.core.utils.run_job`` does (hydra-core 1.3.8, pinned), at a
third of its cost.

What a job sees is the same: ``HydraConfig`` set from the job's config while it runs (and restored after), the
output folder ``hydra.sweep.dir/hydra.sweep.subdir`` created and written to ``hydra.runtime.output_dir``, the working
directory changed to it when ``hydra.job.chdir`` says so, the job's logging configured, ``.hydra/config.yaml``,
``hydra.yaml`` and ``overrides.yaml`` written before the task runs, ``hydra.job.env_set`` applied around the task and
``on_job_start``, the callbacks called with the same arguments, and the same ``JobReturn`` (a failing task's exception
in it, not raised). tests/unit/test_jobrun.py runs the same job through both and compares all of it. One thing
differs on purpose: the ``.hydra/`` files are written with secrets redacted (:mod:`explaunch.redaction`), where after
Hydra's own ``run_job`` the recording callback rewrites them at job start.

What differs is only how often the config is copied. Hydra sets ``HydraConfig`` twice (each a copy of the ``hydra``
node), copies the whole config to drop ``hydra`` from it, and copies ``hydra`` a fourth time for the ``JobReturn``;
the YAML files go through PyYAML's pure-Python emitter. Here the ``hydra`` node is copied once (``HydraConfig``'s
copy gets the output folder written into it, as a second ``set_config`` would have), the task's config is copied
without ``hydra``, and the files go through libyaml with OmegaConf's own representers (the same text). On this
machine that is ~12 ms instead of ~36 ms before a job starts, for every job of a joblib or basic-launcher sweep.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, JobStatus, configure_log, env_override
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from explaunch import _compat, redaction
from explaunch.config import without_hydra


def run_job(config: DictConfig, hydra_context: Any, task_function: Any) -> JobReturn:
    """One job of a sweep from its composed config (``hydra.job.num``/``id`` set), as Hydra's ``run_job`` with
    ``job_dir_key="hydra.sweep.dir"`` and ``job_subdir_key="hydra.sweep.subdir"``."""
    callbacks = hydra_context.callbacks
    old_cwd = os.getcwd()  # noqa: PTH109 - os.path throughout: Hydra's exact paths (Path.resolve follows links)
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    output_dir = _set_hydra_config(hydra_config, config)
    try:
        job_return = JobReturn()
        task_cfg = without_hydra(config)
        hydra_cfg = hydra_config.cfg
        assert isinstance(hydra_cfg, DictConfig)
        job_return.cfg, job_return.hydra_cfg = task_cfg, hydra_cfg
        overrides = OmegaConf.to_container(config.hydra.overrides.task)
        assert isinstance(overrides, list)
        job_return.overrides = overrides
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        if _changes_dir(hydra_cfg):
            os.chdir(output_dir)
            job_return.working_dir = output_dir
        else:
            job_return.working_dir = os.getcwd()  # noqa: PTH109
        configure_log(config.hydra.job_logging, config.hydra.verbose)
        if config.hydra.output_subdir is not None:
            folder = Path(config.hydra.runtime.output_dir) / Path(config.hydra.output_subdir)
            files = {"config.yaml": task_cfg, "hydra.yaml": hydra_cfg, "overrides.yaml": config.hydra.overrides.task}
            containers = {name: _container(cfg) for name, cfg in files.items()}
            secrets = redaction.secret_values(list(containers.values()))
            for name, container in containers.items():  # redacted here, instead of after Hydra's write
                _write_yaml(redaction.redact_unresolved(container, secrets), folder / name)
        with env_override(hydra_cfg.hydra.job.env_set):
            written = redaction.hydra_files_redacted.set(True)
            try:
                callbacks.on_job_start(config=config, task_function=task_function)
            finally:
                redaction.hydra_files_redacted.reset(written)
            try:
                job_return.return_value = task_function(task_cfg)
                job_return.status = JobStatus.COMPLETED
            except Exception as ex:  # as Hydra: the job failed, the sweep goes on
                job_return.return_value = ex
                job_return.status = JobStatus.FAILED
        job_return.task_name = JobRuntime.instance().get("name")
        _compat.flush_loggers()
        callbacks.on_job_end(config=config, job_return=job_return)
        return job_return
    finally:
        hydra_config.cfg = previous
        os.chdir(old_cwd)


def _set_hydra_config(hydra_config: HydraConfig, config: DictConfig) -> str:
    """``HydraConfig`` set from the job's config, and the job's output folder, also written into both as
    ``hydra.runtime.output_dir`` (as Hydra's ``run_job`` does); returns the folder as Hydra joins it."""
    hydra_config.set_config(config)  # the output folder's keys may use ${hydra:...}: resolved against this job
    output_dir = os.path.join(  # noqa: PTH118
        str(OmegaConf.select(config, "hydra.sweep.dir")), str(OmegaConf.select(config, "hydra.sweep.subdir"))
    )
    for node in (config, cast(DictConfig, hydra_config.cfg)):  # the job's config, HydraConfig's copy of hydra
        with read_write(node.hydra.runtime), open_dict(node.hydra.runtime):
            node.hydra.runtime.output_dir = os.path.abspath(output_dir)  # noqa: PTH100
    return output_dir


class ComposedJobReturn(JobReturn):
    """The ``JobReturn`` of a job run in another process (a joblib worker), which does not send back the configs
    :func:`run_job` puts in it (~100 KB a job): ``cfg`` (the task's config without ``hydra``) and ``hydra_cfg``
    (HydraConfig's copy of the ``hydra`` node) are made from the job's composed config (``hydra.job.id``/``num``
    set) in this process when first read, ~7 ms a job that a sweep whose returns nobody reads (an app run by
    ``@hydra.main``) never spends."""

    def __init__(self, job_return: JobReturn, config: DictConfig) -> None:
        self._config: DictConfig | None = config
        self._cfg: DictConfig | None = None
        self._hydra_cfg: DictConfig | None = None
        super().__init__(
            overrides=job_return.overrides,
            working_dir=job_return.working_dir,
            task_name=job_return.task_name,
            status=job_return.status,
        )
        self.return_value = _compat.job_return_value(job_return)

    @property
    def cfg(self) -> DictConfig | None:
        self._make_configs()
        return self._cfg

    @cfg.setter
    def cfg(self, value: DictConfig | None) -> None:
        self._cfg = value

    @property
    def hydra_cfg(self) -> DictConfig | None:
        self._make_configs()
        return self._hydra_cfg

    @hydra_cfg.setter
    def hydra_cfg(self, value: DictConfig | None) -> None:
        self._hydra_cfg = value

    def _make_configs(self) -> None:
        config, self._config = self._config, None
        if config is None:
            return
        hydra_config = HydraConfig.instance()
        previous = hydra_config.cfg
        try:
            _set_hydra_config(hydra_config, config)
            self._cfg = self._cfg if self._cfg is not None else without_hydra(config)
            self._hydra_cfg = self._hydra_cfg if self._hydra_cfg is not None else cast(DictConfig, hydra_config.cfg)
        finally:
            hydra_config.cfg = previous


def _changes_dir(hydra_cfg: DictConfig) -> bool:
    """``hydra.job.chdir``; unset, Hydra's default for the app's version base (with Hydra's warning)."""
    from hydra import version

    chdir = hydra_cfg.hydra.job.chdir
    if chdir is not None:
        return bool(chdir)
    if version.base_at_least("1.2"):
        return False
    from textwrap import dedent

    from explaunch import _compat

    url = "https://hydra.cc/docs/1.2/upgrades/1.1_to_1.2/changes_to_job_working_dir/"
    _compat.hydra_deprecation_warning(
        message=dedent(
            f"""\
            Future Hydra versions will no longer change working directory at job runtime by default.
            See {url} for more information."""
        ),
        stacklevel=2,
    )
    return True


class _Dumper(getattr(yaml, "CDumper", yaml.Dumper)):  # type: ignore[misc]
    """libyaml's emitter (PyYAML's own where libyaml is missing) with the representers of OmegaConf's dumper
    (which strings to quote): the text of ``OmegaConf.to_yaml``."""


_REPRESENTERS = _compat.omegaconf_yaml_representers()  # None: another OmegaConf, whose to_yaml writes the files
for _type, _representer in (_REPRESENTERS or {}).items():
    _Dumper.add_representer(_type, _representer)


def _container(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)


def dump_yaml(container: Any) -> str:
    """A config's container as ``OmegaConf.to_yaml`` writes it (unresolved, keys in order)."""
    if _REPRESENTERS is None:
        return OmegaConf.to_yaml(OmegaConf.create(container))
    text: str = yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=_Dumper)
    return text


def _write_yaml(container: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(container), encoding="utf-8")


def save_yaml(cfg: Any, path: Path) -> None:
    """``cfg`` as Hydra writes it into ``.hydra/``, secrets redacted (explaunch.redaction)."""
    container = _container(cfg)
    _write_yaml(redaction.redact_unresolved(container), path)
