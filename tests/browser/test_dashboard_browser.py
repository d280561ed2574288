"""The dashboard in a real browser: Debian's headless chromium (installed by scripts/setup-system.sh), driven through
chromium-driver by selenium, watching a real sweep as it runs."""

from __future__ import annotations

import os
import pty
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from explaunch.sweepdir import records
from explaunch.sweepdir.records import JobError, JobRecord
from tests.conftest import MAIN, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
EXPLAUNCH = str(Path(sys.executable).parent / "explaunch")
# As root and offline, chromium needs all of these.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1500",
)
SCRIPT_OVERRIDE = "+tag='<script>window.__xss=1</script>'"
IMG_MESSAGE = '<img src=x onerror="window.__xss=2"> broke'
# 6 jobs of 3 s, 2 at a time; seed 2 fails at both batch sizes.
SWEEP = (
    "experiment_type=probe",
    "seed=0,1,2",
    "batch=8,16",
    "experiment_type.duration_s=3",
    "experiment_type.fail=raise",
    "experiment_type.fail_seeds=[2]",
    "tracking=none",
    "energy.enabled=false",
    "resources.interval_s=0.5",
    "hydra.launcher.n_jobs=2",
    "hydra.sweeper.dashboard=true",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    assert not missing, f"{missing} missing: run scripts/setup-system.sh (make setup)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def crafted_record(num: int, overrides: list[str], error: JobError | None = None) -> JobRecord:
    return JobRecord(
        status=records.FAILED if error else records.COMPLETED,
        overrides=overrides,
        config={},
        config_hash=None,
        start_time="2026-01-01T00:00:00+00:00",
        end_time="2026-01-01T00:00:01+00:00",
        duration_s=1.0,
        job_num=num,
        error=error,
    )


def crafted_sweep(sweep_dir: Path) -> None:
    """A finished sweep whose records carry markup: an override value and an error message."""
    records.write_job_record(sweep_dir / "0", crafted_record(0, ["seed=0", SCRIPT_OVERRIDE]))
    error = JobError(type="ValueError", message=IMG_MESSAGE)
    records.write_job_record(sweep_dir / "1", crafted_record(1, ["seed=1"], error))
    records.write_sweep_record(sweep_dir)
    old = time.time() - 3600
    for name in (records.SWEEP_FILE, records.SWEEP_CSV):
        os.utime(sweep_dir / name, (old, old))


def wait_for_line(path: Path, pattern: str, proc: subprocess.Popen[Any], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text() if path.exists() else "")
        if found:
            return found.group(1)
        assert proc.poll() is None, f"exited {proc.returncode}: {path.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} in {path}: {path.read_text()[-3000:]}")


def on_a_terminal(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``command`` with a terminal (a pty) for its output, as a user runs a sweep: the sweep prints its dashboard's
    token only to a terminal. What it prints is copied to ``log``."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary)
    os.close(secondary)

    def copy() -> None:
        with log.open("ab") as out:
            while True:
                try:
                    data = os.read(primary, 65536)
                except OSError:  # EIO: every process holding the terminal has ended
                    break
                if not data:
                    break
                out.write(data)
                out.flush()
        os.close(primary)

    threading.Thread(target=copy, name="sweep-terminal", daemon=True).start()
    return proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(url: str, token: str | None = None) -> str:
    """``url`` (its token in it, or given apart for a link taken from the page)."""
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        text: str = response.read().decode()
        return text


def until(driver: Any, condition: Callable[[Any], Any], timeout: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)


def counts(driver: Any) -> dict[str, int]:
    from selenium.webdriver.common.by import By

    out = {}
    for name in ("completed", "running", "failed", "pending", "skipped"):
        text = driver.find_element(By.ID, f"count-{name}").text
        out[name] = int(text) if text.isdigit() else -1
    return out


def test_a_running_sweep_is_followed_live_in_the_browser(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    multirun = tmp_path / "multirun"
    crafted_sweep(multirun / "crafted")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "HYDRA_FULL_ERROR": "0"}
    sweep_log = tmp_path / "sweep.log"
    sweep = on_a_terminal(
        [sys.executable, str(MAIN), "-m", *SWEEP, f"hydra.sweep.dir={multirun / 'live'}"], tmp_path, env, sweep_log
    )
    dashboard_log = tmp_path / "dashboard.log"
    dashboard = None
    try:
        # hydra.sweeper.dashboard=true: the sweep parent serves its own dashboard and prints where
        sweep_url = wait_for_line(sweep_log, r"dashboard: (http://127\.0\.0\.1:\d+/\?token=[\w-]+)", sweep)
        assert '"live":true' in get(sweep_url.replace("/?", "/api/sweep?"))
        with pytest.raises(urllib.error.HTTPError, match="403"):
            get(sweep_url.replace("/?", "/api/sweep?").partition("?")[0])  # no token: refused

        with dashboard_log.open("w") as log:
            dashboard = subprocess.Popen(
                [EXPLAUNCH, "dashboard", str(multirun), "--port", str(free_port())],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        url = wait_for_line(dashboard_log, r" at (http://127\.0\.0\.1:\d+/\?token=[\w-]+)", dashboard, timeout=30)
        token = url.partition("?token=")[2]
        browser.get(url + "#sweep=live")

        seen: list[dict[str, int]] = []
        live_shot = tmp_path / "dashboard-live.png"

        def sweep_finished(driver: Any) -> bool:
            now = counts(driver)
            seen.append(now)
            if now["running"] > 0 and now["completed"] >= 2 and not live_shot.exists():
                driver.save_screenshot(str(live_shot))
            return driver.find_element(By.ID, "live").text == "finished" and now["running"] == 0

        until(browser, sweep_finished, timeout=240)
        assert sweep.wait(timeout=60) == 1, sweep_log.read_text()[-3000:]  # two jobs failed

        final = counts(browser)
        assert final == {"completed": 4, "running": 0, "failed": 2, "pending": 0, "skipped": 0}
        assert any(c["running"] > 0 and c["completed"] < 4 for c in seen), seen  # seen while it ran
        done = [c["completed"] for c in seen if c["completed"] >= 0]
        assert done == sorted(done) and done[0] < 4  # counts only move forward, from below the end
        assert live_shot.exists() and live_shot.stat().st_size > 10_000

        points = browser.find_elements(By.CSS_SELECTOR, "#metric-chart circle.point")
        assert len(points) == 2  # slept_s at batch 8 and 16, each over seeds 0 and 1
        titles = [p.find_element(By.TAG_NAME, "title").get_attribute("textContent") for p in points]
        assert all("(n=2)" in t for t in titles), titles
        assert browser.find_elements(By.CSS_SELECTOR, "#chart-cpu path.series")

        errors = browser.find_elements(By.CSS_SELECTOR, "#errors tbody tr")
        assert len(errors) == 2
        assert all("probe: failing on purpose (seed 2)" in row.text and "ValueError" in row.text for row in errors)
        link = errors[0].find_element(By.LINK_TEXT, "traceback").get_attribute("href")
        assert "ValueError: probe: failing on purpose (seed 2)" in get(link, token)
        assert "token=" not in browser.current_url  # the cookie carries it from the first page on
        rows = browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
        assert sorted(r.get_attribute("data-status") for r in rows) == ["completed"] * 4 + ["failed"] * 2
        browser.save_screenshot(str(tmp_path / "dashboard.png"))
        if os.environ.get("EXPLAUNCH_DASHBOARD_SCREENSHOT"):  # refresh the README's picture
            shutil.copy(live_shot, os.environ["EXPLAUNCH_DASHBOARD_SCREENSHOT"])

        with pytest.raises(OSError):  # the sweep's own dashboard ended with the sweep
            get(sweep_url)
        sweep_token = sweep_url.partition("?token=")[2].encode()
        written = [p for p in (multirun / "live").rglob("*") if p.is_file() and sweep_token in p.read_bytes()]
        assert written == []  # printed for the user, never written into the sweep's records

        # Markup from records shows as text and never runs.
        Select(browser.find_element(By.ID, "sweep-select")).select_by_value("crafted")
        until(browser, lambda d: d.find_element(By.ID, "count-failed").text == "1", timeout=30)
        table = browser.find_element(By.ID, "jobs").text
        assert SCRIPT_OVERRIDE in table and IMG_MESSAGE in table
        assert IMG_MESSAGE in browser.find_element(By.ID, "errors").text
        assert browser.execute_script("return window.__xss") is None
        assert browser.execute_script("return document.querySelectorAll('img').length") == 0
        assert browser.execute_script("return document.scripts.length") == 1
    finally:
        for proc in (sweep, dashboard):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


def fairness_sweep(sweep_dir: Path) -> None:
    """lam 0, 1, 2 x seeds 0, 1: lam=2.0 is less accurate and less fair than lam=1.0, so off the front."""
    values = {("0.0", 0): (0.85, 0.40), ("0.0", 1): (0.87, 0.36), ("1.0", 0): (0.80, 0.10), ("1.0", 1): (0.82, 0.12)}
    values |= {("2.0", 0): (0.79, 0.20), ("2.0", 1): (0.77, 0.22)}
    for num, ((lam, seed), (accuracy, gap)) in enumerate(values.items()):
        record = crafted_record(num, [f"lam={lam}", f"seed={seed}"])
        metrics = {"accuracy": accuracy, "demographic_parity_difference": gap, "slept_s": 1.0 + num}
        records.write_job_record(sweep_dir / str(num), JobRecord(**{**record.to_dict(), "metrics": metrics}))
    records.write_sweep_record(sweep_dir)


def test_the_tradeoff_view_draws_the_points_and_the_front(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    sweep = tmp_path / "fair"
    fairness_sweep(sweep)
    log_path = tmp_path / "dashboard.log"
    with log_path.open("w") as log:
        dashboard = subprocess.Popen(
            [EXPLAUNCH, "dashboard", str(sweep), "--port", str(free_port())],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        url = wait_for_line(log_path, r" at (http://127\.0\.0\.1:\d+/\?token=[\w-]+)", dashboard, timeout=30)
        browser.get(url)

        def points(driver: Any) -> list[Any]:
            return list(driver.find_elements(By.CSS_SELECTOR, "#tradeoff-chart circle.point"))

        until(browser, lambda d: len(points(d)) == 3, timeout=30)
        assert Select(browser.find_element(By.ID, "tradeoff-x")).first_selected_option.text == "accuracy"
        labels = browser.find_elements(By.CSS_SELECTOR, "#tradeoff-chart text.point-label")
        assert sorted(label.text for label in labels) == ["lam=0.0", "lam=1.0", "lam=2.0"]
        assert len(browser.find_elements(By.CSS_SELECTOR, "#tradeoff-chart circle.on-front")) == 2
        assert browser.find_elements(By.CSS_SELECTOR, "#tradeoff-chart path.front")
        note = browser.find_element(By.ID, "tradeoff-note").text
        assert "better: higher accuracy, lower demographic_parity_difference" in note
        assert "2 of 3 configurations on the Pareto front" in note
        browser.save_screenshot(str(tmp_path / "dashboard-tradeoff.png"))
        if os.environ.get("EXPLAUNCH_TRADEOFF_SCREENSHOT"):
            shutil.copy(tmp_path / "dashboard-tradeoff.png", os.environ["EXPLAUNCH_TRADEOFF_SCREENSHOT"])

        # A metric without a known direction: the page asks, and draws once told.
        Select(browser.find_element(By.ID, "tradeoff-y")).select_by_value("slept_s")
        until(browser, lambda d: "is higher or lower better for slept_s" in d.find_element(By.ID, "tradeoff-note").text)
        assert points(browser) == []
        Select(browser.find_element(By.ID, "tradeoff-better-y")).select_by_value("min")
        until(browser, lambda d: len(points(d)) == 3, timeout=30)
        assert "lower slept_s" in browser.find_element(By.ID, "tradeoff-note").text
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
