from __future__ import annotations

import pytest

from explaunch.errors import ConfigError
from explaunch.preflight import check_overrides
from tests.conftest import BAD_INPUTS, CONF_DIR


def check(*overrides: str, multirun: bool = False) -> None:
    check_overrides(CONF_DIR, "config", list(overrides), multirun=multirun)


def test_good_command_lines_pass() -> None:
    check("model=mistral", "batch=4", "seed=3", "batching.max_new_tokens=16")
    check("model=llama,mistral", "batch=8,16,32", multirun=True)
    check("model=glob(*)", "batch=range(1,4)", "seed=0,1", multirun=True)


@pytest.mark.parametrize(("override", "message"), BAD_INPUTS)
@pytest.mark.parametrize("multirun", [False, True])
def test_each_bad_input_gets_one_line_naming_key_value_and_allowed(override: str, message: str, multirun: bool) -> None:
    with pytest.raises(ConfigError) as info:
        check(override, multirun=multirun)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_unknown_key_lists_the_keys_that_exist() -> None:
    with pytest.raises(ConfigError, match=r"^batching\.foo=1: no such key; keys here: strategy, batch_size"):
        check("batching.foo=1")


def test_every_swept_value_is_checked_not_only_the_first() -> None:
    with pytest.raises(ConfigError, match=r"^seed=-5: "):
        check("model=llama,mistral", "seed=0,1,2,-5", multirun=True)
    with pytest.raises(ConfigError, match=r"^model=gpt9: "):
        check("model=llama,gpt9", multirun=True)
    with pytest.raises(ConfigError, match=r"^batching\.foo=1: no such key"):
        check("+batching.foo=1,2", multirun=True)


def test_a_list_without_multirun_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^batch=8,16: a list of values needs -m/--multirun$"):
        check("batch=8,16")


def test_syntax_error_in_an_override_is_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        check("batch=[1,2")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("energy.min_window_s=0", "energy.min_window_s=0.0: must be a number > 0 (seconds)"),
        ("energy.prefill_window_s=-1", "energy.prefill_window_s=-1.0: must be a number > 0 (seconds)"),
        ("energy.min_iterations=0", "energy.min_iterations=0: must be an integer >= 1"),
        ("energy.baseline_s=-2", "energy.baseline_s=-2.0: must be a number >= 0.0"),
    ],
)
@pytest.mark.parametrize("multirun", [False, True])
def test_bad_energy_settings_are_refused_before_any_job(override: str, message: str, multirun: bool) -> None:
    with pytest.raises(ConfigError) as info:
        check(override, multirun=multirun)
    assert str(info.value) == message


def test_a_gpu_id_that_is_not_visible_is_refused_where_the_jobs_run_here() -> None:
    """No NVIDIA GPU on CI: any GPU id is one that is not visible. On a GPU machine, an id past the last one is."""
    with pytest.raises(ConfigError, match=r"^hardware\.gpu_ids=\[63\]: "):
        check("hardware.gpu_ids=[63]")
    with pytest.raises(ConfigError, match=r"^hardware\.gpu_ids=\[63\]: "):
        check("hardware.gpu_ids=[63]", "seed=0,1", multirun=True)
    check("hardware=cpu", "hardware.gpu_ids=[63]")  # a CPU job is given no GPU: nothing to check
    check("hardware.gpu_ids=[63]", "seed=0,1", "hydra/launcher=submitit_slurm", multirun=True)  # seen on the nodes
