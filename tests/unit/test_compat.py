"""explaunch._compat holds every use of another library's private parts. These tests fail loudly when the installed
release no longer has what it relies on: then the fallback is what users get, and _compat needs a look."""

from __future__ import annotations

import os
from typing import Any

import psutil
import pytest
from omegaconf import OmegaConf

from explaunch import _compat
from explaunch.measure.energy import combine


def test_the_installed_codecarbon_is_one_whose_private_meters_were_read() -> None:
    assert _compat.codecarbon_retargetable(), (
        f"codecarbon {_compat.codecarbon_release()} is not among {_compat.CODECARBON_READ}: the sidecar falls back to "
        "machine mode; read its meters' source and update explaunch/_compat.py"
    )


def test_a_real_tracker_s_meters_have_every_attribute_we_set_and_follow_another_process() -> None:
    from codecarbon import OfflineEmissionsTracker

    tracker = OfflineEmissionsTracker(
        country_iso_code="USA", tracking_mode="process", log_level="error", output_methods=[], allow_multiple_runs=True
    )
    meters = _compat.codecarbon_meters(tracker)
    assert meters is not None
    kinds = {type(m).__name__ for m in meters}
    assert {"CPU", "RAM"} <= kinds
    parent = psutil.Process(os.getppid())
    assert _compat.retarget_meters(meters, parent.pid, parent, list)
    cpu = next(m for m in meters if type(m).__name__ == "CPU")
    assert cpu._pid == parent.pid and cpu._process is parent
    assert _compat.codecarbon_cpu_mode(tracker) not in ("unknown", "absent")


def test_a_meter_without_what_it_is_known_by_is_left_alone() -> None:
    class CPU:  # a later codecarbon's meter, renamed inside
        pid = 1

    class RAM:
        _pid = 1
        _get_children_memories = None

    meters: list[Any] = [CPU(), RAM()]
    assert not _compat.retarget_meters(meters, 42, object(), list)
    assert meters[1]._pid == 1  # nothing was touched
    assert _compat.codecarbon_cpu_mode(object()) == "unknown"


def test_machine_mode_figures_say_they_cover_the_machine() -> None:
    figures = {
        "version": "9.9.9", "cpu_mode": "constant", "scope": "machine", "country": "USA", "interval_s": 1.0,
        "duration_s": 10.0, "energy_kwh": 2e-5, "cpu_kwh": 1e-5, "ram_kwh": 1e-5, "emissions_kg": 1e-6,
    }  # fmt: skip
    reading = combine(10.0, {}, {}, figures).to_dict()
    components = reading["components"]
    assert components["cpu"]["scope"] == "machine" and "machine mode" in components["cpu"]["method"]
    assert components["ram"]["scope"] == "machine"


def test_the_installed_hydra_joblib_and_joblib_launcher_are_releases_whose_private_parts_were_read() -> None:
    for distribution, read in (
        ("hydra-core", _compat.HYDRA_READ),
        ("joblib", _compat.JOBLIB_READ),
        ("hydra-joblib-launcher", _compat.HYDRA_JOBLIB_READ),
        ("omegaconf", _compat.OMEGACONF_READ),
    ):
        assert _compat.release_read(distribution, read), (
            f"{distribution} {_compat.release(distribution)} is not among {read}: explaunch takes the public path "
            "instead; read what explaunch/_compat.py uses of it and update it"
        )


def test_a_private_part_is_had_only_from_a_release_read_that_still_has_it() -> None:
    from hydra.core import utils

    assert _compat._private("hydra-core", _compat.HYDRA_READ, "hydra.core.utils", "_flush_loggers") is (
        utils._flush_loggers
    )
    assert _compat._private("hydra-core", ("0.0",), "hydra.core.utils", "_flush_loggers") is None  # not read
    assert _compat._private("hydra-core", _compat.HYDRA_READ, "hydra.core.utils", "_gone_upstream") is None
    assert _compat._private("hydra-core", _compat.HYDRA_READ, "hydra._moved_upstream", "_flush_loggers") is None


def test_loky_still_has_the_leak_threshold_we_raise() -> None:
    from joblib.externals.loky import process_executor

    before = process_executor._MAX_MEMORY_LEAK_SIZE
    assert isinstance(before, int), "loky's _MAX_MEMORY_LEAK_SIZE is gone: workers holding a job's memory get ended"
    try:
        assert _compat.raise_loky_leak_threshold(before + 1)
        assert before + 1 == process_executor._MAX_MEMORY_LEAK_SIZE
        assert _compat.raise_loky_leak_threshold(1)  # never lowered
        assert before + 1 == process_executor._MAX_MEMORY_LEAK_SIZE
    finally:
        process_executor._MAX_MEMORY_LEAK_SIZE = before


def test_on_a_joblib_not_read_loky_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from joblib.externals.loky import process_executor

    monkeypatch.setattr(_compat, "JOBLIB_READ", ("0.0",))
    before = process_executor._MAX_MEMORY_LEAK_SIZE
    assert not _compat.raise_loky_leak_threshold(before + 1)
    assert before == process_executor._MAX_MEMORY_LEAK_SIZE


def _composed(overrides: list[str]) -> tuple[Any, Any, Any]:
    """(the job's config as Hydra composes it, the config loader, the sweep's config)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader: Any = GlobalHydra.instance().config_loader()
        master = compose("config", overrides=[], return_hydra_config=True)
        return loader.load_sweep_config(master, list(overrides)), loader, master


def test_hydras_override_dirname_is_the_one_hydra_composes() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = ["seed=3", "model=mistral", "lam=0.2", "hydra.job.name=x"]
    config, loader, _ = _composed(overrides)
    parsed = [o for o in OverridesParser.create(config_loader=loader).parse_overrides(overrides)]
    task = [o for o in parsed if not o.is_hydra_override()]
    dirname = config.hydra.job.config.override_dirname
    assert _compat.overrides_dirname_known()
    made = _compat.overrides_dirname(
        task, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys
    )
    assert made == config.hydra.job.override_dirname == "lam=0.2,model=mistral,seed=3"


def test_without_hydras_override_dirname_every_job_is_composed_by_hydra(monkeypatch: pytest.MonkeyPatch) -> None:
    from explaunch.launch.composition import JobComposer

    monkeypatch.setattr(_compat, "HYDRA_READ", ("0.0",))
    _compat._hydra_overrides_dirname.cache_clear()
    try:
        assert not _compat.overrides_dirname_known()
        hydras, loader, master = _composed(["seed=3"])
        composed: list[list[str]] = []

        def compose(overrides: list[str]) -> Any:
            composed.append(overrides)
            return loader.load_sweep_config(master, overrides)

        composer = JobComposer(compose, loader)
        ours = composer(["seed=3"])
        composer(["seed=4"])
        assert composed == [["seed=3"], ["seed=4"]]  # no shared composition: Hydra composed each job
        assert OmegaConf.to_container(ours, resolve=False) == OmegaConf.to_container(hydras, resolve=False)
    finally:
        monkeypatch.undo()
        _compat._hydra_overrides_dirname.cache_clear()


@pytest.mark.parametrize("read", [True, False])
def test_hydras_deprecation_warning_warns_or_raises_as_hydra_asks(read: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra.errors import HydraDeprecationError

    if not read:
        monkeypatch.setattr(_compat, "HYDRA_READ", ("0.0",))
    monkeypatch.delenv("HYDRA_DEPRECATION_WARNINGS_AS_ERRORS", raising=False)
    with pytest.warns(UserWarning, match="^Future Hydra versions") as caught:
        _compat.hydra_deprecation_warning("Future Hydra versions will differ", stacklevel=1)
    assert caught[0].filename == __file__  # attributed to the caller, as Hydra's own is
    monkeypatch.setenv("HYDRA_DEPRECATION_WARNINGS_AS_ERRORS", "1")
    with pytest.raises(HydraDeprecationError, match="will differ"):
        _compat.hydra_deprecation_warning("Future Hydra versions will differ")


@pytest.mark.parametrize("read", [True, False])
def test_joblib_settings_are_made_as_hydras_joblib_launcher_makes_them(
    read: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf

    if not read:
        monkeypatch.setattr(_compat, "HYDRA_JOBLIB_READ", ("0.0",))
    defaults: dict[str, Any] = OmegaConf.to_container(OmegaConf.structured(JobLibLauncherConf))  # type: ignore[assignment]
    given = {**defaults, "n_jobs": 2, "batch_size": "4", "max_nbytes": "1M", "pre_dispatch": "8"}
    settings = _compat.joblib_parallel_settings(given)
    assert settings == {**given, "batch_size": 4, "pre_dispatch": 8}  # "1M" stays a string, as joblib reads it
    assert given["batch_size"] == "4"  # a copy
    assert _compat.joblib_parallel_settings(defaults) == defaults  # "auto", "2*n_jobs", null: as they are


def _not_read(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(_compat, name, ("0.0",))
    _compat.release_read.cache_clear()  # the autouse fixture clears it again after the test


@pytest.fixture(autouse=True)
def _fresh_release_cache() -> Any:
    _compat.release_read.cache_clear()
    yield
    _compat.release_read.cache_clear()


@pytest.mark.parametrize("read", [True, False])
def test_a_failed_jobs_exception_is_read_without_raising_or_writing(
    read: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hydra.core.utils import JobReturn, JobStatus

    if not read:
        _not_read(monkeypatch, "HYDRA_READ")
    assert hasattr(JobReturn(), "_return_value"), "Hydra's JobReturn no longer keeps _return_value"
    error = ValueError("boom")
    failed = JobReturn(overrides=["seed=1"], status=JobStatus.FAILED)
    failed.return_value = error
    done = JobReturn(overrides=["seed=2"], status=JobStatus.COMPLETED)
    done.return_value = {"loss": 0.5}
    assert _compat.job_return_value(failed) is error
    assert _compat.job_return_value(done) == {"loss": 0.5}
    assert _compat.job_return_value(None) is None
    assert capsys.readouterr().err == ""


def test_flush_loggers_flushes_every_handler_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    flushed: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            pass

        def flush(self) -> None:
            flushed.append(self.name or "")

    handler = Handler()
    handler.set_name("ours")
    logger = logging.getLogger("explaunch.test_compat.flush")
    logger.addHandler(handler)
    try:
        _compat.flush_loggers()
        assert flushed == ["ours"]
        _not_read(monkeypatch, "HYDRA_READ")
        _compat.flush_loggers()
        assert flushed == ["ours", "ours"]
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "seed=1,2", "model=llama"],
        ["--multirun", "-cn", "other", "x=1"],
        ["--cfg", "job", "--resolve", "-p", "model"],
        ["--info", "-cd", "/tmp/conf", "--config-path", "conf"],
        ["--hydra-help"],
        ["-sc", "-r"],
        ["--experimental-rerun", "a.pickle"],
    ],
)
def test_the_fallback_parser_reads_a_command_line_as_hydras_does(argv: list[str]) -> None:
    hydras = vars(_compat.hydra_args_parser().parse_args(argv))
    ours = vars(_compat._own_args_parser().parse_args(argv))
    assert ours == hydras


@pytest.mark.parametrize("read", [True, False])
def test_job_yaml_files_read_back_as_omegaconf_writes_them(read: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from explaunch.job import jobrun

    if not read:
        assert _compat.omegaconf_yaml_representers() is not None, "omegaconf's get_omega_conf_dumper is gone"
        monkeypatch.setattr(jobrun, "_REPRESENTERS", None)
    container = {"a": "1", "b": "true", "c": "${x}", "d": None, "e": ["null", 2.5, "~"], "f": {"g": "on", "h": ""}}
    text = jobrun.dump_yaml(container)
    assert text == OmegaConf.to_yaml(OmegaConf.create(container))


@pytest.mark.parametrize("read", [True, False])
def test_a_child_node_is_had_unresolved(read: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from explaunch.config_rules import without_hydra

    if not read:
        _not_read(monkeypatch, "OMEGACONF_READ")
    cfg = OmegaConf.create({"hydra": {"job": {"name": "x"}}, "model": {"name": "m"}, "ref": "${model.name}"})
    model = _compat.config_node(cfg, "model")
    assert model is cfg.model
    ref = _compat.config_node(cfg, "ref")
    assert ref is None if not read else ref._value() == "${model.name}"
    copied = without_hydra(cfg)
    assert "hydra" not in copied and copied.ref == "m" and "hydra" in cfg


@pytest.mark.parametrize(
    ("body", "status", "out"),
    [
        # nothing else alive: exit handlers run, buffered output flushed, the status kept
        (
            "atexit.register(lambda: print('handler ran'))\nprint('buffered')\n_compat.exit_fast(3)",
            3,
            "buffered\nhandler ran\n",
        ),
        # a non-daemon thread still running: Python's own exit, which waits for it
        (
            "threading.Thread(target=lambda: (time.sleep(0.3), print('thread ended'))).start()\n"
            "_compat.exit_fast(None)",
            0,
            "thread ended\n",
        ),
        # joblib's idle workers alive (Hydra's joblib launcher leaves them): ended as Python's exit would end them,
        # then the fast exit (without ending them, multiprocessing's exit handler would wait for them forever); the
        # object's __del__ is not run: no teardown of the modules
        (
            "from joblib import Parallel, delayed\nprint(Parallel(n_jobs=2)(delayed(abs)(i) for i in range(-2, 0)))\n"
            "class Torn:\n    def __del__(self):\n        print('torn down')\n"
            "kept = Torn()\n_compat.exit_fast('bye')",
            1,
            "[2, 1]\n",
        ),
        # the same, with Python's own exit: the modules torn down
        (
            "from joblib import Parallel, delayed\nprint(Parallel(n_jobs=2)(delayed(abs)(i) for i in range(-2, 0)))\n"
            "class Torn:\n    def __del__(self):\n        print('torn down')\n"
            "kept = Torn()\nraise SystemExit('bye')",
            1,
            "[2, 1]\ntorn down\n",
        ),
    ],
)
def test_a_fast_exit_ends_as_python_would(body: str, status: int, out: str) -> None:
    import subprocess
    import sys

    code = "import atexit, threading, time\nfrom explaunch import _compat\n" + body + "\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert (proc.returncode, proc.stdout) == (status, out), proc.stderr
    if status == 1:
        assert proc.stderr.endswith("bye\n")


@pytest.mark.parametrize("read", [True, False])
def test_mlflows_system_metrics_reach_the_jobs_run_on_both_paths(
    read: bool, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import mlflow

    if not read:
        _not_read(monkeypatch, "MLFLOW_READ")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("system-metrics")).info.run_id
    previous_uri = mlflow.get_tracking_uri()
    monkeypatch.delenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", raising=False)  # the fallback sets it: undone after
    try:
        monitor = _compat.mlflow_system_metrics(run_id, uri, 0.2)
        time.sleep(1.0)
        monitor.finish()
    finally:
        mlflow.set_tracking_uri(previous_uri)
    assert mlflow.active_run() is None  # the fallback's fluent run is ended with it
    names = set(client.get_run(run_id).data.metrics)
    assert any(name.startswith("system/") for name in names), names


def test_a_fast_exit_does_not_wait_for_a_thread_pool_only_pythons_exit_ends() -> None:
    """An idle ThreadPoolExecutor's worker ends only when Python's exit tells it to: no waiting for it first."""
    import subprocess
    import sys
    import time

    code = (
        "from concurrent.futures import ThreadPoolExecutor\nfrom explaunch import _compat\n"
        "pool = ThreadPoolExecutor(1)\npool.submit(print, 'pooled').result()\n_compat.exit_fast(5)\n"
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert (proc.returncode, proc.stdout) == (5, "pooled\n"), proc.stderr
    assert time.monotonic() - started < _compat.EXIT_WAIT_S, "it waited for a thread only Python's exit ends"
