"""The rules a schema's fields carry (:func:`spec`: ``min``/``max``, ``choices``, ``help``) and the checks that read
them: every key of a config node is a field of its dataclass (:func:`check_keys`), every value keeps its field's
rules, nested dataclasses after their scalars, then the dataclass's own ``check(key)`` for rules across fields
(:func:`check_fields`). :func:`explaunch.config.validate` runs them on a job's config, :func:`validate_node` on the
settings of the sweeper and the launchers. A value that breaks a rule is a :class:`~explaunch.errors.ConfigError`
naming the key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import math
import typing
from dataclasses import field, fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException
from omegaconf.nodes import AnyNode

from explaunch import _compat
from explaunch.errors import ConfigError


def spec(
    default: Any,
    *,
    min: float | None = None,  # noqa: A002 - reads best at the call sites
    max: float | None = None,  # noqa: A002
    choices: tuple[str, ...] | None = None,
    help: str = "",  # noqa: A002
) -> Any:
    """A dataclass field with the rules :func:`validate` checks (``min``/``max`` inclusive, ``choices``)."""
    metadata = {"min": min, "max": max, "choices": choices, "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _describe_type(value: object) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return "a value"


def check_fields(obj: Any, prefix: str) -> None:
    """Check scalars before nested nodes, so that ``batch=0`` is reported as ``batch``, not as what interpolates it."""
    nested = []
    for f in fields(obj):
        key = f"{prefix}{f.name}"
        value = getattr(obj, f.name)
        if is_dataclass(value):
            nested.append((value, key + "."))
        elif value is not None:
            _check_value(key, value, f.metadata)
    for value, key in nested:
        check_fields(value, key)
    check = getattr(obj, "check", None)
    if check is not None:
        check(prefix.rstrip("."))


def _check_value(key: str, value: Any, rules: Any) -> None:
    if rules.get("choices") and value not in rules["choices"]:
        raise ConfigError(key, value, "allowed: " + ", ".join(rules["choices"]))
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, value, "must be a finite number")
    low, high = rules.get("min"), rules.get("max")
    if low is not None and value < low:
        bound = f"<= {high}" if high == low else f">= {low}"
        raise ConfigError(key, value, f"must be {_describe_type(value)} {bound}")
    if high is not None and value > high:
        raise ConfigError(key, value, f"must be {_describe_type(value)} <= {high}")


def check_keys(node: DictConfig, schema: Any, prefix: str) -> None:
    """Every key of ``node`` must be a field of its dataclass (a ``+key=...`` override can add any key)."""
    if not (isinstance(schema, type) and is_dataclass(schema)):
        return
    known = [f.name for f in fields(schema)]
    hints = typing.get_type_hints(schema)
    for key in node:
        name = str(key)
        if name not in known:
            given: Any = OmegaConf.to_container(node, resolve=False)
            raise ConfigError(f"{prefix}{name}", given[name], "no such key; keys here: " + ", ".join(known))
        child = _compat.config_node(node, name)
        if isinstance(child, DictConfig):
            child_schema = OmegaConf.get_type(child) if hints.get(name) is Any else hints.get(name)
            check_keys(child, child_schema, f"{prefix}{name}.")


def without_hydra(cfg: DictConfig) -> DictConfig:
    """A deep copy of ``cfg`` less its ``hydra`` node, which is not copied to be dropped (it holds more than half
    of a composed config's nodes): deepcopy takes the placeholder found in its memo in its stead."""
    memo: dict[int, Any] = {}
    hydra_node = _compat.config_node(cfg, "hydra") if "hydra" in cfg else None
    if hydra_node is not None:
        memo[id(hydra_node)] = AnyNode(None)
    task_cfg = copy.deepcopy(cfg, memo)
    with read_write(task_cfg), open_dict(task_cfg):
        task_cfg.pop("hydra", None)
    return task_cfg


def validate_node(node: DictConfig, schema: type, key: str) -> Any:
    """Check a node outside the job's config (``hydra.sweeper``, ``hydra.launcher``) against the dataclass
    ``schema``, as :func:`validate` checks the job's: unknown keys, then the ``spec`` rules and the schema's
    ``check``; return the schema's instance. A value that cannot be resolved before a job runs (``${hydra.job.num}``)
    is left unchecked (None in the instance)."""
    check_keys(node, schema, f"{key}.")
    known = {f.name: f for f in fields(schema)}
    values: dict[str, Any] = {}
    for name in (str(k) for k in node if str(k) in known):
        try:
            value = node[name]
        except OmegaConfBaseException:
            value = None
        nested = known[name].default_factory  # a nested settings dataclass (hydra.sweeper.limits): checked as one
        if isinstance(value, DictConfig) and callable(nested) and is_dataclass(sub := nested()):
            values[name] = validate_node(value, type(sub), f"{key}.{name}")
            continue
        values[name] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    obj = schema(**values)
    check_fields(obj, f"{key}.")
    return obj
