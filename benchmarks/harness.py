"""The suite's runner parts: timed subprocesses, statistics, the result file of each benchmark, the table, the verdict.

Ratios are taken between variants run interleaved in the same run (drift and other load hit every variant alike);
absolute times on these shared machines are not comparable across runs. Every result file carries the machine, the
versions and the raw timings, so a figure can be checked or recomputed later.
"""

from __future__ import annotations

import json
import operator
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from explaunch.table import format_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
MAIN = ROOT / "main.py"
PACKAGES = ("explaunch", "torch", "transformers", "hydra-core", "omegaconf", "mlflow", "codecarbon", "joblib")

CODE_PATHS = ("src", "conf", "main.py", "benchmarks", ":!benchmarks/results")  # what the figures depend on
MET, MISSED, INFO, SKIPPED, ERROR = "met", "MISSED", "info", "skipped", "ERROR"
_OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge}


# ---- statistics -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spread:
    """Median and spread of repeated measurements (quartiles only mean something from 4 values on)."""

    n: int
    median: float
    min: float
    max: float
    q1: float
    q3: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no measurements")
        ordered = sorted(values)
        if len(ordered) >= 4:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1, q3 = ordered[0], ordered[-1]
        return cls(len(ordered), statistics.median(ordered), ordered[0], ordered[-1], q1, q3)


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Ratios of the measurements taken side by side (repeat i of one variant over repeat i of the other)."""
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def abba_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Ratios of an ABBA design, one per block: repeats 2k and 2k+1 were taken in opposite orders (A B, then B A),
    so each variant holds one earlier and one later place in the block and a drift that is linear over the block
    cancels in (a[2k] + a[2k+1]) / (b[2k] + b[2k+1]). A ratio per pair (A/B, then A/B of the reversed pair) keeps
    the drift with alternating signs, which the median of an odd count does not cancel. An odd last repeat is left
    out."""
    if len(numerator) != len(denominator):
        raise ValueError(f"{len(numerator)} repeats against {len(denominator)}: not side by side")
    return [
        (numerator[i] + numerator[i + 1]) / (denominator[i] + denominator[i + 1])
        for i in range(0, len(numerator) - 1, 2)
    ]


# ---- targets and rows -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    op: str  # "<=" or ">="
    bound: float

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"target op {self.op!r}: allowed {sorted(_OPS)}")

    def met(self, value: float) -> bool:
        return _OPS[self.op](value, self.bound)

    def miss(self, value: float) -> float:
        """How far ``value`` lies on the wrong side of the bound (0 when met)."""
        return 0.0 if self.met(value) else abs(value - self.bound)


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, its spread, and (when it has one) the target it is held to."""

    bench: str  # B1 ... B7
    label: str
    value: float | None
    unit: str  # "x", "%", "s", "ratio"
    target: Target | None = None
    low: float | None = None  # spread of the value (min/max of the repeats or of paired ratios)
    high: float | None = None
    detail: str = ""
    status_override: str | None = None  # SKIPPED or ERROR

    @property
    def status(self) -> str:
        if self.status_override is not None:
            return self.status_override
        if self.target is None or self.value is None:
            return INFO
        return MET if self.target.met(self.value) else MISSED

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


def skipped(bench: str, label: str, why: str) -> Row:
    return Row(bench, label, None, "", detail=f"skipped: {why}", status_override=SKIPPED)


def errored(bench: str, label: str, why: str) -> Row:
    return Row(bench, label, None, "", detail=f"error: {why}", status_override=ERROR)


@dataclass
class BenchResult:
    """What one benchmark writes to ``benchmarks/results/<id>.json``: settings, raw timings, derived rows."""

    id: str
    title: str
    rows: list[Row]
    settings: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)  # raw timings, per variant, in run order
    stats: dict[str, Spread] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0  # how long the benchmark itself took

    def to_dict(self, machine: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine,
            "settings": self.settings,
            "rows": [row.to_dict() for row in self.rows],
            "met": all(row.status in (MET, INFO, SKIPPED) for row in self.rows),
            "stats": {name: asdict(spread) for name, spread in self.stats.items()},
            "raw": self.raw,
            "notes": self.notes,
            "benchmark_wall_s": self.wall_s,
        }


def write_result(result: BenchResult, machine: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{result.id}.json"
    path.write_text(json.dumps(result.to_dict(machine), indent=2) + "\n")
    return path


# ---- the table and the verdict --------------------------------------------------------------------------------
def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "jobs":
        return f"{value:.0f} jobs"
    return f"{value:.3f}"


def table_rows(rows: Sequence[Row]) -> list[dict[str, str]]:
    out = []
    for row in rows:
        spread = ""
        if row.low is not None and row.high is not None:
            spread = f"{_number(row.low, row.unit)} .. {_number(row.high, row.unit)}"
        target = f"{row.target.op} {_number(row.target.bound, row.unit)}" if row.target else ""
        out.append(
            {
                "id": row.bench,
                "what": row.label,
                "value": _number(row.value, row.unit),
                "spread": spread,
                "target": target,
                "status": row.status,
                "detail": row.detail,
            }
        )
    return out


COLUMNS = ("id", "what", "value", "spread", "target", "status", "detail")


def format_rows(rows: Sequence[Row]) -> str:
    return format_table(table_rows(rows), COLUMNS)


def format_markdown(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for cells in table_rows(rows):
        lines.append("| " + " | ".join(cells[c].replace("|", "/") for c in COLUMNS) + " |")
    return "\n".join(lines)


def failures(rows: Sequence[Row]) -> list[str]:
    """One line per missed target or failed benchmark, saying by how much."""
    lines = []
    for row in rows:
        if row.status == ERROR:
            lines.append(f"{row.bench} {row.label}: benchmark failed ({row.detail})")
        elif row.status == MISSED and row.target is not None and row.value is not None:
            miss = row.target.miss(row.value)
            relative = f", {100 * miss / abs(row.target.bound):.0f}% off" if row.target.bound else ""
            lines.append(
                f"{row.bench} {row.label}: {_number(row.value, row.unit)} misses the target "
                f"{row.target.op} {_number(row.target.bound, row.unit)} by {_number(miss, row.unit)}{relative}"
            )
    return lines


def exit_code(rows: Sequence[Row]) -> int:
    """0 when every target is met (skipped rows and figures without a target do not count), else 1."""
    return 1 if failures(rows) else 0


# ---- the machine ----------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def machine_info() -> dict[str, Any]:
    """The machine, the versions and the code the figures belong to (taken once per suite run)."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
        "versions": package_versions(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty_paths": _git("status", "--porcelain", "--", *CODE_PATHS).splitlines(),
    }


# ---- running things -------------------------------------------------------------------------------------------
def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell gives: MLflow's default store in the cwd, no telemetry."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "MLFLOW_DISABLE_TELEMETRY": "true", "HYDRA_FULL_ERROR": "0", **extra}


class CommandFailed(RuntimeError):
    pass


def timed_run(cmd: Sequence[str], cwd: Path, timeout: float = 600) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall time of a whole command (process start to exit); raises CommandFailed with its last stderr lines."""
    start = time.perf_counter()
    done = subprocess.run(
        list(cmd),
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise CommandFailed(f"exit {done.returncode}: {' '.join(cmd[1:])[:160]}: {tail}")
    return elapsed, done


def main_py(*overrides: str) -> list[str]:
    """``python main.py -m OVERRIDES`` with this interpreter."""
    return [sys.executable, str(MAIN), "-m", *overrides]


def run_json_worker(module: str, args: Sequence[str], timeout: float = 600) -> dict[str, Any]:
    """Run ``python -m module args`` (an in-process measurement in a fresh process) and parse its last stdout line."""
    _, done = timed_run([sys.executable, "-m", module, *args], cwd=ROOT, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise CommandFailed(f"{module} printed nothing")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


@dataclass(frozen=True)
class Context:
    """What every benchmark gets: how many repeats, whether a quick smoke run, and a scratch folder of its own."""

    workdir: Path
    repeats: int | None = None  # --repeats, for every benchmark
    quick: bool = False

    def n(self, default: int) -> int:
        """Repeats of a benchmark whose own default is ``default``; --quick takes a third of it."""
        if self.repeats is not None:
            return self.repeats
        return max(1, default // 3) if self.quick else default

    def scratch(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
