from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
from collections.abc import Iterator
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from explaunch.errors import ConfigError
from explaunch.launch.preflight import check_overrides
from tests.conftest import BAD_INPUTS, CONF_DIR


def check(*overrides: str, multirun: bool = False) -> None:
    check_overrides(CONF_DIR, "config", list(overrides), multirun=multirun)


@pytest.mark.extras
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


@pytest.mark.extras
def test_every_swept_value_is_checked_not_only_the_first() -> None:
    """With another sweeper (Hydra's basic one here) the pre-flight composes each swept value itself; explaunch's
    sweeper validates every job of the grid in its plan (tests/integration/test_bad_input.py)."""
    with pytest.raises(ConfigError, match=r"^seed=-5: "):
        check("hydra/sweeper=basic", "model=llama,mistral", "seed=0,1,2,-5", multirun=True)
    with pytest.raises(ConfigError, match=r"^model=gpt9: "):
        check("hydra/sweeper=basic", "model=llama,gpt9", multirun=True)
    with pytest.raises(ConfigError, match=r"^batching\.foo=1: no such key"):
        check("hydra/sweeper=basic", "+batching.foo=1,2", multirun=True)
    check("model=llama,mistral", "seed=0,1,2,-5", multirun=True)  # left to explaunch's sweeper's plan


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


@pytest.mark.extras
def test_a_gpu_id_that_is_not_visible_is_refused_where_the_jobs_run_here() -> None:
    """No NVIDIA GPU on CI: any GPU id is one that is not visible. On a GPU machine, an id past the last one is.
    In a sweep each job's GPUs are checked: by explaunch's sweeper in its plan (tests/integration/test_bad_input.py),
    here with another sweeper."""
    with pytest.raises(ConfigError, match=r"^hardware\.gpu_ids=\[63\]: "):
        check("hardware.gpu_ids=[63]")
    with pytest.raises(ConfigError, match=r"^hardware\.gpu_ids=\[63\]: "):
        check("hydra/sweeper=basic", "hardware.gpu_ids=[63]", "seed=0,1", multirun=True)
    check("hardware=cpu", "hardware.gpu_ids=[63]")  # a CPU job is given no GPU: nothing to check
    slurm = ("hydra/sweeper=basic", "hydra/launcher=submitit_slurm")  # seen on the nodes, not here
    check(*slurm, "hardware.gpu_ids=[63]", "seed=0,1", multirun=True)


def test_a_gpu_id_that_is_not_visible_among_swept_values_is_refused_with_any_sweeper() -> None:
    """Each job's own GPUs, not the default's (hardware=auto: none named). explaunch's sweeper checks them in its
    plan (tests/integration/test_bad_input.py); with another sweeper the pre-flight composes every job."""
    with pytest.raises(ConfigError, match=r"^hardware\.gpu_ids=\[(0|63)\]: "):
        check("hydra/sweeper=basic", "experiment_type=probe", "hardware.gpu_ids=[0],[63]", multirun=True)
    check("hydra/sweeper=basic", "experiment_type=probe", "hardware=cpu", "hardware.gpu_ids=[0],[63]", multirun=True)


LLM_PACKAGES = ("torch", "transformers", "tokenizers")


@pytest.fixture
def without_the_llm_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """A core-only install, as the module lookup sees it: torch, transformers and tokenizers are not found."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name.partition(".")[0] in LLM_PACKAGES else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.usefixtures("without_the_llm_extra")
def test_without_the_llm_extra_a_sweep_over_types_that_need_none_passes() -> None:
    """The default experiment type (llm_inference) is overridden by the sweep: no job needs the extra."""
    check("experiment_type=probe,script", multirun=True)
    check("experiment_type=probe,script", "seed=0,1", "hydra.sweeper.max_retries=0,1", multirun=True)
    check("+experiment=legacy_words,probe_rehearsal", multirun=True)
    check("hydra/sweeper=basic", "experiment_type=probe", "seed=0,1", multirun=True)


@pytest.mark.usefixtures("without_the_llm_extra")
def test_without_the_llm_extra_a_job_that_needs_it_is_refused_in_one_line() -> None:
    """Where the pre-flight composes the jobs (a single run, another sweeper); explaunch's sweeper refuses in its plan
    (tests/integration/test_without_extras.py)."""
    needs = (
        "needs torch, transformers, tokenizers, not installed here: pip install 'explaunch[llm]' (or explaunch[all])"
    )
    with pytest.raises(ConfigError) as info:
        check("experiment_type=llm_inference")
    assert str(info.value) == f"experiment_type=llm_inference: {needs}"
    with pytest.raises(ConfigError) as info:
        check("hydra/sweeper=basic", "experiment_type=probe,llm_inference", multirun=True)
    assert str(info.value) == f"experiment_type=llm_inference: {needs}"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hydra.sweeper.max_retries=-1"], "hydra.sweeper.max_retries=-1: must be an integer >= 0"),
        (["hydra.sweeper.max_failure_rate=1.5"], "hydra.sweeper.max_failure_rate=1.5: must be a number <= 1.0"),
        (
            ["hydra.sweeper.job_timeout_s=0"],
            "hydra.sweeper.job_timeout_s=0.0: must be a number > 0, or null for no limit",
        ),
        (["hydra.sweeper.dashboard_port=70000"], "hydra.sweeper.dashboard_port=70000: must be an integer <= 65535"),
        (
            ["hydra.launcher.n_jobs=0"],
            "hydra.launcher.n_jobs=0: must be N > 0 (workers), or -1 every core, -2 all but one, ...",
        ),
        (["hydra.launcher.prefer=gpus"], "hydra.launcher.prefer=gpus: allowed: processes, threads"),
        (
            ["hydra/launcher=joblib", "hydra.launcher.backend=dask"],
            "hydra.launcher.backend=dask: allowed: loky, threading, multiprocessing, sequential, or one "
            "joblib.register_parallel_backend added",
        ),
        (["hydra.launcher.batch_size=0"], "hydra.launcher.batch_size=0: must be auto or an integer >= 1"),
        (
            ["hydra.sweeper.max_retries=two"],
            "hydra.sweeper.max_retries=two: Value 'two' of type 'str' could not be converted to Integer",
        ),
        (
            ["hydra.launcher.verbose=true"],
            "hydra.launcher.verbose=true: Value 'True' of type 'bool' could not be converted to Integer",
        ),
        (["+hydra.sweeper.max_retry=2"], "hydra.sweeper.max_retry=2: no such key; keys here: _target_, params, "),
        (
            ["hydra/launcher=basic", "+hydra.launcher.n_jobs=4"],
            "hydra.launcher.n_jobs=4: no such key; keys here: _target_",
        ),
        (
            ["hydra/launcher=submitit_local", "hydra.launcher.nodes=0"],
            "hydra.launcher.nodes=0: must be an integer >= 1",
        ),
        (
            ["hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=1"],
            "hydra.launcher.signal_delay_s=120: must be below timeout_min*60 - 30 = 30 (timeout_min=1)",
        ),
        (
            ["hydra/launcher=submitit_slurm", "hydra.launcher.array_parallelism=0"],
            "hydra.launcher.array_parallelism=0: must be an integer >= 1",
        ),
    ],
)
@pytest.mark.parametrize("multirun", [False, True])
def test_bad_sweeper_and_launcher_settings_get_one_line_naming_key_value_and_allowed(
    overrides: list[str], message: str, multirun: bool
) -> None:
    with pytest.raises(ConfigError) as info:
        check(*overrides, multirun=multirun)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.extras
def test_every_swept_sweeper_or_launcher_setting_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"^hydra\.launcher\.n_jobs=0: "):
        check("hydra.launcher.n_jobs=2,0", multirun=True)


@pytest.mark.extras
def test_good_sweeper_and_launcher_settings_pass() -> None:
    check("hydra.sweeper.max_retries=2", "hydra.sweeper.max_failure_rate=1.0", "hydra.launcher.n_jobs=-2")
    check("hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=5", "hydra.launcher.signal_delay_s=60")
    check("hydra/launcher=basic", "hydra.sweeper.job_timeout_s=30", "seed=0,1", multirun=True)


def test_a_sweep_folder_under_a_file_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError) as info:
        check(f"hydra.sweep.dir={blocker}/sweep", "seed=0,1", multirun=True)
    assert str(info.value) == f"hydra.sweep.dir={blocker}/sweep: cannot be created: {blocker} is a file, not a folder"
    with pytest.raises(ConfigError, match=r"^hydra\.run\.dir=.*: cannot be created: .* is a file, not a folder$"):
        check(f"hydra.run.dir={blocker}/run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]


def test_a_sweep_folder_on_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        with pytest.raises(ConfigError, match=rf"^hydra\.sweep\.dir={locked}/a/b: cannot be created: {locked} is "):
            check(f"hydra.sweep.dir={locked}/a/b", "seed=0,1", multirun=True)
        assert list(locked.iterdir()) == []


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` made read-only: a read-only tmpfs mounted on it when root (root writes through file modes),
    its mode otherwise."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"root cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_an_invalid_secret_pattern_stops_before_anything_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from explaunch.launch.preflight import check_command_line

    monkeypatch.setenv("EXPLAUNCH_SECRET_PATTERN", "(")
    with pytest.raises(SystemExit) as info:
        check_command_line(CONF_DIR, "config", ["experiment_type=probe"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: EXPLAUNCH_SECRET_PATTERN='(': not a valid regular expression "
        "(missing ), unterminated subpattern at position 0)"
    ]
