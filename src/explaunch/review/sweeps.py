"""The sweeps below a folder such as ``multirun/``: their list with counts by status (``explaunch report multirun/``)
and every job of them as one list of rows (``explaunch report multirun/ --jobs``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from explaunch.errors import RecordError
from explaunch.review.rows import SWEEP_COLUMN, load_rows
from explaunch.sweepdir import reader as sweepdir


def sweeps_below(root: Path) -> list[tuple[dict[str, Any], list[dict[str, Any]], str | None]]:
    """The sweeps below ``root`` (``multirun/``), newest first, each with its rows (``load_rows``) and, for a sweep
    that cannot be read (a damaged ``job.json``), no rows and the reason."""
    out: list[tuple[dict[str, Any], list[dict[str, Any]], str | None]] = []
    for found in sweepdir.find_sweeps(root):
        try:
            out.append((found, load_rows(root / found["path"]), None))
        except RecordError as ex:
            out.append((found, [], str(ex)))
    return out


def list_sweeps(root: Path) -> list[dict[str, Any]]:
    """The sweeps below ``root`` (``multirun/``), newest first: path (relative to root), date, jobs and counts."""
    out = []
    for found, rows, error in sweeps_below(root):
        entry: dict[str, Any] = {"path": found["path"], "date": None, "jobs": 0}
        entry.update(dict.fromkeys(sweepdir.COUNT_NAMES, 0))
        if error is not None:
            entry["error"] = error
        starts = sorted(r["start_time"] for r in rows if r.get("start_time"))
        stamp = datetime.fromtimestamp(found["modified"]).astimezone().isoformat(timespec="seconds")
        entry["date"] = (starts[0] if starts else stamp)[:16].replace("T", " ")
        entry["jobs"] = len(rows)
        for row in rows:
            entry[sweepdir.COUNTED_AS.get(row["status"], "failed")] += 1
        entry["live"] = found["live"]
        out.append(entry)
    return out


def job_history(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every job of every sweep below ``root`` as one list of rows (``load_rows``'s, each with ``sweep``: the sweep's
    path relative to ``root``), newest sweep first and its jobs in order; and one line per sweep that could not be
    read (its rows are left out)."""
    rows, problems = [], []
    for found, sweep_rows, error in sweeps_below(root):
        if error is not None:
            problems.append(f"{found['path']}: {error}")
        rows += [{SWEEP_COLUMN: found["path"], **row} for row in sweep_rows]
    return rows, problems
