"""The ``probe`` experiment type: sleep, then misbehave on demand. No model, no torch; starts in milliseconds."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from explaunch.config import ExplaunchConfig
from explaunch.experiments.base import ExperimentResult
from explaunch.sweepdir.records import write_text_atomic

ATTEMPTS_FILE = "probe_attempts"  # survives retries into the same job folder: how `flaky` knows its attempt
PROGRESS_FILE = "probe_progress"  # checkpoint=true: seconds slept by earlier attempts


def run(config: ExplaunchConfig, job_dir: Path) -> ExperimentResult:
    probe = config.experiment_type
    counter = job_dir / ATTEMPTS_FILE
    attempt = int(counter.read_text()) + 1 if counter.exists() else 1
    write_text_atomic(counter, str(attempt))  # a full disk leaves the old count, never an empty file
    chosen = not probe.fail_seeds or config.seed in probe.fail_seeds
    chosen = chosen and (probe.fail_attempts == 0 or attempt <= probe.fail_attempts)
    filled = _fill_memory(probe.allocate_mb) if chosen and config.batch > probe.oom_above_batch else b""
    start = time.perf_counter()
    resumed_at = 0.0
    if probe.checkpoint:
        resumed_at = _sleep_with_progress(probe.duration_s, job_dir / PROGRESS_FILE)
    else:
        time.sleep(probe.duration_s)
    del filled
    if chosen and probe.fail == "raise":
        raise ValueError(f"probe: failing on purpose (seed {config.seed})")
    if chosen and probe.fail == "flaky":
        raise ConnectionError(f"probe: flaky failure on attempt {attempt}")
    if chosen and probe.fail == "oom" and config.batch > probe.oom_above_batch:
        raise MemoryError(f"probe: out of memory at batch {config.batch} > {probe.oom_above_batch}")
    if chosen and probe.fail == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    metrics = {"slept_s": time.perf_counter() - start, "batch_size": float(config.batch), "attempt": float(attempt)}
    if probe.checkpoint:
        metrics["resumed_at_s"] = resumed_at
    return ExperimentResult(metrics=metrics, info={"pid": os.getpid()})


def _fill_memory(mib: int) -> bytearray:
    """``mib`` MiB written page by page (resident, not just reserved): what a job over its memory limit does."""
    block = bytearray(mib * 1024 * 1024)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    return block


def _sleep_with_progress(total_s: float, progress: Path, step_s: float = 0.5) -> float:
    """Sleep until ``total_s`` seconds were slept over all attempts, saving progress every step; returns where this
    attempt started."""
    done = float(progress.read_text()) if progress.exists() else 0.0
    started_at = done
    while done < total_s:
        nap = min(step_s, total_s - done)
        time.sleep(nap)
        done += nap
        tmp = progress.with_suffix(".tmp")
        tmp.write_text(repr(done))
        tmp.replace(progress)
    return started_at
