"""What counts as a secret, and the one way it is removed before anything leaves the process.

Everything the project writes or serves (``.hydra/*.yaml``, ``multirun.yaml``, ``job.json``, ``plan.json``, the
ledger, ``git.patch``, MLflow params, tags and artifacts, the dashboard, reproduce archives) goes through these
functions; nothing else decides what a secret is.

- A config key (or tag, or override) is secret when a secret *word* is a whole word of its last part: ``api_token``,
  ``tracking.password``, ``db_passwd``, ``private_key``; not ``max_new_tokens`` or ``num_key_value_heads``, which are
  model settings. ``EXPLAUNCH_SECRET_PATTERN`` (a regular expression, searched case-insensitively in that last part)
  marks more keys as secret; it never un-marks one.
- An environment variable is secret when its name contains TOKEN, KEY, SECRET, PASSWORD or CREDENTIAL, or matches
  ``EXPLAUNCH_SECRET_PATTERN``.
- A value that came from ``${oc.env:NAME}`` is secret wherever it ends up once resolved. Unresolved text (Hydra's
  files, overrides) keeps ``${oc.env:NAME}`` as written, so that a rerun resolves it again.
- Credentials inside URLs (``https://user:pw@host``) are stripped.

A redacted value is ``<redacted>``; where a secret's value was also copied into another string (an
``override_dirname``, a job name, an interpolation), that copy is replaced as well.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

REDACTED = "<redacted>"
SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "CREDENTIAL")
PATTERN_VARIABLE = "EXPLAUNCH_SECRET_PATTERN"
_SECRET_KEY = re.compile(
    r"(?:^|[_.\-])(token|secret|password|passwd|credentials?|auth|(?:api|access|secret|private)_?key)(?:$|[_.\-])",
    re.IGNORECASE,
)
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
_ENV_REFERENCE = re.compile(r"oc\.env:\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)")
_INTERPOLATION_ONLY = re.compile(r"^\$\{[^{}]*\}$")
_ENV_ONLY = re.compile(r"^\$\{oc\.env:\s*[A-Za-z_][A-Za-z0-9_]*\s*\}$")
# Set while explaunch.job.jobrun runs a job: it wrote ``.hydra/`` redacted already, the callback need not rewrite it.
hydra_files_redacted: ContextVar[bool] = ContextVar("hydra_files_redacted", default=False)
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
_MIN_SCRUBBED_CHARS = 4  # a shorter secret copied into other text is not searched for ("1" would hit everything)


@functools.lru_cache(maxsize=8)
def _user_pattern(text: str) -> re.Pattern[str] | None:
    return re.compile(text, re.IGNORECASE) if text else None


def user_pattern() -> re.Pattern[str] | None:
    """``EXPLAUNCH_SECRET_PATTERN`` compiled (None when unset); an invalid one is an error, not silently ignored."""
    return _user_pattern(os.environ.get(PATTERN_VARIABLE, ""))


def is_secret(name: str) -> bool:
    """Config keys, tags and overrides: a secret word as a whole word of the (last part of the) name."""
    last = name.rpartition(".")[2]
    pattern = user_pattern()
    return bool(_SECRET_KEY.search(last)) or bool(pattern is not None and pattern.search(last))


def is_secret_variable(name: str) -> bool:
    """Environment variables: any name containing one of SECRET_WORDS (or matching the user's pattern)."""
    upper = name.upper()
    pattern = user_pattern()
    return any(word in upper for word in SECRET_WORDS) or bool(pattern is not None and pattern.search(name))


def is_env_reference(value: Any) -> bool:
    """``${oc.env:NAME}`` exactly (as written, or escaped as an override: ``$\\{oc.env\\:NAME\\}``): safe to write
    as is, it holds the variable's name, not its value."""
    return isinstance(value, str) and bool(_ENV_ONLY.match(value.strip("'\"").replace("\\", "")))


def _url_credentials(match: re.Match[str]) -> str:
    """``user:pw@`` goes; ``user:${...}@`` stays (unresolved text: an interpolation, resolved again by a rerun)."""
    password = match.group(0)[:-1].partition(":")[2].replace("\\", "")
    return match.group(0) if _INTERPOLATION_ONLY.match(password) else ""


def strip_url_credentials(text: str) -> str:
    return _URL_CREDENTIALS.sub(_url_credentials, text)


def redact(name: str, value: Any) -> Any:
    """``value`` with secrets removed: by the key it is stored under, or credentials inside a URL."""
    if is_secret(name):
        return REDACTED
    if isinstance(value, str):
        return strip_url_credentials(value)
    return value


def redact_override(override: str) -> str:
    """``tracking.api_token=abc`` -> ``tracking.api_token=<redacted>``; ``password=${oc.env:PW}`` and other
    overrides unchanged."""
    key, sep, value = override.partition("=")
    if not sep or is_env_reference(value):
        return override
    return f"{key}{sep}{redact(key.lstrip('+~'), value)}"


def redact_tree(data: Any, name: str = "") -> Any:
    """A copy of nested dicts/lists with every secret-named key's value redacted."""
    if isinstance(data, Mapping):
        return {k: REDACTED if is_secret(str(k)) else redact_tree(v, str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact_tree(v, name) for v in data]
    return redact(name, data)


# ---- configs: resolved (records, MLflow params) and unresolved (Hydra's files) ----------------------------------


def secret_values(unresolved: Any, environ: Mapping[str, str] | None = None) -> set[str]:
    """Every secret text an unresolved config holds or points at: the values of secret keys and of secret overrides,
    and the values of the environment variables it reads with ``oc.env``."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()

    def walk(node: Any, name: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, str(key))
        elif isinstance(node, list):
            for value in node:
                walk(value, name)
        elif isinstance(node, str):
            for variable in _ENV_REFERENCE.findall(node):
                if environ.get(variable):
                    found.add(environ[variable])
            if is_secret(name) and not is_env_reference(node) and "${" not in node:
                found.add(node)
            key, sep, value = node.partition("=")
            if sep and is_secret(key.lstrip("+~")) and not is_env_reference(value):
                found.update({value, value.strip("'\""), value.replace("\\", "")})  # as given, unquoted, unescaped

    walk(unresolved, "")
    return {value for value in found if len(value) >= _MIN_SCRUBBED_CHARS and value != REDACTED}


def scrub(text: str, values: Iterable[str]) -> str:
    """``text`` with every copy of a secret value replaced."""
    for value in sorted(values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact_resolved(resolved: Any, unresolved: Any, values: Iterable[str] | None = None) -> Any:
    """A resolved config (a container) fit to record: secret keys redacted, every value read from ``oc.env``
    redacted, and copies of either replaced wherever they were interpolated. ``unresolved``: the same config before
    resolution, which says where the values came from; ``values``: the secret texts (default: those it holds)."""
    values = secret_values(unresolved) if values is None else set(values)

    def walk(node: Any, raw: Any, name: str) -> Any:
        if isinstance(node, Mapping):
            raw_map = raw if isinstance(raw, Mapping) else {}
            return {k: REDACTED if is_secret(str(k)) else walk(v, raw_map.get(k), str(k)) for k, v in node.items()}
        if isinstance(node, list):
            raw_list = raw if isinstance(raw, list) and len(raw) == len(node) else [None] * len(node)
            return [walk(v, r, name) for v, r in zip(node, raw_list, strict=True)]
        if isinstance(raw, str) and _ENV_REFERENCE.search(raw):
            return REDACTED
        if isinstance(node, str):
            return scrub(redact_override(strip_url_credentials(node)), values)
        return node

    return walk(resolved, unresolved, "")


def redact_unresolved(data: Any, values: Iterable[str] | None = None) -> Any:
    """An unresolved config (a container, as Hydra writes it into ``.hydra/`` and ``multirun.yaml``) fit to write:
    secret keys redacted unless they hold only ``${oc.env:NAME}``, secret overrides redacted, copies of secret values
    replaced. Interpolations are kept as written."""
    found = secret_values(data) if values is None else set(values)

    def walk(node: Any, name: str) -> Any:
        if isinstance(node, Mapping):
            return {k: walk(v, str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, name) for v in node]
        if is_secret(name) and node is not None and not is_env_reference(node):
            return REDACTED
        if isinstance(node, str):
            return scrub(redact_override(strip_url_credentials(node)), found)
        return node

    return walk(data, "")


def redact_hydra_files(folder: Path) -> list[str]:
    """Rewrite the files Hydra's own ``run_job`` wrote into ``folder`` (``.hydra/``) with their secrets redacted;
    the names of those that changed. Hydra has no hook to write them itself: they are rewritten at job start (the
    recording callback), before anything else reads or uploads them."""
    import yaml

    from explaunch.job.jobrun import dump_yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    found = {name: yaml.load(path.read_text(encoding="utf-8"), Loader=loader) for name in HYDRA_FILES
             if (path := folder / name).is_file()}  # fmt: skip
    values = secret_values(list(found.values()))
    changed = []
    for name, data in found.items():
        redacted = redact_unresolved(data, values)
        if redacted != data:
            tmp = folder / f".{name}.tmp"
            tmp.write_text(dump_yaml(redacted), encoding="utf-8")
            tmp.replace(folder / name)
            changed.append(name)
    return changed


# ---- files: which untracked files may go into git.patch ---------------------------------------------------------

CREDENTIAL_FILES = re.compile(
    r"(^|/)(\.env(\..*)?|.*\.env|.*\.pem|.*\.key|.*\.p12|.*\.pfx|.*\.keystore|.*\.jks|id_[a-z0-9]+(\.pub)?"
    r"|\.netrc|\.pgpass|\.npmrc|\.pypirc|\.git-credentials|credentials?(\..*)?|secrets?(\..*)?|.*_secret(s)?(\..*)?"
    r"|tokens?(\..*)?|.*_token(\..*)?|passwords?(\..*)?)$",
    re.IGNORECASE,
)


def looks_like_credentials(relative_path: str) -> bool:
    """A file never copied into a record, whatever the settings: ``.env*``, keys, certificates, ``id_*``..."""
    return bool(CREDENTIAL_FILES.search(relative_path))


# ---- git.patch: the uncommitted changes of the code, config files among them --------------------------------------
# One line of a config file, its key judged by is_secret as a config key is: YAML ``key: value`` (``- key: value``),
# ``key = value``, JSON ``"key": "value",``, env-style ``export KEY=value``.
_CONFIG_LINE = re.compile(
    r"""^(?P<head>\s*(?:-\s+|export\s+)?(?P<quote>["']?)(?P<key>[A-Za-z_][\w.\-]*)(?P=quote)\s*[:=]\s*)"""
    r"""(?P<value>.*?)(?P<tail>\s*,?\s*)$"""
)


def redact_config_line(line: str) -> str:
    """One line of a config file with the value of a secret-named key redacted (its quotes and a JSON comma kept);
    ``${oc.env:NAME}`` and a value that opens a nested block (judged line by line) are kept."""
    match = _CONFIG_LINE.match(line)
    if match is None or not is_secret(match["key"]):
        return line
    value = match["value"]
    if value in ("", "{", "[") or is_env_reference(value):
        return line
    quote = value[0] if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0] else ""
    return f"{match['head']}{quote}{REDACTED}{quote}{match['tail']}"


def redact_patch(patch: str) -> str:
    """``git diff`` output fit to record: in each hunk's lines (added, removed and context alike) the value of a
    secret-named key is redacted as in a config file and credentials in URLs are stripped; everywhere, every secret
    text this process knows (:func:`install_log_redaction`) is replaced. A ``key=value`` inside a line is left to
    that last step: in code, ``token=token`` passes a variable. A redacted line no longer matches the file it came
    from, so such a patch may not apply."""
    lines, in_hunk = patch.split("\n"), False  # not splitlines(): a form feed in a line does not end it in git
    for i, line in enumerate(lines):
        if line.startswith("@@"):
            in_hunk = True
        elif not line.startswith(("+", "-", " ", "\\")):  # a file's header, a binary patch: no hunk lines
            in_hunk = False
        elif in_hunk and not line.startswith("\\"):
            body = line[1:].removesuffix("\r")
            lines[i] = line[0] + strip_url_credentials(redact_config_line(body)) + line[1 + len(body) :]
    return scrub("\n".join(lines), _known_values.copy())


# ---- log lines: Hydra's launchers log every job's overrides ("Launching job #0 locally: ... api_token=...") ------
_ASSIGNMENT = re.compile(r"(?P<key>[+~]{0,2}[A-Za-z_][\w.\-/@]*)=(?P<value>\S+)")
_known_values: set[str] = set()  # secret texts this process has seen in a config (see install_log_redaction)


def redact_text(text: str) -> str:
    """A free-form line (a log message) with secrets removed: ``key=value`` pairs whose key is secret, credentials in
    URLs, and every secret text registered with :func:`install_log_redaction`."""
    text = strip_url_credentials(text)

    def pair(match: re.Match[str]) -> str:
        key, value = match.group("key"), match.group("value")
        return f"{key}={REDACTED}" if is_secret(key.lstrip("+~")) and not is_env_reference(value) else match.group(0)

    return scrub(_ASSIGNMENT.sub(pair, text), _known_values)


_factory_installed = False


def _redacting_factory(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted: its handler reports it as it would
            return record
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    return make


def install_log_redaction(config: Any = None) -> None:
    """Remember the secret texts of ``config`` (a DictConfig or container, unresolved) and, once per process, have
    every log record made from now on carry its message with secrets removed (:func:`redact_text`), through
    ``logging.setLogRecordFactory``: it holds whatever handlers Hydra configures later (``hydra_logging`` before
    each launch, ``job_logging`` in each job, a user's own choice) and every logger (Hydra's launchers log each
    job's overrides). Called at ``on_multirun_start``, ``on_run_start`` and ``on_job_start``."""
    global _factory_installed
    if config is not None:
        from omegaconf import DictConfig, OmegaConf

        data = OmegaConf.to_container(config, resolve=False) if isinstance(config, DictConfig) else config
        _known_values.update(secret_values(data))
    if not _factory_installed:
        logging.setLogRecordFactory(_redacting_factory(logging.getLogRecordFactory()))
        _factory_installed = True
