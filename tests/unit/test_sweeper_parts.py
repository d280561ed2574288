from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from explaunch.launch.attempts import archive_attempt, with_batch
from explaunch.launch.settings import SweeperSettings
from explaunch.sweepdir.ledger import LEDGER_FILE, Ledger, LedgerEntry


def entry(key: str, status: str, attempt: int = 1) -> LedgerEntry:
    return LedgerEntry(key, 0, ["seed=0"], status, attempt, "0", "2026-11-23T10:00:00+00:00")


def test_ledger_keeps_the_last_outcome_per_key_across_reloads(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.append(entry("a", "failed"))
    ledger.append(entry("b", "completed"))
    ledger.append(entry("a", "completed", attempt=2))
    again = Ledger(tmp_path)
    assert again.status("a") == "completed" and again.latest["a"].attempt == 2
    assert again.status("b") == "completed" and again.status("c") is None
    assert len((tmp_path / LEDGER_FILE).read_text().splitlines()) == 3


def test_a_line_cut_by_a_crash_is_skipped_not_fatal(tmp_path: Path) -> None:
    Ledger(tmp_path).append(entry("a", "completed"))
    with (tmp_path / LEDGER_FILE).open("a") as handle:
        handle.write('{"key": "b", "job_num": 1, "overr')
    ledger = Ledger(tmp_path)
    assert ledger.status("a") == "completed" and ledger.status("b") is None and ledger.skipped_lines == 1


def test_half_batch_goes_through_the_batch_knob_when_batching_follows_it() -> None:
    cfg = OmegaConf.create({"batch": 32, "batching": {"batch_size": "${batch}"}})
    assert with_batch(["model=llama", "batch=32"], 16, cfg) == ["model=llama", "batch=16"]


def test_half_batch_sets_batching_batch_size_when_it_was_set_directly() -> None:
    cfg = OmegaConf.create({"batch": 8, "batching": {"batch_size": 32}})
    assert with_batch(["batching.batch_size=32"], 16, cfg) == ["batching.batch_size=16"]


def test_an_earlier_attempt_is_archived_before_the_job_runs_again(tmp_path: Path) -> None:
    job = tmp_path / "3"
    job.mkdir()
    archive_attempt(job)  # nothing ran here yet: nothing to move
    assert list(job.iterdir()) == []
    for name in ("job.json", "traceback.txt", "resources.csv", "main.log"):
        (job / name).write_text(name)
    (job / "probe_attempts").write_text("1")
    archive_attempt(job)
    first = job / "attempts" / "1"
    assert sorted(p.name for p in first.iterdir()) == ["main.log", "record.json", "resources.csv", "traceback.txt"]
    assert (first / "record.json").read_text() == "job.json"
    assert sorted(p.name for p in job.iterdir()) == ["attempts", "probe_attempts"]
    (job / "job.json").write_text("second")
    archive_attempt(job)
    assert (job / "attempts" / "2" / "record.json").read_text() == "second"


def test_settings_come_from_the_sweeper_config() -> None:
    cfg = OmegaConf.create({"max_retries": 2, "retry_on": ["OSError"], "params": None, "_target_": "x"})
    settings = SweeperSettings.from_config(cfg)
    assert settings.max_retries == 2 and settings.retry_on == ("OSError",)
    assert settings.max_failure_rate == 0.8 and settings.rerun_failed
