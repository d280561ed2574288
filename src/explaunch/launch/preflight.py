"""Check the command line before Hydra starts anything: bad input ends here with one line and exit code 2.

Hydra's own reports of a composition error span several lines (search path, hints) and a value out of range would
only surface inside a job. Here the command line is composed the way Hydra will compose it and the result validated.
What depends on the whole job (the extra its experiment type needs, the GPUs it is given) is checked on each job's
own config, never on the base config whose defaults a sweep overrides: explaunch's sweeper composes and validates
every job of the grid in its plan (explaunch.launch.plan), before it writes anything; with another sweeper every job
of the grid is composed here (plain values without a new composition, see explaunch.launch.composition).
The settings of our sweeper and of the launchers we ship presets for (``hydra.sweeper.*``, ``hydra.launcher.*``)
are checked against their dataclasses' ``spec`` rules the same way, and the output folder must be creatable.
Only explaunch's own app (:func:`explaunch.config.is_explaunch_config`) is held to explaunch's schema.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from explaunch.config import is_explaunch_config, schema_keys, validate, validate_node
from explaunch.errors import EXIT_USAGE, ConfigError
from explaunch.launch.composition import JobComposer

# Hydra flags that print or inspect instead of running jobs: Hydra handles those alone.
_INSPECTING_FLAGS = ("help", "hydra_help", "cfg", "info", "shell_completion", "experimental_rerun")


def check_command_line(config_dir: Path, config_name: str, argv: Sequence[str] | None = None) -> None:
    """Exit with status 2 and one ``error:`` line on stderr when the command line asks for a bad config."""
    from explaunch._compat import hydra_args_parser  # Hydra's own parser: the flags stay Hydra's

    args = hydra_args_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    check_secret_pattern()
    if any(getattr(args, flag, None) for flag in _INSPECTING_FLAGS) or args.config_dir or args.config_path:
        return
    try:
        check_overrides(config_dir, args.config_name or config_name, args.overrides, multirun=args.multirun)
    except ConfigError as ex:
        print(f"error: {ex}", file=sys.stderr)
        raise SystemExit(ex.exit_code) from None


def check_secret_pattern() -> None:
    """``EXPLAUNCH_SECRET_PATTERN`` must compile: a pattern that does not would leave secrets unredacted."""
    import re

    from explaunch.redaction import PATTERN_VARIABLE, user_pattern

    try:
        user_pattern()
    except re.error as ex:
        value = os.environ.get(PATTERN_VARIABLE, "")
        print(f"error: {PATTERN_VARIABLE}={value!r}: not a valid regular expression ({ex})", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def check_overrides(config_dir: Path, config_name: str, overrides: Sequence[str], *, multirun: bool) -> None:
    """Raise the first :class:`ConfigError` among the jobs these overrides would start."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir.resolve()), version_base="1.3"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        try:
            parsed = parser.parse_overrides(list(overrides))
        except HydraException as ex:
            for given in overrides:  # a rule with spaces and > < = is not a plain value in Hydra's grammar
                key, _, value = given.partition("=")
                if key.lstrip("+") == "hydra.sweeper.stop_when" and value[:1] not in ("'", '"'):
                    hint = f"quote the rule: 'hydra.sweeper.stop_when=\"{value}\"'"
                    raise ConfigError("hydra.sweeper.stop_when", value, hint) from None
            raise ConfigError("command line", " ".join(overrides), _first_line(ex)) from None
        fixed = [str(o.input_line) for o in parsed if not o.is_sweep_override()]
        swept = {o.get_key_element(): o for o in parsed if o.is_sweep_override()}
        if swept and not multirun:
            key, first = next(iter(swept.items()))
            value = str(first.input_line).partition("=")[2]
            raise ConfigError(key, value, "a list of values needs -m/--multirun")

        base = _compose(config_name, fixed, fixed, return_hydra_config=True)
        check_settings(base)
        check_output_folder(base, multirun=multirun)
        if multirun:  # grids written in config (hydra.sweeper.params) are swept too, unless the shell overrides a key
            params = OmegaConf.select(base, "hydra.sweeper.params", default=None) or {}
            from_config = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
            for o in from_config:
                swept.setdefault(o.get_key_element(), o)
        launcher = OmegaConf.select(base, "hydra.launcher._target_", default=None) if multirun else None
        ours = is_explaunch_config(base)
        if ours:  # with a key swept, the base is no job's config: its jobs' extras and GPUs are checked each below
            validate(base, check_extras=not swept)
            if not swept:
                check_jobs_gpus([base], launcher)
        axes: list[list[str]] = []  # the grid of the jobs' own overrides
        for key, override in swept.items():
            if not override.is_discrete_sweep():
                raise ConfigError(key, override.get_value_element_as_str(), "only lists, range() and glob() sweeps")
            values = [f"{key}={value}" for value in override.sweep_string_iterator()]
            if key.startswith(("hydra.sweeper.", "hydra.launcher.")):  # the job's config holds no hydra node
                for value in values:
                    check_settings(_compose(config_name, [*fixed, value], [value], return_hydra_config=True))
            else:
                axes.append(values)
        # explaunch's sweeper composes and validates every job of the grid before it writes anything (its plan):
        # composing each job here too would double the start-up of a large sweep (64 seeds: 0.7 s)
        planned = str(OmegaConf.select(base, "hydra.sweeper._target_", default="")).endswith(".ExplaunchSweeper")
        if ours and swept and not planned:
            compose_job = JobComposer(
                lambda overrides: compose(config_name, overrides=[*fixed, *overrides]),
                GlobalHydra.instance().config_loader(),
            )
            jobs = [compose_job(list(point)) for point in itertools.product(*axes)]
            for job in jobs:
                validate(job)
            check_jobs_gpus(jobs, launcher)


def check_settings(cfg: DictConfig) -> None:
    """``hydra.sweeper.*`` and ``hydra.launcher.*`` against the rules of the sweeper and launchers explaunch ships
    presets for (their dataclasses' ``spec`` metadata, checked as the job's config is). Another sweeper or launcher
    (one of your own) is left to check its settings itself."""
    from hydra_plugins.explaunch_plugins.config import ExplaunchSweeperConf
    from hydra_plugins.explaunch_plugins.launchers import SETTINGS_SCHEMAS

    schemas = {**SETTINGS_SCHEMAS, ExplaunchSweeperConf._target_: ExplaunchSweeperConf}
    for key in ("hydra.sweeper", "hydra.launcher"):
        node = OmegaConf.select(cfg, key, default=None)
        schema = schemas.get(str(OmegaConf.select(cfg, f"{key}._target_", default="")))
        if isinstance(node, DictConfig) and schema is not None:
            validate_node(node, schema, key)


def check_output_folder(cfg: DictConfig, *, multirun: bool) -> None:
    """The folder Hydra will write (``hydra.sweep.dir`` or ``hydra.run.dir``) must be creatable and writable:
    its nearest existing folder is a folder we may write in. Nothing is created here. A path that only a running job
    can resolve is left to the sweep (which says the same in one line when it cannot create it)."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except OmegaConfBaseException:
        return
    if value is None:
        return
    problem = folder_problem(Path(str(value)))
    if problem is not None:
        raise ConfigError(key, value, problem)


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be created and written to, or None."""
    path = folder.expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot be created: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is read-only" if _read_only_mount(existing) else "is not writable by this user"
        return f"cannot be {'written' if existing == path else 'created'}: {existing} {what}"
    return None


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_jobs_gpus(configs: Iterable[DictConfig], launcher: str | None) -> None:
    """Each job's ``hardware`` (from its own composed, validated config) against the GPUs visible here
    (:func:`check_gpus_visible`): each distinct choice once, as NVML is opened for each."""
    seen: set[tuple[str, tuple[int, ...]]] = set()
    for cfg in configs:
        hardware = (str(cfg.hardware.device), tuple(int(i) for i in cfg.hardware.gpu_ids))
        if hardware not in seen:
            seen.add(hardware)
            check_gpus_visible(*hardware, launcher)


def check_gpus_visible(device: str, gpu_ids: Sequence[int], launcher: str | None) -> None:
    """``hardware.gpu_ids`` must name GPUs visible here when the jobs run here. Jobs sent to SLURM run on nodes this
    login node may not see, and are checked there (the job's own validation and device resolution)."""
    if device == "cpu" or (launcher is not None and "slurm" in launcher.lower()):
        return
    wanted = list(gpu_ids)
    if not wanted:  # "every visible GPU": a job that finds none says so itself (hardware.device=cuda)
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as ex:  # no library, no driver, no device
        raise ConfigError(
            "hardware.gpu_ids",
            wanted,
            f"no GPU is visible here (NVML: {type(ex).__name__}); use hardware=cpu, or run where the GPUs are",
        ) from None
    try:
        from explaunch.measure.counters import select_gpus

        select_gpus(pynvml, visible, wanted)
    except ValueError as ex:
        raise ConfigError("hardware.gpu_ids", wanted, str(ex)) from None
    finally:
        pynvml.nvmlShutdown()


def _compose(config_name: str, overrides: list[str], suspects: list[str], *, return_hydra_config: bool) -> DictConfig:
    """Compose as Hydra would; turn a composition error into a ConfigError about the override that caused it."""
    try:
        return compose(config_name, overrides=overrides, return_hydra_config=return_hydra_config)
    except HydraException as ex:
        raise composition_error(ex, suspects) from None


def composition_error(ex: HydraException | OmegaConfBaseException, suspects: list[str]) -> ConfigError:
    """Hydra's composition error as one line: the key and value at fault (among ``suspects``) and what is allowed."""
    if isinstance(ex, MissingConfigException):
        if ex.missing_cfg_file and ex.options is not None:
            group, _, option = ex.missing_cfg_file.rpartition("/")
            allowed = ", ".join(sorted(ex.options)) or "(none)"
            return ConfigError(group, option, f"no such option in group '{group}'; allowed: {allowed}")
        return ConfigError("config", ex.missing_cfg_file or "?", _first_line(ex))
    cause = ex if isinstance(ex, OmegaConfBaseException) else ex.__cause__
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        key = str(cause.full_key)
        value = _value_of(key, suspects)
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
            known = schema_keys(key.rpartition(".")[0])
            return ConfigError(key, value, "no such key" + (f"; keys here: {', '.join(known)}" if known else ""))
        return ConfigError(key, value, _first_line(cause))
    from explaunch.redaction import redact_override

    return ConfigError("override", " ".join(redact_override(s) for s in suspects), _first_line(ex))


def _value_of(key: str, overrides: list[str]) -> str:
    for line in overrides:
        name, _, value = line.lstrip("+~").partition("=")
        if name == key:
            return value
    return "?"


def _first_line(ex: BaseException) -> str:
    text = getattr(ex, "msg", None) or str(ex)
    return text.strip().splitlines()[0] if text.strip() else type(ex).__name__
