# ruff: noqa: UP045, RUF009 - OmegaConf 2.3 reads Optional[...] in structured configs; spec() declares the rules
"""The schema of each experiment type, registered as ``schema/experiment_type/<name>`` (the YAML files under
``conf/experiment_type/`` hold the values): what a job of that type may be given, with its rules (see
:mod:`explaunch.config_rules`) and its ``check``. :data:`EXPERIMENT_SCHEMAS` lists them by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from explaunch.config_rules import spec
from explaunch.errors import ConfigError


@dataclass
class LLMInferenceConfig:
    name: str = spec("llm_inference", choices=("llm_inference",))
    prompts_file: Optional[str] = spec(None, help="JSONL with a 'text' field; default: the shipped prompt set")
    flops: str = spec("counter", choices=("counter", "analytical", "none"))
    save_outputs: bool = spec(False, help="write the generated text and token ids to outputs.jsonl (an artifact)")

    def check(self, key: str) -> None:
        if self.prompts_file is not None and not Path(self.prompts_file).expanduser().is_file():
            raise ConfigError(f"{key}.prompts_file", self.prompts_file, "must be an existing local file")


@dataclass
class ProbeConfig:
    """A job that sleeps, fails, runs out of memory or dies on demand: to rehearse a sweep's failure handling
    (and to test it) without a model. ``fail_seeds`` picks the jobs that misbehave (empty: all of them)."""

    name: str = spec("probe", choices=("probe",))
    duration_s: float = spec(0.2, min=0.0)
    fail: str = spec("none", choices=("none", "raise", "flaky", "oom", "kill"))
    fail_seeds: list[int] = spec([])
    fail_attempts: int = spec(0, min=0, help="misbehave on the first N attempts of a job only (0: on every one)")
    oom_above_batch: int = spec(16, min=0, help="oom: MemoryError while batch > this")
    allocate_mb: int = spec(
        0,
        min=0,
        help="fill this many MiB of memory before sleeping (the jobs fail_seeds picks, while batch > oom_above_batch): "
        "past hydra.launcher.mem_gb SLURM kills it (its step ends OUT_OF_MEMORY)",
    )
    checkpoint: bool = spec(
        False,
        help="sleep in steps and keep the progress in the job folder: a requeued attempt (SLURM time limit with "
        "hydra.launcher.max_num_timeout > 0) goes on where the last one stopped, as a checkpointing job does",
    )


@dataclass
class FairnessConfig:
    """A classifier trained with a fairness penalty weighted by the top-level ``lam`` on generated, biased data."""

    name: str = spec("fairness_tradeoff", choices=("fairness_tradeoff",))
    n_high: int = spec(2000, min=1, help="training samples of the majority group")
    n_low: int = spec(200, min=1, help="training samples of the under-represented group")
    n_test: int = spec(4000, min=2, help="test samples, groups mixed as in training")
    group_aware: bool = spec(True, help="the classifier sees the sensitive attribute (else only its proxy)")
    features: int = spec(8, min=1)
    group_shift: float = spec(1.0, help="how far group 1's features are shifted (a proxy for the group)")
    label_bias: float = spec(1.5, help="extra score group 1 needs for a positive label")
    penalty: str = spec("demographic_parity", choices=("demographic_parity", "equalized_odds"))
    epochs: int = spec(300, min=1)
    lr: float = spec(0.05, min=1e-9)


@dataclass
class ScriptConfig:
    """An existing script, run unchanged: argv (no shell), where, with which environment, for how long, and where
    its metrics and outputs are."""

    name: str = spec("script", choices=("script",))
    command: list[str] = spec([], help="argv, e.g. [python, train.py]")
    args: list[str] = spec([], help='appended to command; sweep values by interpolation: ["--lr", "${params.lr}"]')
    cwd: Optional[str] = spec(None, help="working directory (default: the job folder)")
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: Optional[float] = spec(None, min=0.001)
    metrics_file: Optional[str] = spec(None, help="JSON object or CSV (last row) the script writes, relative to cwd")
    metrics_regex: Optional[str] = spec(
        r"(?P<key>[A-Za-z_][\w.]*)=(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)",
        help="printed key=value pairs (the last value of a key wins); null: none",
    )
    output_dirs: list[str] = spec([], help="folders (relative to cwd) whose new or changed files are collected")
    output_patterns: list[str] = spec(["*.pt", "*.pth", "*.csv", "*.json", "*.png", "*.txt"])

    def check(self, key: str) -> None:
        if not self.command:
            raise ConfigError(f"{key}.command", "[]", "the script to run, as an argv list, e.g. [python, train.py]")
        if self.metrics_regex:
            try:
                groups = re.compile(self.metrics_regex).groupindex
            except re.error as ex:
                raise ConfigError(
                    f"{key}.metrics_regex", self.metrics_regex, f"not a regular expression: {ex}"
                ) from None
            if not {"key", "value"} <= set(groups):
                raise ConfigError(
                    f"{key}.metrics_regex", self.metrics_regex, "needs groups (?P<key>..) and (?P<value>..)"
                )


@dataclass
class YoloTrainConfig:
    """ultralytics YOLO trained offline; registered in the MLflow model registry as ``register_as``."""

    name: str = spec("yolo_train", choices=("yolo_train",))
    model: str = spec("yolo11n.yaml", help="a model YAML (no download) or a local .pt with pretrained weights")
    data: Optional[str] = spec(None, help="a dataset YAML on disk; default: a small set the job generates")
    epochs: int = spec(1, min=1)
    imgsz: int = spec(64, min=32)
    n_train_images: int = spec(16, min=1)
    n_val_images: int = spec(8, min=1)
    register_as: Optional[str] = spec("explaunch-yolo", help="MLflow registered model name; null: do not register")

    def check(self, key: str) -> None:
        if not self.model.endswith((".yaml", ".yml")) and not Path(self.model).expanduser().is_file():
            raise ConfigError(f"{key}.model", self.model, "a model YAML such as yolo11n.yaml, or an existing local .pt")
        if self.data is not None and not Path(self.data).expanduser().is_file():
            raise ConfigError(f"{key}.data", self.data, "must be an existing dataset YAML")


@dataclass
class YoloValConfig:
    """A YOLO model from the MLflow store evaluated, without training: a registered version or a run's artifact
    (``model_uri``), or the best completed job of a sweep folder by ``metric`` (``best_of``); exactly one."""

    name: str = spec("yolo_val", choices=("yolo_val",))
    model_uri: Optional[str] = spec(None, help="models:/NAME/VERSION (or /latest, @ALIAS), runs:/RUN_ID/PATH")
    best_of: Optional[str] = spec(None, help="a sweep folder: the model of its best completed job by metric")
    metric: Optional[str] = spec(None, help="best_of: the metric the best job is chosen by")
    mode: str = spec("max", choices=("max", "min"))
    store: Optional[str] = spec(None, help="the MLflow store the model is in; default: the jobs' (tracking.uri)")
    data: Optional[str] = spec(None, help="a dataset YAML on disk; default: the set yolo_train generates")
    imgsz: int = spec(64, min=32)
    n_train_images: int = spec(16, min=1, help="of the generated set (its val split follows them)")
    n_val_images: int = spec(8, min=1)
    source_run_id: Optional[str] = spec(None, help="the model's run, resolved from model_uri or best_of")
    source_model_uri: Optional[str] = spec(None, help="model_uri, or runs:/ID/artifacts/model of best_of's job")

    def check(self, key: str) -> None:
        from explaunch.tracking import models

        source = models.resolve_cached(
            self.store, self.model_uri, self.best_of, self.metric, self.mode, str(Path.cwd())
        )
        for name, value in (("source_run_id", source.run_id), ("source_model_uri", source.model_uri)):
            if getattr(self, name) != value:
                raise ConfigError(f"{key}.{name}", getattr(self, name), "set from model_uri or best_of: leave it out")
        if self.data is not None and not Path(self.data).expanduser().is_file():
            raise ConfigError(f"{key}.data", self.data, "must be an existing dataset YAML")


EXPERIMENT_SCHEMAS: dict[str, type] = {
    "llm_inference": LLMInferenceConfig,
    "probe": ProbeConfig,
    "fairness_tradeoff": FairnessConfig,
    "script": ScriptConfig,
    "yolo_train": YoloTrainConfig,
    "yolo_val": YoloValConfig,
}


def model_source(what: str, _parent_: Any) -> str:
    """``${explaunch.model_source:run_id}`` in yolo_val's config: the run (or ``model_uri``) of the model it names,
    resolved in the MLflow store; "" where it names none (its check then says why)."""
    from explaunch.tracking import models

    return models.source_field(what, _parent_)
