"""Hydra's files of a job and of a sweep (``.hydra/``, ``multirun.yaml``), rewritten with their secrets redacted
where Hydra wrote them as given."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from explaunch.sweepdir import records

log = logging.getLogger(__name__)


def redact_hydra_output(config: DictConfig) -> None:
    """Hydra's ``run_job`` (single runs, SLURM, submitit) has written ``.hydra/`` with the secrets as given: rewritten
    redacted here, first thing at job start. explaunch.job.jobrun writes them redacted in the first place."""
    from explaunch import redaction

    subdir = OmegaConf.select(config, "hydra.output_subdir", default=None)
    if subdir is None or redaction.hydra_files_redacted.get():
        return
    try:
        redaction.redact_hydra_files(Path(str(config.hydra.runtime.output_dir)) / str(subdir))
    except Exception as ex:  # the job runs; what could not be redacted is removed rather than left
        log.warning("could not redact %s: %s: %s; removing it", subdir, type(ex).__name__, ex)
        for name in redaction.HYDRA_FILES:
            (Path(str(config.hydra.runtime.output_dir)) / str(subdir) / name).unlink(missing_ok=True)


SWEEP_CONFIG_FILE = "multirun.yaml"


def redact_sweep_config(sweep_dir: Path) -> bool:
    """Hydra's basic sweeper writes ``multirun.yaml`` with the secrets as given (explaunch's sweeper writes it
    redacted): rewritten redacted by the sweep's own process, before its MLflow sweep run uploads it. Returns whether
    the file was there to check."""
    import yaml

    from explaunch import redaction
    from explaunch.job.jobrun import dump_yaml

    path = sweep_dir / SWEEP_CONFIG_FILE
    if not path.is_file():
        return False
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    redacted = redaction.redact_unresolved(data)
    if redacted != data:
        records.write_text_atomic(path, dump_yaml(redacted))
    return True
