"""A job's ``job.json`` and its rerun's (:mod:`explaunch.review.rerun`, or any other job folder) compared:
REPRODUCED or DIFFERS, row by row.

What is compared:

- **results that must be equal** (the verdict): the status, every metric that is not a measurement of time, energy,
  memory or resources (token counts, FLOPs, accuracy, losses...), every output hash in ``info`` (``output_sha256``:
  the generated token ids), and the resolved config (paths of the code folder and the Python executable aside);
- **measurements** (timings, throughput, energy, memory): shown with their relative change; they decide the verdict
  only when a relative tolerance is given (``rtol``), since a rerun on a loaded or another machine is rarely as fast;
- **the environment** (env hash, git commit and uncommitted changes, packages, Python, hardware, restored
  variables): every difference is listed, as the likely cause of a result that differs, but does not decide.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from explaunch.job.snapshot import PATCH_FILE
from explaunch.review.rerun import RESTORED_ENV
from explaunch.sweepdir import records

REPRODUCED = "REPRODUCED"
DIFFERS = "DIFFERS"
# Metric names that measure time, speed, energy, memory or resources: never expected to repeat exactly.
MEASURED = re.compile(
    r"(_s$|_ms$|time|throughput|latency|ttft|_per_s$|energy|joule|kwh|emissions|memory|_mb$|_gb$|_bytes$|"
    r"resources_|percent|power|_w$|duration|^window_|_mib$|_per_token_j$|_per_query_j$|per_kwh$|per_joule$|"
    r"efficiency$)"
)
OUTPUT_HASH = re.compile(r"(sha256|_hash)$")
MAX_LISTED = 10  # files or packages named in one row

# Row status: SAME and CHANGED never decide the verdict, DIFFERENT does.
SAME, CHANGED, DIFFERENT = "same", "changed", "differs"


@dataclass(frozen=True)
class Row:
    section: str  # result, measured, config, environment
    name: str
    original: Any
    rerun: Any
    status: str  # same, changed (environment / measurement, informational) or differs (decides the verdict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    original_dir: str
    rerun_dir: str
    rows: list[Row]
    rtol: float | None

    @property
    def verdict(self) -> str:
        return DIFFERS if any(r.status == DIFFERENT for r in self.rows) else REPRODUCED

    def summary(self) -> str:
        differing = [r.name for r in self.rows if r.status == DIFFERENT]
        env = [r for r in self.rows if r.section == "environment" and r.status == CHANGED]
        env_text = "; ".join(f"{r.name}: {short(r.original)} -> {short(r.rerun)}" for r in env[:4])
        if len(env) > 4:
            env_text += f"; ... ({len(env) - 4} more)"
        if differing:
            text = f"{DIFFERS}: {', '.join(differing[:MAX_LISTED])}"
            return text + (f" (environment changed: {env_text})" if env else " (no difference in the environment)")
        exact = sum(r.section == "result" for r in self.rows)
        text = f"{REPRODUCED}: {exact} deterministic results equal"
        if self.rtol is None:
            text += "; timings informational (--rtol makes them count)"
        return text + (f"; environment changed: {env_text}" if env else "; same environment")

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "summary": self.summary(),
            "original_dir": self.original_dir,
            "rerun_dir": self.rerun_dir,
            "rtol": self.rtol,
            "rows": [r.to_dict() for r in self.rows],
        }


def short(value: Any) -> str:
    text = "" if value is None else str(value)
    return text[:12] if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", text) else text


def is_measured(metric: str) -> bool:
    return bool(MEASURED.search(metric))


def same_number(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def relative_change(a: float, b: float) -> float | None:
    if a == 0:
        return None if b != 0 else 0.0
    return (b - a) / abs(a)


def compare_results(
    original: records.JobRecord, rerun: records.JobRecord, rtol: float | None = None, ignore: Iterable[str] = ()
) -> list[Row]:
    import fnmatch

    ignored = list(ignore)

    def wanted(name: str) -> bool:
        return not any(fnmatch.fnmatch(name, pattern) for pattern in ignored)

    rows = [
        Row("result", "status", original.status, rerun.status, SAME if original.status == rerun.status else DIFFERENT)
    ]
    if original.error or rerun.error:
        error_a = original.error.type if original.error else None
        error_b = rerun.error.type if rerun.error else None
        rows.append(Row("result", "error", error_a, error_b, SAME if error_a == error_b else DIFFERENT))
    hashes = sorted(k for k in {*original.info, *rerun.info} if OUTPUT_HASH.search(k) and wanted(k))
    for key in hashes:
        hash_a, hash_b = original.info.get(key), rerun.info.get(key)
        rows.append(Row("result", key, hash_a, hash_b, SAME if hash_a == hash_b else DIFFERENT))
    for name in sorted({*original.metrics, *rerun.metrics}):
        if not wanted(name):
            continue
        a, b = original.metrics.get(name), rerun.metrics.get(name)
        if a is None or b is None:
            status = CHANGED if is_measured(name) else DIFFERENT
            rows.append(Row("measured" if is_measured(name) else "result", name, a, b, status, "missing"))
        elif is_measured(name):
            change = relative_change(a, b)
            outside = rtol is not None and (change is None or abs(change) > rtol)
            note = "" if change is None else f"{change:+.1%}"
            status = DIFFERENT if outside else (SAME if same_number(a, b) else CHANGED)
            rows.append(Row("measured", name, a, b, status, note + (f" (beyond rtol {rtol})" if outside else "")))
        else:
            rows.append(Row("result", name, a, b, SAME if same_number(a, b) else DIFFERENT))
    return rows


def _normalized(config: Mapping[str, Any], record: records.JobRecord) -> dict[str, Any]:
    """The flattened config without ``tracking`` and with the code folder and Python paths made placeholders."""
    from explaunch.tracking.store import flatten

    replacements = [
        (record.snapshot.get("code_dir") or "", "<code_dir>"),
        (record.snapshot.get("executable") or "", "<python>"),
    ]
    flat = {k: v for k, v in flatten(config).items() if not k.startswith("tracking.")}

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for old, new in replacements:
                if old:
                    value = value.replace(old, new)
            return value
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {k: clean(v) for k, v in flat.items()}


def compare_config(original: records.JobRecord, rerun: records.JobRecord) -> list[Row]:
    a, b = _normalized(original.config, original), _normalized(rerun.config, rerun)
    rows = [
        Row("config", f"config.{key}", a.get(key), b.get(key), DIFFERENT)
        for key in sorted({*a, *b})
        if a.get(key) != b.get(key)
    ]
    if not rows:
        note = "" if original.config_hash == rerun.config_hash else "hash differs only by code folder/Python paths"
        rows.append(Row("config", "config", f"{len(a)} keys", f"{len(b)} keys", SAME, note))
    return rows


def compare_environment(
    original: records.JobRecord, rerun: records.JobRecord, original_dir: Path, rerun_dir: Path
) -> list[Row]:
    a, b = original.snapshot, rerun.snapshot
    if not a or not b:
        return [Row("environment", "snapshot", bool(a), bool(b), CHANGED, "a snapshot is missing")]
    rows: list[Row] = []

    def add(name: str, x: Any, y: Any, note: str = "") -> None:
        rows.append(Row("environment", name, x, y, SAME if x == y else CHANGED, note))

    add("env_hash", original.env_hash, rerun.env_hash)
    git_a, git_b = a.get("git") or {}, b.get("git") or {}
    add("git commit", git_a.get("commit"), git_b.get("commit"), _changed_files(git_a, git_b))
    add(
        "uncommitted changes",
        git_a.get("patch_sha256"),
        git_b.get("patch_sha256"),
        _patch_note(original_dir / PATCH_FILE, rerun_dir / PATCH_FILE),
    )
    add("python", a.get("python"), b.get("python"))
    packages_a, packages_b = a.get("packages") or {}, b.get("packages") or {}
    for name in sorted({*packages_a, *packages_b}):
        if packages_a.get(name) != packages_b.get(name):
            add(f"package {name}", packages_a.get(name), packages_b.get(name))
    for key in ("system", "machine"):
        add(f"platform {key}", (a.get("platform") or {}).get(key), (b.get("platform") or {}).get(key))
    for key in ("model", "usable_cores"):
        add(f"cpu {key}", (a.get("cpu") or {}).get(key), (b.get("cpu") or {}).get(key))
    add("gpus", sorted(g.get("name") for g in a.get("gpus") or []), sorted(g.get("name") for g in b.get("gpus") or []))
    env_a, env_b = a.get("environment") or {}, b.get("environment") or {}
    for key in RESTORED_ENV:
        if key in env_a or key in env_b:
            add(key, env_a.get(key), env_b.get(key))
    return rows


def _changed_files(git_a: Mapping[str, Any], git_b: Mapping[str, Any]) -> str:
    """The files that differ between two recorded commits, when the rerun's repository holds both."""
    first, second, root = git_a.get("commit"), git_b.get("commit"), git_b.get("root")
    if not (first and second and root) or first == second:
        return ""
    proc = subprocess.run(
        ["git", "diff", "--name-only", first, second], cwd=root, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return "the earlier commit is not in this repository"
    return _files_note(proc.stdout.split())


def _files_note(files: Sequence[str]) -> str:
    if not files:
        return ""
    shown = ", ".join(files[:MAX_LISTED])
    return f"files: {shown}" + (f" ... ({len(files) - MAX_LISTED} more)" if len(files) > MAX_LISTED else "")


def patch_files(path: Path) -> dict[str, str]:
    """A git patch split per file: {path: that file's diff}."""
    if not path.is_file():
        return {}
    files: dict[str, str] = {}
    current = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
        if line.startswith("diff --git "):
            current = line.rstrip("\n").split(" b/", 1)[-1]
            files[current] = ""
        if current is not None:
            files[current] += line
    return files


def _patch_note(a: Path, b: Path) -> str:
    files_a, files_b = patch_files(a), patch_files(b)
    return _files_note(sorted(k for k in {*files_a, *files_b} if files_a.get(k) != files_b.get(k)))


def compare(
    original_dir: Path,
    rerun_dir: Path,
    rtol: float | None = None,
    ignore: Iterable[str] = (),
) -> Comparison:
    original = records.read_job_record(original_dir)
    rerun = records.read_job_record(rerun_dir)
    rows = [
        *compare_results(original, rerun, rtol, ignore),
        *compare_config(original, rerun),
        *compare_environment(original, rerun, original_dir, rerun_dir),
    ]
    return Comparison(str(original_dir), str(rerun_dir), rows, rtol)
