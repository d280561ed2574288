"""The sweep's own controls, beyond retries and the failure rate: resource limits that hold new local launches
(:mod:`explaunch.launch.limits`), a cooldown between jobs on this host, the GPUs' start temperatures
(:mod:`explaunch.launch.thermal`), budgets (:mod:`explaunch.launch.budget`) and a target that ends the sweep
(:mod:`explaunch.launch.stop_rule`). The launch loop asks :meth:`SweepControls.before_launch` before it hands out
a local job, :meth:`SweepControls.stop_reason` when it asks whether to go on, and tells :meth:`SweepControls.seen`
of every record. What they did is written to ``controls.json`` as the sweep goes (for ``explaunch status`` and
the dashboard) and kept in ``sweep.json``. With none of them set nothing is read and nothing is written."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from explaunch.launch.settings import SWEEP_LOG, Job, SweeperSettings
from explaunch.sweepdir import records

log = logging.getLogger(SWEEP_LOG)


class SweepControls:
    def __init__(self, settings: SweeperSettings, sweep_dir: Path, total_jobs: int, *, local: bool) -> None:
        from explaunch.launch import budget, limits, stop_rule

        self.settings = settings
        self.sweep_dir = sweep_dir
        self.local = local  # limits, cooldown and temperatures are this machine's: they hold local launches only
        self.lock = threading.Lock()
        self.gate = (
            limits.LaunchGate(settings.limits, sweep_dir, say=log.warning) if settings.limits and local else None
        )
        self.budget = budget.Budget(settings.budget, total_jobs, time.time()) if settings.budget else None
        self.rule = stop_rule.parse(settings.stop_when) if settings.stop_when else None
        self.reached: str | None = None  # the job that met stop_when, said once
        self.last_end: float | None = None  # when the last job on this host ended (its record appeared)
        self.cooled_s = 0.0
        self.first_temperatures: dict[int, float] | None = None
        self.start_temperatures: dict[int, dict[int, float]] = {}
        self.order: dict[str, Any] = {"order": settings.order}
        self.active = bool(self.gate or self.budget or self.rule or settings.cooldown_s or settings.order != "grid")

    # ---- before a job is handed out ---------------------------------------------------------------------------
    def before_launch(self, job: Job, should_stop: Callable[[], bool]) -> None:
        """Wait out the cooldown and any limit; read the GPUs' temperatures (warned when far from the first)."""
        if not self.local:
            return
        if self.settings.cooldown_s and self.last_end is not None:
            wait = self.last_end + self.settings.cooldown_s - time.time()
            if wait > 0:
                log.info("cooldown: job %d starts in %.1f s (hydra.sweeper.cooldown_s)", job.num, wait)
                end = time.monotonic() + wait
                while time.monotonic() < end and not should_stop():
                    time.sleep(min(0.2, max(0.0, end - time.monotonic())))
                self.cooled_s += wait
        if self.gate is not None:
            self.gate.wait_until_clear(should_stop)
        self.read_temperatures(job)

    def read_temperatures(self, job: Job) -> None:
        from explaunch.launch.thermal import gpu_temperatures, temperature_warning

        if self.first_temperatures is None and self.start_temperatures:
            return  # no GPU here: read once
        now = gpu_temperatures()
        if not now:
            self.start_temperatures.setdefault(job.num, {})
            return
        self.start_temperatures[job.num] = now
        if self.first_temperatures is None:
            self.first_temperatures = now
            return
        warning = temperature_warning(self.first_temperatures, now, self.settings.temperature_warn_c)
        if warning:
            log.warning("job %d: %s", job.num, warning)

    # ---- as records come in (the watcher thread too) -----------------------------------------------------------
    def seen(self, job: Job, record: records.JobRecord) -> None:
        with self.lock:
            self.last_end = time.time()
            if self.budget is not None:
                self.budget.add(record)
            if self.rule is not None and self.reached is None and record.status == records.COMPLETED:
                values = {**self.params(job), **record.metrics}
                if self.rule.met(values):
                    self.reached = f"stop_when {self.rule.text!r} met by job {job.num} ({self.rule.describe(values)})"
        if self.active:
            self.write()

    @staticmethod
    def params(job: Job) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for override in job.grid_overrides:
            key, _, value = override.lstrip("+~").partition("=")
            try:
                values[key] = float(value)
            except ValueError:
                values[key] = value
        return values

    # ---- whether the sweep goes on ----------------------------------------------------------------------------
    def stop_reason(self, running: int) -> str | None:
        with self.lock:
            if self.reached is not None:
                return self.reached
            if self.budget is not None:
                over = self.budget.would_exceed(time.time(), next_jobs=running + 1)
                if over is not None:
                    return f"budget: {over}"
        return None

    # ---- what they did ----------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.settings.order != "grid":
            out["order"] = self.order
        if self.gate is not None:
            out["limits"] = {**self.settings.limits, "held_s": round(self.gate.held_s, 1), "holds": self.gate.holds}
            if self.gate.holding:
                out["limits"]["holding"] = self.gate.holding
        if self.settings.cooldown_s:
            out["cooldown"] = {"cooldown_s": self.settings.cooldown_s, "waited_s": round(self.cooled_s, 1)}
        if self.budget is not None:
            out["budget"] = self.budget.spent(time.time())
        if self.rule is not None:
            out["stop_when"] = {"rule": self.rule.text, "met": self.reached}
        if self.first_temperatures is not None:
            out["start_temperatures_c"] = {str(k): v for k, v in self.start_temperatures.items()}
        return out

    def write(self) -> None:
        try:
            state = {"updated": time.time(), **self.summary()}
            records.write_json_atomic(self.sweep_dir / records.CONTROLS_FILE, state)
        except OSError as ex:
            log.debug("cannot write %s: %s", records.CONTROLS_FILE, ex)

    def close(self) -> None:
        if self.gate is not None:
            self.gate.close()
        if self.active:
            self.write()
