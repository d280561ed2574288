"""The config schema (dataclasses registered in Hydra's ConfigStore) and its validation.

The YAML files under ``conf/`` hold values; the types, ranges and allowed choices live here, as field metadata read
by :func:`validate`. A value that breaks a rule becomes a :class:`~explaunch.errors.ConfigError` naming the key, the
value and what is allowed. The rules and their checks are in :mod:`explaunch.config_rules`, the schema of each
experiment type in :mod:`explaunch.config_experiments`; their names are importable from here too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from explaunch.config_experiments import (
    EXPERIMENT_SCHEMAS,
    FairnessConfig,
    LLMInferenceConfig,
    ProbeConfig,
    ScriptConfig,
    YoloTrainConfig,
    YoloValConfig,
    model_source,
)
from explaunch.config_rules import check_fields, check_keys, spec, validate_node, without_hydra
from explaunch.errors import ConfigError

__all__ = [
    "EXPERIMENT_SCHEMAS",
    "SCHEMA_VERSION",
    "AlertsConfig",
    "BatchingConfig",
    "EnergyConfig",
    "ExplaunchConfig",
    "FairnessConfig",
    "HardwareConfig",
    "LLMInferenceConfig",
    "ModelConfig",
    "ProbeConfig",
    "ResourcesConfig",
    "ScriptConfig",
    "ShardingConfig",
    "TrackingConfig",
    "YoloTrainConfig",
    "YoloValConfig",
    "config_hash",
    "is_explaunch_config",
    "register_configs",
    "schema_keys",
    "spec",
    "task_config_hash",
    "to_dict",
    "validate",
    "validate_node",
    "without_hydra",
]

SCHEMA_VERSION = 1


@dataclass
class ModelConfig:
    """A causal LM: built with random weights from the sizes below, or loaded from ``pretrained_path``."""

    name: str = MISSING
    family: str = spec(MISSING, choices=("llama", "mistral"))
    pretrained_path: Optional[str] = spec(None, help="local folder with config.json + weights; no download")
    tokenizer_path: Optional[str] = spec(None, help="local tokenizer folder; default: pretrained_path or shipped")
    hidden_size: int = spec(128, min=8)
    intermediate_size: int = spec(256, min=8)
    num_hidden_layers: int = spec(2, min=1)
    num_attention_heads: int = spec(4, min=1)
    num_key_value_heads: int = spec(2, min=1)
    max_position_embeddings: int = spec(1024, min=16)
    rope_theta: float = spec(10000.0, min=1.0)
    sliding_window: Optional[int] = spec(None, min=1, help="mistral only")

    def check(self, key: str) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"{key}.num_attention_heads",
                self.num_attention_heads,
                f"must divide {key}.hidden_size={self.hidden_size}",
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"{key}.num_key_value_heads",
                self.num_key_value_heads,
                f"must divide {key}.num_attention_heads={self.num_attention_heads}",
            )
        for name in ("pretrained_path", "tokenizer_path"):
            path = getattr(self, name)
            if path is not None and not Path(path).expanduser().is_dir():
                raise ConfigError(f"{key}.{name}", path, "must be an existing local directory (nothing is downloaded)")


@dataclass
class BatchingConfig:
    strategy: str = spec("static", choices=("static",))
    batch_size: int = spec(II("batch"), min=1)
    num_prompts: int = spec(32, min=1, help="prompts measured, after the length filter")
    max_new_tokens: int = spec(32, min=1)
    fixed_length: bool = spec(True, help="generate exactly max_new_tokens (EOS ignored), as benchmarks do")
    min_prompt_tokens: int = spec(4, min=1)
    max_prompt_tokens: int = spec(256, min=1)
    warmup_batches: int = spec(3, min=0)
    do_sample: bool = spec(False, help="greedy decoding when false (deterministic)")
    temperature: float = spec(1.0, min=1e-6)

    def check(self, key: str) -> None:
        if self.min_prompt_tokens > self.max_prompt_tokens:
            raise ConfigError(
                f"{key}.min_prompt_tokens",
                self.min_prompt_tokens,
                f"must be <= {key}.max_prompt_tokens={self.max_prompt_tokens}",
            )


@dataclass
class ShardingConfig:
    """How many processes run one job: ``none`` (one), ``ddp`` (data parallel: each process holds the whole model),
    ``fsdp`` (fully sharded: each process holds 1/N of the weights, gathered layer by layer for every forward)."""

    strategy: str = spec("none", choices=("none", "ddp", "fsdp"))
    num_processes: int = spec(1, min=1)
    cpu_offload: bool = spec(False, help="fsdp: keep the sharded weights in host memory between forwards")
    launch: str = spec(
        "auto",
        choices=("auto", "spawn", "slurm_tasks"),
        help="how the processes start: spawned by the job, or as the tasks of a SLURM job (auto: tasks when the "
        "job runs as a SLURM job with num_processes tasks)",
    )
    init_timeout_s: float = spec(300.0, min=1, help="how long a process waits for the others to join the group")

    def check(self, key: str) -> None:
        if self.strategy == "none" and self.num_processes != 1:
            raise ConfigError(
                f"{key}.num_processes", self.num_processes, "must be 1 with sharding=none; use sharding=ddp or fsdp"
            )
        if self.cpu_offload and self.strategy != "fsdp":
            raise ConfigError(f"{key}.cpu_offload", self.cpu_offload, "only applies to sharding=fsdp")


@dataclass
class HardwareConfig:
    device: str = spec("auto", choices=("auto", "cpu", "cuda"))
    num_gpus: int = spec(0, min=0, help="GPUs a job asks for (SLURM gpus_per_node)")
    gpu_ids: list[int] = spec([])
    mixed_precision: str = spec("no", choices=("no", "fp16", "bf16"))
    num_threads: Optional[int] = spec(None, min=1, help="torch intra-op threads; default: torch's choice")

    def check(self, key: str) -> None:
        if self.device == "cpu" and self.mixed_precision == "fp16":
            raise ConfigError(f"{key}.mixed_precision", "fp16", "not supported on cpu; use bf16 or no")


@dataclass
class TrackingConfig:
    """Where runs are logged besides the job folder. ``none``: nowhere else, and no store is created."""

    backend: str = spec("mlflow", choices=("mlflow", "none"))
    uri: Optional[str] = spec(None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db")
    experiment: str = spec("explaunch", help="MLflow experiment name")
    system_metrics: bool = spec(False, help="also MLflow's own system metrics for each run")
    log_artifacts: bool = spec(True, help="job.json, .hydra/, resources/emissions CSV, logs as run artifacts")
    required: bool = spec(True, help="a store that cannot be written stops a sweep before its first job")
    restore_deleted: bool = spec(True, help="restore the experiment when it was deleted; false: stop instead")


@dataclass
class AlertsConfig:
    """A sample crossing a threshold adds a warning to the job record and the log (null: no alert)."""

    memory_percent: Optional[float] = spec(90.0, min=0.0, max=100.0, help="system memory in use")
    cpu_percent: Optional[float] = spec(None, min=0.0, help="the job's processes; 100 = one core")
    gpu_memory_percent: Optional[float] = spec(95.0, min=0.0, max=100.0)
    disk_free_gb: Optional[float] = spec(1.0, min=0.0, help="free space where the job writes")


@dataclass
class ResourcesConfig:
    enabled: bool = spec(True, help="sample CPU, memory, IO and GPUs into resources.csv")
    interval_s: float = spec(1.0, min=0.05)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)


@dataclass
class EnergyConfig:
    """How energy is measured: hardware counters first (RAPL, NVML), codecarbon's model where there is none.

    The measured region of ``llm_inference`` and ``fairness_tradeoff`` repeats its work until it has lasted
    ``min_window_s`` and run ``min_iterations`` times: a window of a fraction of a second holds one or two power
    samples and says more about the meter than about the job."""

    enabled: bool = spec(True, help="energy of the whole job and of the measured region (counters, codecarbon)")
    country_iso_code: str = spec("USA", help="grid carbon intensity used for emissions, ISO 3166-1 alpha-3")
    measure_power_secs: float = spec(1.0, min=0.1, help="codecarbon's sampling interval (modelled CPU/RAM)")
    sample_interval_s: float = spec(0.2, min=0.01, help="how often counters and CPU times are read in a window")
    min_window_s: float = spec(10.0, help="the measured region repeats its work until it lasted this long (> 0)")
    min_iterations: int = spec(10, min=1, help="... and ran at least this many iterations (generate calls)")
    prefill_window_s: float = spec(5.0, help="llm_inference: the prefill-only window (> 0) decode is told from")
    baseline_s: Optional[float] = spec(
        None,
        min=0.0,
        help="idle power measured this long per host before the first job (0: off; null: 5 s where a GPU is "
        "visible, off on CPU-only hosts)",
    )
    powercap_root: str = spec("/sys/class/powercap", help="where RAPL energy counters are read (Linux powercap)")

    def check(self, key: str) -> None:
        for name in ("min_window_s", "prefill_window_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"{key}.{name}", value, "must be a number > 0 (seconds)")


@dataclass
class ExplaunchConfig:
    """The root of every job's config. Top-level knobs are the ones users sweep."""

    model: ModelConfig = MISSING
    batching: BatchingConfig = MISSING
    sharding: ShardingConfig = MISSING
    experiment_type: Any = MISSING  # each option of the group brings its own schema (see register_configs)
    hardware: HardwareConfig = MISSING
    tracking: TrackingConfig = MISSING
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    seed: int = spec(0, min=0, max=2**32 - 1)
    batch: int = spec(8, min=1)
    lam: float = spec(0.0, min=0.0, help="fairness weight, used by fairness_tradeoff")
    deterministic: bool = spec(False, help="torch deterministic algorithms (slower)")
    # the index of a repeat of the same config: +repeat=range(5) runs it 5 times (None, so that + can add it)
    repeat: Optional[int] = spec(None, min=0)
    params: dict[str, Any] = field(default_factory=dict)  # free knobs for scripts: +params.lr=0.1,0.01
    # your own labels: +tags.stage=tested becomes an MLflow tag of the job's run and a field of job.json
    tags: dict[str, str] = field(default_factory=dict)

    def check(self, key: str) -> None:
        for tag, value in self.tags.items():
            if not TAG_KEY.fullmatch(str(tag)) or str(tag).startswith(RESERVED_TAG_PREFIXES):
                raise ConfigError(
                    f"tags.{tag}",
                    value,
                    "a tag key is letters, digits, _ - . / (at most 250), not starting with "
                    + " or ".join(RESERVED_TAG_PREFIXES),
                )
        name = getattr(self.experiment_type, "name", None)
        if self.sharding.strategy != "none" and name != "llm_inference":
            raise ConfigError(
                "sharding", self.sharding.strategy, f"runs llm_inference jobs only (experiment_type={name}); use none"
            )
        if self.sharding.strategy == "fsdp" and not self.batching.fixed_length:
            raise ConfigError(
                "batching.fixed_length", False, "must be true with sharding=fsdp (every process runs the same forwards)"
            )


TAG_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,249}")  # what MLflow accepts as a tag key, and a CSV column
RESERVED_TAG_PREFIXES = ("mlflow.", "explaunch.")  # MLflow's own tags and ours


def slurm_tasks_per_node(num_processes: int, launch: str) -> int:
    """Scheduler tasks of a job: one per process, unless the job spawns its processes itself."""
    return 1 if launch == "spawn" else int(num_processes)


def slurm_cpus_per_task(num_processes: int, launch: str, per_process: int) -> int:
    """CPUs of each task: ``per_process``, times the processes when one task spawns them all."""
    return int(per_process) * (int(num_processes) if launch == "spawn" else 1)


def register_configs(code_dir: Path | None = None) -> None:
    """Put the schema in Hydra's ConfigStore (``explaunch_schema`` for config.yaml, one per experiment type) and the
    resolvers configs may use: ``${explaunch.python:}`` (this Python) and ``${explaunch.code_dir:}`` (``code_dir``,
    the folder of the app's main.py; the cwd when not given)."""
    import sys

    root = str((code_dir or Path.cwd()).resolve())
    OmegaConf.register_new_resolver("explaunch.python", lambda: sys.executable, replace=True)
    OmegaConf.register_new_resolver("explaunch.code_dir", lambda: root, replace=True)
    OmegaConf.register_new_resolver("explaunch.tasks_per_node", slurm_tasks_per_node, replace=True)
    OmegaConf.register_new_resolver("explaunch.cpus_per_task", slurm_cpus_per_task, replace=True)
    OmegaConf.register_new_resolver("explaunch.model_source", model_source, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="explaunch_schema", node=ExplaunchConfig)
    for name, schema in EXPERIMENT_SCHEMAS.items():
        cs.store(group="schema/experiment_type", name=name, node=schema)
    from hydra_plugins.explaunch_plugins.launchers import register_launchers

    register_launchers()


def validate(cfg: DictConfig, *, check_extras: bool = True) -> ExplaunchConfig:
    """Turn a composed job config into the typed :class:`ExplaunchConfig`, or raise the first :class:`ConfigError`.

    Any ``hydra`` node is ignored. Types were already checked by OmegaConf at composition; here come the
    ranges, choices and cross-field rules, and whether the extra its experiment type needs is installed. A config
    that is no job's (the base whose values a sweep overrides) is checked with ``check_extras=False``: its
    experiment type (conf/config.yaml's default) may be one that no job of the sweep runs.
    """
    task_cfg = without_hydra(cfg) if "hydra" in cfg else cfg
    try:
        obj = OmegaConf.to_object(task_cfg)
    except MissingMandatoryValue as ex:
        raise ConfigError(str(ex.full_key), "???", "a value is required") from None
    except OmegaConfBaseException as ex:
        raise ConfigError(str(ex.full_key or "config"), getattr(ex, "value", "?"), ex.msg or str(ex)) from None
    check_keys(task_cfg, ExplaunchConfig, "")
    if not isinstance(obj, ExplaunchConfig):
        raise ConfigError("config", type(obj).__name__, "the primary config must use explaunch_schema")
    check_fields(obj, "")
    if check_extras:
        from explaunch import extras  # an experiment type whose extra is not installed: one line, before any job

        extras.check(obj.experiment_type.name, obj.sharding.strategy)
    return obj


def is_explaunch_config(cfg: Any) -> bool:
    """Whether ``cfg`` (a composed config, with or without its ``hydra`` node) is explaunch's own app's: its primary
    config lists ``explaunch_schema`` in its defaults, which makes :class:`ExplaunchConfig` the type of the composed
    root (as it makes :func:`validate` find one). Only such a config is held to this schema: the keys of any other
    app using ``hydra/sweeper=explaunch`` are left to Hydra."""
    if not isinstance(cfg, DictConfig):
        return False
    root_type = OmegaConf.get_type(cfg)
    return isinstance(root_type, type) and issubclass(root_type, ExplaunchConfig)


def to_dict(config: ExplaunchConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_hash(config: ExplaunchConfig) -> str:
    """A stable hash of everything that decides a job's result (the resolved task config).

    ``tracking`` and ``tags`` are left out: where results are logged and how they are labelled do not change them.
    """
    data = to_dict(config)
    data.pop("tracking", None)
    data.pop("tags", None)
    return _hash(data)


def task_config_hash(cfg: DictConfig) -> str:
    """The identity of a job of any other app (see :func:`is_explaunch_config`): a stable hash of its task config
    without the ``hydra`` node, every value resolved, a value that resolves only when the job runs
    (``${hydra.job.num}``, a resolver the job registers) as it is written."""
    return _hash(_settled(without_hydra(cfg) if "hydra" in cfg else cfg))


def _hash(data: Any) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _settled(node: DictConfig | ListConfig) -> Any:
    """``node``'s values as plain data: each resolved where it can be now, else as written."""
    given: Any = OmegaConf.to_container(node, resolve=False)
    keys: list[Any] = list(node.keys()) if isinstance(node, DictConfig) else list(range(len(node)))
    values = []
    for key in keys:
        try:
            child = node[key]
            value = _settled(child) if isinstance(child, DictConfig | ListConfig) else child
        except Exception:  # missing (???), or an interpolation or resolver only the running job can resolve
            value = given[key]
        values.append(value)
    if isinstance(node, DictConfig):
        return {str(key): value for key, value in zip(keys, values, strict=True)}
    return values


def schema_keys(key: str) -> list[str] | None:
    """The keys the schema allows under ``key`` (a dotted path), or None where it does not say (an ``Any`` node)."""
    node: Any = ExplaunchConfig
    for part in [p for p in key.split(".") if p]:
        if not (isinstance(node, type) and is_dataclass(node)):
            return None
        node = typing.get_type_hints(node).get(part)
    if isinstance(node, type) and is_dataclass(node):
        return [f.name for f in fields(node)]
    return None
