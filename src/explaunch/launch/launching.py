"""The launch loop: jobs go to the configured launcher until none is left or the sweep stops; those that fail in a
way that may pass come back, after their backoff, for another attempt. explaunch's launcher streams the jobs (each
starts as soon as a worker is free, from the configs the plan composed: :mod:`explaunch.launch.fastlaunch`); any other
launcher (Hydra's basic and joblib, submitit) gets them through its public ``launch``, in batches of consecutive job
numbers."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

from explaunch.launch import jobguard, policy
from explaunch.launch.lost import lost_job_reason
from explaunch.launch.outcomes import Outcomes
from explaunch.launch.plan import SweepPlan
from explaunch.launch.progress import BatchWatcher
from explaunch.launch.settings import STOP_FILE, SWEEP_LOG, Job, SweeperSettings

log = logging.getLogger(SWEEP_LOG)


def interrupted_while_running(detail: str = "") -> tuple[str, str]:
    """The error of a job the sweep's interruption ended: ``JobCancelled`` while ``explaunch cancel`` cancels it."""
    error = jobguard.interruption("the sweep was interrupted while the job ran" + (f" ({detail})" if detail else ""))
    return (type(error).__name__, str(error))


class LaunchLoop:
    """Runs the jobs of ``plan`` through ``launcher``, ``parallelism`` at a time; each attempt's outcome goes to
    ``outcomes``, which says whether a job runs again and whether the sweep stops."""

    def __init__(
        self, settings: SweeperSettings, launcher: Any, parallelism: int, plan: SweepPlan, outcomes: Outcomes
    ) -> None:
        self.settings = settings
        self.launcher = launcher
        self.parallelism = parallelism
        self.plan = plan
        self.outcomes = outcomes

    def next_batch(self, queue: list[Job]) -> list[Job]:
        """Jobs with consecutive numbers from the head of the queue: a launcher numbers a batch consecutively."""
        batch = [queue.pop(0)]
        while queue and len(batch) < self.parallelism and queue[0].num == batch[-1].num + 1:
            batch.append(queue.pop(0))
        return batch

    def launch_all(self, pending: list[Job]) -> None:
        from explaunch.launch import fastlaunch

        streaming = self.plan.compose is not None and fastlaunch.supports(self.launcher)
        queue = list(pending)
        while queue and not self.outcomes.should_stop():
            if streaming:  # retries come back as the next round; jobs a dead worker kept from starting at once
                retries, queue = self.launch_stream(queue)
            else:
                if self.outcomes.controls is not None:
                    self.outcomes.controls.before_launch(queue[0], self.outcomes.should_stop)
                    if self.outcomes.should_stop():
                        break
                retries = self.launch_batch(self.next_batch(queue))
            if retries:
                self.wait_backoff(max(policy.backoff_s(self.settings, j.attempt) for j in retries))
                queue = sorted(retries, key=lambda j: j.num) + queue

    def wait_backoff(self, seconds: float) -> None:
        log.info("retrying in %.1f s", seconds)
        end = time.monotonic() + seconds
        while time.monotonic() < end and not jobguard.stop_requested():
            time.sleep(min(0.2, end - time.monotonic()))

    def launch_stream(self, jobs: list[Job]) -> tuple[list[Job], list[Job]]:
        """Basic and joblib launchers: each job starts as soon as a worker is free, none waits for a batch's slowest
        job. Before handing out the next job the sweep asks ``should_stop()``; when it says stop, no new job is
        handed out, jobs handed out but still queued in a worker do not begin (the stop file, ``fastlaunch.Gate``)
        and the running ones finish. Returns the jobs to run again (retry, OOM fallback) after their backoff, and
        the jobs that did not start because a worker died (joblib then stops the whole pool), to go on with."""
        from explaunch.launch import fastlaunch

        assert self.outcomes.progress is not None and self.plan.compose is not None
        progress, compose = self.outcomes.progress, self.plan.compose
        started: list[Job] = []
        watcher = BatchWatcher(
            started, self.plan.job_dir, self.outcomes.note_record
        )  # it reads a job's record once it started

        def tasks() -> Iterator[fastlaunch.Task]:
            for job in jobs:  # joblib pulls these from its own thread as workers free up
                if self.outcomes.should_stop():
                    return
                if self.outcomes.controls is not None:  # cooldown, limits: may hold the launch a while
                    self.outcomes.controls.before_launch(job, self.outcomes.should_stop)
                    if self.outcomes.should_stop():
                        return
                self.outcomes.start_attempt(job)
                cfg = compose(job.overrides)
                planned = job.key if job.overrides == job.grid_overrides else self.plan.job_key(cfg)
                progress.started(1)
                with watcher.lock:
                    started.append(job)
                    handed_out[job.num] = time.time()
                yield fastlaunch.Task(job.num, cfg, job.overrides, planned)

        handed_out: dict[int, float] = {}
        by_num = {job.num: job for job in jobs}
        stop_file = self.outcomes.stop_file = self.plan.sweep_dir / STOP_FILE
        stop_file.unlink(missing_ok=True)
        deadline = None if self.outcomes.deadline is None else time.time() + self.outcomes.deadline - time.monotonic()
        gate = fastlaunch.Gate(str(stop_file), deadline)

        def tell_queued_jobs() -> None:  # at the Ctrl-C itself: every job may already be handed out (none asks again)
            with contextlib.suppress(OSError):
                stop_file.touch()

        jobguard.add_stop_hook(tell_queued_jobs)

        returns: dict[int, Any] = {}
        declined: list[Job] = []
        lost_reason = None
        watcher.start()
        try:
            for num, job_return in fastlaunch.stream(self.launcher, tasks(), gate):
                if job_return is None:  # it waited in a worker's queue and the sweep stopped meanwhile
                    with watcher.lock:
                        declined.extend(j for j in started if j.num == num)
                    continue
                returns[num] = job_return
                self.outcomes.record_returned(by_num[num], job_return, handed_out[num], watcher)
                watcher.poll()  # progress and ledger at once, not at the watcher's next tick
        except KeyboardInterrupt:
            self.outcomes.stop_reason = jobguard.stop_cause()
            lost_reason = interrupted_while_running()
        except Exception as ex:  # a worker died: joblib gives up on the jobs in flight; record them, go on
            lost_reason = ("WorkerDied", f"{type(ex).__name__}: {ex}".splitlines()[0])
            self.outcomes.check_disk_error(ex)
            if jobguard.stop_requested():
                lost_reason = interrupted_while_running(lost_reason[1])
        finally:
            jobguard.remove_stop_hook(tell_queued_jobs)
            watcher.stop()
            self.outcomes.stop_file = None
            stop_file.unlink(missing_ok=True)
        unstarted = list(declined)
        if lost_reason is not None:
            kept_out = [j for j in started if j not in declined and not self.began(j, handed_out[j.num])]
            # Some job began: a dead worker kept the others from starting, they go on. None began: the launch fails
            # as a job begins (the basic launcher, or every worker), and would again: they are recorded lost.
            if len(kept_out) < len(started) - len(declined):
                unstarted += kept_out
        for job in unstarted:  # handed to joblib but never run: not an attempt
            started.remove(job)
            job.attempt -= 1
            progress.started(-1)
        if unstarted and lost_reason is not None and self.outcomes.stop_reason is None:
            log.warning("a worker died; %d job(s) it kept from starting go on in a new pool", len(unstarted))
        retries = self.outcomes.settle(started, lambda job: lost_reason or lost_job_reason(returns.get(job.num)))
        rest = jobs[jobs.index(started[-1]) + 1 :] if started else jobs
        return retries, ([] if self.outcomes.stop_reason else sorted(unstarted, key=lambda j: j.num)) + [
            j for j in rest if j not in unstarted and j.record is None and j.status is None
        ]

    def began(self, job: Job, handed_out: float) -> bool:
        """Whether the job ran after it was handed out: Hydra writes its ``.hydra/`` files first thing."""
        marker = self.plan.job_dir(job) / ".hydra" / "overrides.yaml"
        try:
            return marker.stat().st_mtime >= handed_out - 0.01
        except OSError:
            return False

    def launch_batch(self, batch: list[Job]) -> list[Job]:
        """Run one batch (submitit: one job array); return the jobs to run again (retry, OOM fallback)."""
        for job in batch:
            self.outcomes.start_attempt(job)
        overrides = [[*j.overrides, *self.limit_overrides()] for j in batch]
        assert self.outcomes.progress is not None
        self.outcomes.progress.started(len(batch))
        watcher = BatchWatcher(batch, self.plan.job_dir, self.outcomes.note_record)
        watcher.start()
        lost_reason = None
        returns: Sequence[Any] = []
        launched = time.time()
        try:
            returns = self.launch(overrides, batch[0].num)
        except KeyboardInterrupt:
            self.outcomes.stop_reason = jobguard.stop_cause()
            lost_reason = interrupted_while_running()
        except Exception as ex:  # a worker died, the launcher gave up on the batch: record, go on
            lost_reason = ("WorkerDied", f"{type(ex).__name__}: {ex}".splitlines()[0])
            self.outcomes.check_disk_error(ex)
            if jobguard.stop_requested():  # Ctrl-C reached the workers too (the terminal signals the whole group)
                lost_reason = interrupted_while_running(lost_reason[1])
        finally:
            watcher.stop()
        by_num = {job.num: returns[i] for i, job in enumerate(batch) if i < len(returns)}
        for job in batch:
            if job.num in by_num:
                self.outcomes.record_returned(job, by_num[job.num], launched, watcher)
        return self.outcomes.settle(batch, lambda job: lost_reason or lost_job_reason(by_num.get(job.num)))

    def launch(self, overrides: list[list[str]], initial_job_idx: int) -> Sequence[Any]:
        returns: Sequence[Any] = self.launcher.launch(overrides, initial_job_idx=initial_job_idx)
        return returns

    def limit_overrides(self) -> list[str]:
        """The whole sweep's time limit caps each job's: a job started late gets only what is left."""
        if self.outcomes.deadline is None:
            return []
        left = max(1.0, self.outcomes.deadline - time.monotonic())
        limit = min(left, self.settings.job_timeout_s or math.inf)
        return [f"hydra.sweeper.job_timeout_s={limit:.1f}"]
