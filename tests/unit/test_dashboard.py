"""The dashboard's API, served by a real uvicorn on a free loopback port, over sweep folders written here with the
project's own record writers: what it reports, what it refuses to serve, and how record text comes back."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from explaunch.cli import main
from explaunch.review.dashboard import state
from explaunch.review.dashboard.server import RunningDashboard, start_in_thread
from explaunch.sweepdir import reader as sweepdir
from explaunch.sweepdir import records
from explaunch.sweepdir.records import JobError, JobRecord

SECRET = "root:x:0:0:dashboard-test-secret"
SCRIPT_OVERRIDE = "+tag='<script>window.__xss=1</script>'"
IMG_MESSAGE = '<img src=x onerror="window.__xss=2"> & more'


def job(num: int, seed: int, batch: int, *, error: JobError | None = None, tag: str | None = None) -> JobRecord:
    overrides = ["experiment_type=probe", f"seed={seed}", f"batch={batch}", *([tag] if tag else [])]
    return JobRecord(
        status=records.FAILED if error else records.COMPLETED,
        overrides=overrides,
        config={"seed": seed, "batch": batch},
        config_hash=f"hash{num}",
        start_time="2026-01-01T00:00:00+00:00",
        end_time="2026-01-01T00:00:04+00:00",
        duration_s=4.0,
        job_num=num,
        metrics={} if error else {"slept_s": float(batch + seed), "resources_peak_rss_mib": 100.0},
        error=error,
        resources={"alerts": ["system_memory_percent 93.0 above the alert threshold 90 at 1.0 s"]} if num == 1 else {},
    )


def write_resources(job_dir: Path, rows: list[tuple[float, float, float]], rss: str = "rss_mib") -> None:
    lines = [f"elapsed_s,cpu_percent,{rss},system_cpu_percent,system_memory_percent,disk_free_gb"]
    lines += [f"{e},{cpu},120.5,50.0,{memory},40.0" for e, cpu, memory in rows]
    (job_dir / "resources.csv").write_text("\n".join(lines) + "\n")


def make_live_sweep(sweep_dir: Path) -> Path:
    """A sweep as the dashboard finds it mid-run: 4 jobs done (one failed, with a traceback), job 4 running (Hydra's
    .hydra/ and a resources.csv, no job.json yet), job 5 pending (no folder); this process plays the sweep parent."""
    records.write_job_record(sweep_dir / "0", job(0, 0, 8, tag=SCRIPT_OVERRIDE))
    records.write_job_record(sweep_dir / "1", job(1, 1, 8))
    records.write_job_record(sweep_dir / "2", job(2, 0, 16))
    error = JobError(type="ValueError", message=IMG_MESSAGE, traceback_file=records.TRACEBACK_FILE)
    records.write_job_record(sweep_dir / "3", job(3, 1, 16, error=error))
    (sweep_dir / "3" / records.TRACEBACK_FILE).write_text("Traceback (most recent call last):\nValueError: boom\n")
    running = sweep_dir / "4"
    (running / ".hydra").mkdir(parents=True)
    (running / ".hydra" / "overrides.yaml").write_text("- seed=2\n- batch=8\n- tracking.api_token=hunter2\n")
    (running / ".hydra" / "config.yaml").write_text("resources:\n  alerts:\n    memory_percent: 50.0\n")
    write_resources(running, [(0.0, 90.0, 20.0), (1.0, 95.0, 60.0)])
    jobs = [
        {"num": n, "job_dir": str(n), "overrides": [f"seed={s}", f"batch={b}"], "skipped": False}
        for n, (s, b) in enumerate([(0, 8), (1, 8), (0, 16), (1, 16), (2, 8), (2, 16)])
    ]
    plan = {"started": time.time() - 10, "pid": os.getpid(), "host": socket.gethostname(), "parallelism": 2}
    records.write_json_atomic(sweep_dir / sweepdir.PLAN_FILE, {**plan, "jobs": jobs})
    (sweep_dir / "multirun.yaml").write_text("hydra: {}\n")
    return sweep_dir


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningDashboard, Path]]:
    """``multirun/`` holding the live sweep and a finished one; a secret beside it, reachable only by escaping."""
    base = tmp_path_factory.mktemp("dashboard")
    (base / "secret.txt").write_text(SECRET)
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_text(SECRET)
    multirun = base / "multirun"
    live = make_live_sweep(multirun / "2026-01-01" / "live")
    (live / "0" / "leak.txt").symlink_to(base / "secret.txt")
    (live / "0" / "leakdir").symlink_to(base / "outside")
    (live / "0" / "inside.txt").symlink_to(live / "3" / records.TRACEBACK_FILE)
    finished = multirun / "2026-01-01" / "finished"
    records.write_job_record(finished / "0", job(0, 0, 8))
    records.write_sweep_record(finished)
    old = time.time() - 3600
    for path in [finished / records.SWEEP_FILE, finished / records.SWEEP_CSV]:
        os.utime(path, (old, old))
    dashboard = start_in_thread(multirun)
    yield dashboard, base
    dashboard.stop()


def request(dashboard: RunningDashboard, path: str, method: str = "GET", host: str | None = None) -> tuple[int, bytes]:
    """The path sent exactly as written (no client-side normalisation of ``..`` or ``%2f``)."""
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.putheader("Authorization", f"token {dashboard.token}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def api(dashboard: RunningDashboard, path: str) -> Any:
    status, body = request(dashboard, path)
    assert status == 200, body
    return json.loads(body)


LIVE = "/api/sweep?sweep=2026-01-01/live"


@pytest.mark.parametrize(
    "path",
    [
        "/files/../secret.txt",
        "/files/../../../../../../etc/passwd",
        "/files/..%2fsecret.txt",
        "/files/..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/files/%2e%2e/secret.txt",
        "/files/2026-01-01/live/../../../secret.txt",
        "/files/2026-01-01/live/..%2f..%2f..%2fsecret.txt",
        "/files/..%252fsecret.txt",
        "/files//etc/passwd",
        "/files/%2fetc%2fpasswd",
        "/files/ABSOLUTE",
        "/files/2026-01-01/live/0/leak.txt",
        "/files/2026-01-01/live/0/leakdir/secret.txt",
        "/files/2026-01-01/live/4/.hydra/overrides.yaml",
        "/files/2026-01-01/live/0/job.json%00.txt",
        "/../secret.txt",
        "/static/../../secret.txt",
        "/static/..%2f..%2fsecret.txt",
    ],
)
def test_paths_out_of_the_sweep_folder_are_refused_and_nothing_leaks(
    served: tuple[RunningDashboard, Path], path: str
) -> None:
    dashboard, base = served
    path = path.replace("ABSOLUTE", str(base / "secret.txt"))
    status, body = request(dashboard, path)
    assert status == 404, (path, status, body[:200])
    assert b"dashboard-test-secret" not in body and b"root:" not in body


def test_files_inside_the_sweep_folder_are_served_as_inert_text(served: tuple[RunningDashboard, Path]) -> None:
    dashboard, _ = served
    for path in ["/files/2026-01-01/live/3/traceback.txt", "/files/2026-01-01/live/0/inside.txt"]:
        status, body = request(dashboard, path)
        assert status == 200 and b"ValueError: boom" in body
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    conn.request("GET", "/files/2026-01-01/live/3/traceback.txt", headers={"Authorization": f"token {dashboard.token}"})
    response = conn.getresponse()
    assert response.getheader("Content-Type") == "text/plain; charset=utf-8"
    assert "sandbox" in (response.getheader("Content-Security-Policy") or "")
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    conn.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_the_dashboard_is_read_only(served: tuple[RunningDashboard, Path], method: str) -> None:
    dashboard, _ = served
    status, _body = request(dashboard, "/files/2026-01-01/live/3/traceback.txt", method=method)
    assert status == 405
    status, _body = request(dashboard, LIVE, method=method)
    assert status == 405
    assert (served[1] / "multirun" / "2026-01-01" / "live" / "3" / records.TRACEBACK_FILE).exists()


def test_a_foreign_host_name_is_refused_against_dns_rebinding(served: tuple[RunningDashboard, Path]) -> None:
    dashboard, _ = served
    assert request(dashboard, "/", host="attacker.example")[0] == 400
    assert request(dashboard, "/", host="localhost")[0] == 200


def test_markup_in_an_override_or_error_comes_back_as_inert_json_text(served: tuple[RunningDashboard, Path]) -> None:
    dashboard, _ = served
    status, body = request(dashboard, LIVE)
    assert status == 200
    assert b"<script" not in body and b"<img" not in body  # escaped as \u003c even inside JSON strings
    data = json.loads(body)
    job0 = next(j for j in data["jobs"] if j["num"] == 0)
    assert SCRIPT_OVERRIDE in job0["overrides"]  # the exact text, to be shown as text
    assert data["errors"][0]["message"] == IMG_MESSAGE


def test_the_page_builds_its_dom_from_text_only() -> None:
    static = Path(state.__file__).parent / "static"
    script = (static / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "<script>" not in (static / "index.html").read_text()  # only the external app.js: the CSP forbids inline


def test_the_page_and_its_script_are_served_with_a_strict_policy(served: tuple[RunningDashboard, Path]) -> None:
    dashboard, _ = served
    status, body = request(dashboard, "/")
    assert status == 200 and b'<script src="/static/app.js">' in body
    status, body = request(dashboard, "/static/app.js")
    assert status == 200 and b"textContent" in body
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    conn.request("GET", "/", headers={"Authorization": f"token {dashboard.token}"})
    policy = conn.getresponse().getheader("Content-Security-Policy") or ""
    conn.close()
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_live_sweep_counts_progress_and_time_left(served: tuple[RunningDashboard, Path]) -> None:
    data = api(served[0], LIVE)
    assert data["live"] is True
    assert data["counts"] == {"completed": 3, "running": 1, "failed": 1, "pending": 1, "skipped": 0}
    statuses = {j["num"]: j["status"] for j in data["jobs"]}
    assert statuses == {0: "completed", 1: "completed", 2: "completed", 3: "failed", 4: "running", 5: "pending"}
    progress = data["progress"]
    assert (progress["done"], progress["total"], progress["parallelism"]) == (4, 6, 2)
    # mean 4 s; the pending job needs 4 s, the running one what it has not used of 4 s; two at a time
    running = next(j for j in data["jobs"] if j["num"] == 4)
    assert progress["eta_s"] == pytest.approx((4.0 + max(0.0, 4.0 - running["duration_s"])) / 2, abs=0.5)


def test_running_job_overrides_come_from_its_folder_with_secrets_redacted(
    served: tuple[RunningDashboard, Path],
) -> None:
    dashboard, base = served
    live = base / "multirun" / "2026-01-01" / "live"
    reader = sweepdir.SweepReader(live)
    view = reader.job_view(live, "4", live / "4", {}, live=True)
    assert view.overrides == ["seed=2", "batch=8", "tracking.api_token=<redacted>"]
    assert "hunter2" not in request(dashboard, LIVE)[1].decode()


def test_chart_is_the_mean_and_std_over_seeds_of_completed_jobs(served: tuple[RunningDashboard, Path]) -> None:
    chart = api(served[0], LIVE + "&metric=slept_s&param=batch")["chart"]
    assert chart["param"] == "batch" and chart["numeric"] is True
    [series] = chart["series"]
    points = {p["x"]: p for p in series["points"]}
    assert points[8.0]["mean"] == pytest.approx(8.5) and points[8.0]["n"] == 2  # seeds 0 and 1
    assert points[8.0]["std"] == pytest.approx(0.7071, abs=1e-3)
    assert points[16.0]["n"] == 1 and points[16.0]["std"] == 0.0  # seed 1 failed at batch 16


def test_tradeoff_view_is_report_tradeoffs_points_and_front(tmp_path: Path) -> None:
    sweep = tmp_path / "fair"
    values = {("0.0", 0): (0.85, 0.40), ("0.0", 1): (0.87, 0.36), ("1.0", 0): (0.80, 0.10), ("1.0", 1): (0.82, 0.12)}
    values |= {("2.0", 0): (0.79, 0.20), ("2.0", 1): (0.77, 0.22)}  # less accurate and less fair than lam=1.0
    for num, ((lam, seed), (accuracy, gap)) in enumerate(values.items()):
        metrics = {"accuracy": accuracy, "demographic_parity_difference": gap, "slept_s": 1.0}
        record = JobRecord(**{**job(num, seed, 8).to_dict(), "overrides": [f"lam={lam}", f"seed={seed}"]})
        records.write_job_record(sweep / str(num), JobRecord(**{**record.to_dict(), "metrics": metrics}))
    dashboard = start_in_thread(sweep)
    try:
        first = api(dashboard, "/api/tradeoff")  # a known pair: chosen, directions known

        assert (first["x"], first["y"]) == ("accuracy", "demographic_parity_difference")
        assert first["better"] == {"x": "max", "y": "min"}
        assert [(p["label"], p["n"], p["on_front"]) for p in first["points"]] == [
            ("lam=0.0", 2, True),
            ("lam=1.0", 2, True),
            ("lam=2.0", 2, False),
        ]
        assert first["points"][0]["x_mean"] == pytest.approx(0.86)
        assert first["front"] == ["lam=1.0", "lam=0.0"]

        unknown = api(dashboard, "/api/tradeoff?x=accuracy&y=slept_s")
        assert unknown["error"] == "is higher or lower better for slept_s? choose it under 'better' (y)"
        assert unknown["known"]["slept_s"] is None and unknown["metrics"][:2] == [
            "accuracy",
            "demographic_parity_difference",
        ]
        chosen = api(dashboard, "/api/tradeoff?x=accuracy&y=slept_s&better_y=min")
        assert "error" not in chosen and chosen["better"] == {"x": "max", "y": "min"}
        assert "no such metric" in api(dashboard, "/api/tradeoff?x=accuracy&y=nosuch")["error"]
    finally:
        dashboard.stop()


def test_alerts_from_records_and_from_a_running_jobs_samples(served: tuple[RunningDashboard, Path]) -> None:
    alerts = api(served[0], LIVE)["alerts"]
    by_job = {a["num"]: a for a in alerts}
    assert by_job[1]["live"] is False and "93.0 above" in by_job[1]["message"]
    # job 4's own threshold (memory_percent: 50) is crossed by its second sample
    assert by_job[4]["live"] is True
    assert by_job[4]["message"] == "system_memory_percent 60.0 above the alert threshold 50 at 1.0 s"


def test_resource_series_of_running_and_recent_jobs(served: tuple[RunningDashboard, Path]) -> None:
    resources = api(served[0], LIVE)["resources"]
    running = next(j for j in resources["jobs"] if j["num"] == 4)
    assert running["cpu_percent"] == [90.0, 95.0] and len(running["t"]) == 2
    assert running["rss_mib"] == [120.5, 120.5]
    assert running["t"][1] - running["t"][0] == pytest.approx(1.0)
    assert resources["machine"]["system_memory_percent"]["v"] == [20.0, 60.0]


def test_an_older_sweeps_rss_mb_column_is_drawn_as_the_jobs_rss_in_mib(tmp_path: Path) -> None:
    """resources.csv written before the columns said MiB (``rss_mb``, which always held MiB) still gives the series."""
    sweep_dir = make_live_sweep(tmp_path / "sweep")
    write_resources(sweep_dir / "4", [(0.0, 90.0, 20.0), (1.0, 95.0, 60.0)], rss="rss_mb")  # over today's

    resources = state.sweep_state(sweepdir.SweepReader(tmp_path), sweep_dir)["resources"]

    running = next(j for j in resources["jobs"] if j["num"] == 4)
    assert running["rss_mib"] == [120.5, 120.5] and "rss_mb" not in running


def test_error_log_links_the_traceback_inside_the_served_folder(served: tuple[RunningDashboard, Path]) -> None:
    dashboard, _ = served
    [error] = api(dashboard, LIVE)["errors"]
    assert (error["num"], error["type"], error["status"]) == (3, "ValueError", "failed")
    assert error["traceback"] == "2026-01-01/live/3/traceback.txt"
    assert request(dashboard, "/files/" + error["traceback"])[0] == 200


def test_a_folder_of_sweeps_lists_them_newest_first(served: tuple[RunningDashboard, Path]) -> None:
    dashboard, _ = served
    sweeps = api(dashboard, "/api/sweeps")["sweeps"]
    assert [(s["path"], s["live"]) for s in sweeps] == [("2026-01-01/live", True), ("2026-01-01/finished", False)]
    finished = api(dashboard, "/api/sweep?sweep=2026-01-01/finished")
    assert finished["live"] is False and finished["counts"]["completed"] == 1
    assert request(dashboard, "/api/sweep?sweep=2026-01-01/..%2f..")[0] == 404
    assert request(dashboard, "/api/sweep?sweep=/etc")[0] == 404


def test_after_the_sweep_unfinished_jobs_show_as_lost_and_not_run(tmp_path: Path) -> None:
    sweep_dir = make_live_sweep(tmp_path / "sweep")
    records.write_sweep_record(sweep_dir)  # what the parent writes at its end
    data = state.sweep_state(sweepdir.SweepReader(tmp_path), sweep_dir)
    assert data["live"] is False
    statuses = {j["num"]: j["status"] for j in data["jobs"]}
    assert (statuses[4], statuses[5]) == ("lost", "not run")
    assert data["counts"] == {"completed": 3, "running": 0, "failed": 2, "pending": 1, "skipped": 0}


def test_jobs_done_before_a_resume_count_as_skipped_not_completed(tmp_path: Path) -> None:
    sweep_dir = make_live_sweep(tmp_path / "sweep")
    plan = json.loads((sweep_dir / sweepdir.PLAN_FILE).read_text())
    for entry in plan["jobs"][:2]:  # jobs 0 and 1 completed in the earlier run
        entry["skipped"] = True
    records.write_json_atomic(sweep_dir / sweepdir.PLAN_FILE, plan)
    data = state.sweep_state(sweepdir.SweepReader(tmp_path), sweep_dir)
    assert data["counts"] == {"completed": 1, "running": 1, "failed": 1, "pending": 1, "skipped": 2}
    assert data["progress"]["done"] == 4
    assert data["chart"]["series"][0]["points"][0]["n"] == 2  # their results still count in the chart


def test_a_dead_sweep_parent_means_the_sweep_is_not_live(tmp_path: Path) -> None:
    sweep_dir = make_live_sweep(tmp_path / "sweep")
    plan = json.loads((sweep_dir / sweepdir.PLAN_FILE).read_text())
    parent = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    records.write_json_atomic(sweep_dir / sweepdir.PLAN_FILE, {**plan, "pid": int(parent.stdout)})
    assert state.sweep_state(sweepdir.SweepReader(tmp_path), sweep_dir)["live"] is False


def test_cli_refuses_a_missing_folder_and_a_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", str(tmp_path / "nope")]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"error: {tmp_path / 'nope'}: no such folder (give a sweep folder or multirun/)"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["dashboard", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --port={port}: cannot listen on 127.0.0.1: ") and err.endswith("for a free port")
    assert main(["dashboard", str(tmp_path), "--host", "192.0.2.1"]) == 2
    assert (
        capsys.readouterr().err.strip() == "error: --host=192.0.2.1: not an address of this machine (default 127.0.0.1)"
    )


def test_every_request_needs_the_dashboards_token(served: tuple[RunningDashboard, Path]) -> None:
    dashboard, _ = served
    assert dashboard.url == f"http://127.0.0.1:{dashboard.port}/?token={dashboard.token}"
    assert len(dashboard.token) >= 32
    other = start_in_thread(served[1])
    try:
        assert other.token != dashboard.token  # new at every start
    finally:
        other.stop()
    for path in ["/", "/static/app.js"]:  # the page shell, the same for every sweep: no data, no token needed
        conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status == 200 and str(served[1]).encode() not in body  # nothing of the sweeps
        assert dashboard.token.encode() not in body and response.getheader("Set-Cookie") is None
    for path in [LIVE, "/api/sweeps", "/files/2026-01-01/live/3/traceback.txt"]:
        for headers in [{}, {"Authorization": "token wrong"}, {"Cookie": f"explaunch-x={dashboard.token}"}]:
            conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            conn.close()
            assert response.status == 403, (path, headers)
            assert b"ValueError" not in body and dashboard.token.encode() not in body
        conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
        conn.request("GET", f"{path}{'&' if '?' in path else '?'}token=wrong")
        assert conn.getresponse().status == 403
        conn.close()


def test_the_token_in_the_url_sets_a_cookie_that_the_pages_requests_carry(
    served: tuple[RunningDashboard, Path],
) -> None:
    dashboard, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    conn.request("GET", f"/?token={dashboard.token}")
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 200
    cookie = response.getheader("Set-Cookie") or ""
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("SameSite=Strict", "SameSite=strict")
    name_value = cookie.split(";")[0]
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    conn.request("GET", LIVE, headers={"Cookie": name_value})
    assert conn.getresponse().status == 200
    conn.close()


def test_the_cli_prints_its_url_with_a_token(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "explaunch", "dashboard", str(tmp_path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert re.search(r" at http://127\.0\.0\.1:\d+/\?token=[\w-]{32,}  \(Ctrl-C stops it\)$", line), line
