from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from explaunch.config import ExplaunchConfig, LLMInferenceConfig, config_hash, schema_keys, validate
from explaunch.errors import ConfigError
from tests.conftest import CONF_DIR, compose_config


@pytest.mark.extras
def test_default_config_validates_to_typed_objects() -> None:
    config = validate(compose_config())
    assert isinstance(config, ExplaunchConfig)
    assert isinstance(config.experiment_type, LLMInferenceConfig)
    assert config.model.name == "llama"
    assert config.batching.batch_size == config.batch == 8


@pytest.mark.extras
def test_batch_knob_feeds_batching_batch_size() -> None:
    assert validate(compose_config("batch=32")).batching.batch_size == 32


@pytest.mark.parametrize(
    ("overrides", "key", "value", "allowed"),
    [
        (["batch=0"], "batch", "0", ">= 1"),
        (["seed=-1"], "seed", "-1", ">= 0"),
        (["batching.max_new_tokens=-1"], "batching.max_new_tokens", "-1", ">= 1"),
        (["batching.warmup_batches=-2"], "batching.warmup_batches", "-2", ">= 0"),
        (["hardware.device=tpu"], "hardware.device", "tpu", "auto, cpu, cuda"),
        (["lam=-0.5"], "lam", "-0.5", ">= 0.0"),
        (["hardware=cpu", "hardware.mixed_precision=fp16"], "hardware.mixed_precision", "fp16", "bf16"),
        (["model.num_attention_heads=3"], "model.num_attention_heads", "3", "divide model.hidden_size=128"),
        (["model.pretrained_path=/no/such/dir"], "model.pretrained_path", "/no/such/dir", "existing local"),
        (["sharding=ddp", "sharding.cpu_offload=true"], "sharding.cpu_offload", "true", "sharding=fsdp"),
        (["sharding=fsdp", "experiment_type=probe"], "sharding", "fsdp", "llm_inference jobs only"),
        (["sharding=fsdp", "batching.fixed_length=false"], "batching.fixed_length", "false", "same forwards"),
        (["sharding=ddp", "sharding.launch=mpi"], "sharding.launch", "mpi", "spawn, slurm_tasks"),
        (
            ["batching.min_prompt_tokens=300", "batching.max_prompt_tokens=200"],
            "batching.min_prompt_tokens",
            "300",
            "<= batching.max_prompt_tokens=200",
        ),
    ],
)
def test_bad_value_names_key_value_and_what_is_allowed(
    overrides: list[str], key: str, value: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate(compose_config(*overrides))
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}={value}: ")
    assert allowed in info.value.allowed


def test_top_level_knob_is_reported_before_what_interpolates_it() -> None:
    with pytest.raises(ConfigError, match=r"^batch=0: must be an integer >= 1$"):
        validate(compose_config("batch=0"))


def test_unknown_top_level_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^speed=3: no such key; keys here: model, "):
        validate(compose_config("+speed=3"))


@pytest.mark.extras
def test_config_hash_is_stable_and_tracks_what_decides_the_result() -> None:
    base = config_hash(validate(compose_config()))
    assert base == config_hash(validate(compose_config()))
    assert base != config_hash(validate(compose_config("seed=1")))
    assert base != config_hash(validate(compose_config("model=mistral")))
    assert len(base) == 16


@pytest.mark.extras
def test_every_group_option_composes_and_validates() -> None:
    for group, options in {"model": ["llama", "mistral"], "hardware": ["cpu", "auto"]}.items():
        for option in options:
            config = validate(compose_config(f"{group}={option}"))
            assert OmegaConf.structured(config) is not None


@pytest.mark.extras
def test_gpu_option_composes_and_asks_for_cuda() -> None:
    config = validate(compose_config("hardware=gpu"))
    assert config.hardware.device == "cuda"
    assert config.hardware.mixed_precision == "bf16"


def test_schema_keys_lists_the_fields_of_a_node() -> None:
    keys = schema_keys("batching")
    assert keys is not None and "max_new_tokens" in keys
    assert schema_keys("experiment_type") is None  # each option brings its own schema
    assert "seed" in (schema_keys("") or [])


def test_script_type_needs_a_command_and_a_usable_metrics_regex() -> None:
    with pytest.raises(ConfigError, match=r"^experiment_type\.command=\[\]: the script to run"):
        validate(compose_config("experiment_type=script"))
    with pytest.raises(ConfigError, match=r"needs groups \(\?P<key>\.\.\) and \(\?P<value>\.\.\)"):
        validate(
            compose_config("experiment_type=script", "experiment_type.command=[x]", "experiment_type.metrics_regex=a")
        )
    config = validate(compose_config("+experiment=legacy_regressor", "params.lr=0.5"))
    assert config.experiment_type.args[:2] == ["--lr", "0.5"]  # sweep values reach the script by interpolation


@pytest.mark.parametrize(
    ("sharding", "launch", "tasks", "cpus"),
    [("none", "auto", 1, 1), ("ddp", "auto", 2, 1), ("fsdp", "slurm_tasks", 2, 1), ("ddp", "spawn", 1, 2)],
)
@pytest.mark.extras
def test_slurm_preset_gives_a_multi_process_job_one_task_per_process(
    sharding: str, launch: str, tasks: int, cpus: int
) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        overrides = ["hydra/launcher=submitit_slurm", f"sharding={sharding}", f"sharding.launch={launch}"]
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    assert (cfg.hydra.launcher.tasks_per_node, cfg.hydra.launcher.cpus_per_task) == (tasks, cpus)
