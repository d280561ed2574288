"""scripts/gpu_check.py without a GPU: the no-GPU exit, the record checks on hand-written job records, the table,
the process-group timeout, and the whole run with the GPU parts stubbed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from benchmarks import b7_gpu_energy
from scripts import gpu_check
from scripts.gpu_check import Check, GpuInventory, JobOutcome

SCRIPT = Path(gpu_check.__file__)
GPU_A = "GPU-1a2b3c4d-0000-1111-2222-333344445555"
GPU_B = "GPU-9f8e7d6c-0000-1111-2222-333344445555"


def energy(
    joules: float = 3000.0, devices: Any = None, source: str = "counter", scope: str = "devices"
) -> dict[str, Any]:
    devices = {GPU_A: joules} if devices is None else devices
    return {
        "window_s": 10.3,
        "iterations": 28,
        "joules": joules + 400.0,
        "components": {
            "cpu": {"joules": 300.0, "source": "counter", "scope": "apportioned", "reads": 52, "method": "RAPL"},
            "ram": {"joules": 100.0, "source": "modelled", "scope": "machine", "reads": 0, "method": "constant"},
            "gpu": {"joules": joules, "source": source, "scope": scope, "reads": 52, "devices": devices},
        },
        "quality": "ok",
        "quality_reasons": [],
    }


def gpu_record(**changes: Any) -> dict[str, Any]:
    """A job.json of a passing single-GPU llm_inference job, in the new format; ``changes`` replace parts of it."""
    record: dict[str, Any] = {
        "status": "completed",
        "error": None,
        "metrics": {
            "energy_window_s": 10.3,
            "energy_iterations": 28,
            "energy_gpu_joules": 3000.0,
            "memory_cuda_max_allocated_mib": 2150.5,
            "throughput_e2e_tokens_per_s": 20480.0,
            "throughput_decode_tokens_per_s": 24000.0,
        },
        "info": {"device": "cuda:0", "dtype": "bfloat16", "energy": energy()},
        "energy": energy(joules=5200.0),
    }
    for key, value in changes.items():
        record[key] = value
    return record


def ddp_record(devices: Any = None, backend: str | None = "nccl", ranks: tuple[str, ...] = ("cuda:0", "cuda:1")) -> Any:
    devices = {GPU_A: 1600.0, GPU_B: 1400.0} if devices is None else devices
    info: dict[str, Any] = {
        "device": "cuda:0",
        "energy": energy(3000.0, devices),
        "processes": [{"rank": r, "device": d} for r, d in enumerate(ranks)],
    }
    if backend is not None:
        info["backend"] = backend
    return gpu_record(info=info, energy=energy(3000.0, devices))


def failed(checks: list[Check]) -> dict[str, str]:
    return {check.name: check.value for check in checks if check.ok is False}


def test_without_a_visible_gpu_the_check_says_so_in_one_line_and_exits_2() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("gpu_check: no NVIDIA GPU")
    assert done.stderr.rstrip().endswith("nothing was run")


FAKE_NVML = """
class NVMLError(Exception):
    pass

class _Memory:
    total = 150 * 2**30

def nvmlInit(): pass
def nvmlShutdown(): pass
def nvmlDeviceGetCount(): return 2
def nvmlDeviceGetHandleByIndex(i): return i
def nvmlDeviceGetUUID(h): return f"GPU-fake-{h}"
def nvmlDeviceGetName(h): return "NVIDIA H200"
def nvmlDeviceGetMemoryInfo(h): return _Memory()
def nvmlDeviceGetTotalEnergyConsumption(h):
    if h == 1:
        raise NVMLError("Not Supported")
    return 123456
def nvmlDeviceGetEnforcedPowerLimit(h): return 700000
def nvmlSystemGetDriverVersion(): return "570.86.15"
def nvmlSystemGetCudaDriverVersion_v2(): return 12080
"""


@pytest.mark.extras
def test_with_a_gpu_that_torch_cannot_use_the_check_describes_it_runs_nothing_and_fails(tmp_path: Path) -> None:
    """NVML (a stand-in module) shows two GPUs, CUDA_VISIBLE_DEVICES picks the second; torch finds no such GPU."""
    (tmp_path / "pynvml.py").write_text(FAKE_NVML)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "CUDA_VISIBLE_DEVICES": "GPU-fake-1"}
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--budget-s", "0"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    report = (out / "gpu-check.md").read_text()
    assert ": NVIDIA H200 x1, driver 570.86.15, CUDA 12.8, torch " in report.splitlines()[0]
    assert (
        "| GPU 0 (NVML index 1) | NVIDIA H200, 150.0 GiB, GPU-fake-1, energy counter: NO (energy is sampled) | - |"
        in (report)
    )
    assert "| torch sees CUDA | 0 device(s), torch " in report
    assert "| precision-no: job completed | not run: torch does not see CUDA | NO |" in report
    assert json.loads((out / "gpu-check.json").read_text())["inventory"]["gpus"][0]["power_limit_w"] == 700.0
    assert done.stderr.startswith("FAILED: torch sees CUDA, precision-no: job completed")


@pytest.mark.skipif(b7_gpu_energy.nvml_unavailable() is None, reason="NVML works here: the check would run")
def test_without_nvml_the_check_exits_2_with_one_line_naming_nvml() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("gpu_check: no NVIDIA GPU here: NVML is not available (NVMLError")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_a_good_single_gpu_record_passes_every_check() -> None:
    checks = gpu_check.record_checks("precision-bf16", gpu_record(), gpus=1, precision="bf16")
    assert failed(checks) == {}
    assert gpu_check.verdict(checks) == gpu_check.EXIT_OK
    by_name = {c.name: c for c in checks}
    assert by_name["precision-bf16: GPU energy, measured window"].value == (
        "counter, devices, 1 device(s) [GPU-1a2b3c4d], 3000 J"
    )
    assert by_name["precision-bf16: measured window"].value == "10.3 s, 28 generate calls (want >= 9.5 s)"
    assert by_name["precision-bf16: energy quality"].value == "ok"


def test_gpu_energy_over_the_whole_machine_fails_the_scope_check() -> None:
    record = gpu_record(energy=energy(5200.0, scope="machine"))
    problems = failed(gpu_check.record_checks("precision-no", record, gpus=1))
    assert list(problems) == ["precision-no: GPU energy, whole job"]
    assert "scope 'machine', want devices" in problems["precision-no: GPU energy, whole job"]
    assert gpu_check.verdict(gpu_check.record_checks("precision-no", record, gpus=1)) == gpu_check.EXIT_FAILED


def test_a_window_shorter_than_the_minimum_fails() -> None:
    record = gpu_record()
    record["metrics"]["energy_window_s"] = 4.2
    problems = failed(gpu_check.record_checks("precision-fp16", record, gpus=1))
    assert problems == {"precision-fp16: measured window": "4.2 s, 28 generate calls (want >= 9.5 s)"}


def test_the_same_gpu_twice_fails_in_every_form_it_can_take(tmp_path: Path) -> None:
    as_list = failed(gpu_check.record_checks("ddp-2-gpus", ddp_record(devices=[GPU_A, GPU_A]), gpus=2))
    assert "counted twice: " + GPU_A in as_list["ddp-2-gpus: GPU energy, measured window"]
    one_device = failed(gpu_check.record_checks("ddp-2-gpus", ddp_record(devices={GPU_A: 3000.0}), gpus=2))
    assert "1 distinct device(s), want 2" in one_device["ddp-2-gpus: GPU energy, whole job"]
    same_rank_device = failed(gpu_check.record_checks("ddp-2-gpus", ddp_record(ranks=("cuda:0", "cuda:0")), gpus=2))
    assert same_rank_device == {"ddp-2-gpus: processes": "2 process(es) on cuda:0, cuda:0 (want 2, distinct)"}
    text = json.dumps(ddp_record()).replace(GPU_B, GPU_A)  # json.loads alone would keep one of the two silently
    (tmp_path / "job.json").write_text(text)
    with pytest.raises(gpu_check.DuplicateKey, match=f"key '{GPU_A}' appears twice"):
        gpu_check.load_record(tmp_path / "job.json")


def test_a_good_ddp_record_passes_and_a_backend_other_than_nccl_fails() -> None:
    assert failed(gpu_check.record_checks("ddp-2-gpus", ddp_record(), gpus=2)) == {}
    gloo = failed(gpu_check.record_checks("ddp-2-gpus", ddp_record(backend="gloo"), gpus=2))
    assert gloo == {"ddp-2-gpus: backend": "gloo"}
    unsaid = {c.name: c for c in gpu_check.record_checks("ddp-2-gpus", ddp_record(backend=None), gpus=2)}
    assert (unsaid["ddp-2-gpus: backend"].value, unsaid["ddp-2-gpus: backend"].ok) == ("not recorded", None)


def test_devices_that_do_not_add_up_to_the_gpu_total_fail() -> None:
    record = gpu_record(energy=energy(5200.0, devices={GPU_A: 2600.0}))
    problems = failed(gpu_check.record_checks("precision-no", record, gpus=1))
    assert "devices add up to 2600 J, not 5200 J" in problems["precision-no: GPU energy, whole job"]


def test_sampled_gpu_energy_passes_only_with_a_reason() -> None:
    without = energy(source="sampled")
    problems = failed([gpu_check.gpu_energy_check("window", without, 1)])
    assert "sampled, and no reason given" in problems["window"]
    with_reason = energy(source="sampled") | {"quality": "low", "quality_reasons": ["gpu: no energy counter"]}
    check = gpu_check.gpu_energy_check("window", with_reason, 1)
    assert check.ok is True and check.value.startswith("sampled (gpu: no energy counter), devices")


def test_a_record_without_the_new_fields_fails_each_missing_one() -> None:
    old = {"status": "completed", "metrics": {"throughput_tokens_per_s": 100.0}, "info": {}, "energy": {}}
    problems = failed(gpu_check.record_checks("precision-no", old, gpus=1))
    assert problems == {
        "precision-no: GPU energy, measured window": "no energy record",
        "precision-no: GPU energy, whole job": "no gpu component",
        "precision-no: measured window": "no energy_window_s",
        "precision-no: energy quality": "quality None, want ok or low",
        "precision-no: CUDA memory": "no memory_cuda_max_allocated_mib",
        "precision-no: tokens/s": "no throughput_e2e_tokens_per_s",
    }


def test_a_failed_job_shows_its_error_and_a_job_without_record_its_command_error() -> None:
    record = gpu_record(status="failed", error={"type": "OutOfMemoryError", "message": "CUDA out of memory"})
    checks = gpu_check.record_checks("precision-no", record, gpus=1)
    assert failed(checks)["precision-no: job completed"] == "failed: OutOfMemoryError: CUDA out of memory"
    outcome = JobOutcome("precision-no", [], Path("x"), error="no result within 240 s (log: x.log)")
    assert gpu_check.outcome_checks(outcome, 1) == [
        Check("precision-no: job completed", "no result within 240 s (log: x.log)", False)
    ]
    stopped = gpu_record(status="interrupted", error={"type": "JobInterrupted", "message": "SIGTERM"})
    outcome = JobOutcome("precision-no", [], Path("x"), record=stopped, error="no result within 240 s (log: x.log)")
    assert failed(gpu_check.outcome_checks(outcome, 1)) == {
        "precision-no: job completed": "interrupted: JobInterrupted: SIGTERM",
        "precision-no: command": "no result within 240 s (log: x.log)",
    }


def test_the_table_is_markdown_with_one_row_per_check_and_a_titled_report() -> None:
    checks = [Check("GPU 0", "NVIDIA H200 | 141 GiB"), Check("a: tokens/s", "x = 1.0", True), Check("b", "bad", False)]
    assert gpu_check.markdown_table(checks).splitlines() == [
        "| check | value | ok |",
        "|---|---|---|",
        "| GPU 0 | NVIDIA H200 / 141 GiB | - |",
        "| a: tokens/s | x = 1.0 | yes |",
        "| b | bad | NO |",
    ]
    inventory = GpuInventory([{"name": "NVIDIA H200"}, {"name": "NVIDIA H200"}], driver="570.86.15", cuda="12.8")
    title = gpu_check.report_title("2026-12-05 10:00 UTC", inventory, {"torch": "2.14.1", "cuda": "13.0"}, "abc1234")
    assert title == (
        "explaunch GPU check, 2026-12-05 10:00 UTC: NVIDIA H200 x2, driver 570.86.15, CUDA 12.8, "
        "torch 2.14.1 (CUDA 13.0), commit abc1234"
    )


def test_cuda_visible_devices_picks_gpus_by_index_or_uuid_and_stops_at_an_unknown_one() -> None:
    uuids = [GPU_A, GPU_B, "GPU-cccc"]
    assert gpu_check.visible_indices(uuids, None) == [0, 1, 2]
    assert gpu_check.visible_indices(uuids, "") == []
    assert gpu_check.visible_indices(uuids, "2,0") == [2, 0]
    assert gpu_check.visible_indices(uuids, "GPU-9f8e,7,1") == [1]
    assert gpu_check.visible_indices(uuids, "-1") == []
    assert gpu_check.cuda_version(12080) == "12.8"


def test_a_job_past_its_time_limit_is_stopped_with_every_process_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    start = time.monotonic()
    code = gpu_check.run_logged(["sh", "-c", script], tmp_path, tmp_path / "log", timeout=1.0)
    assert code is None and time.monotonic() - start < 15
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child):
        assert time.monotonic() < deadline, "the job's child process outlived the time limit"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a zombie has ended, its parent has not reaped it yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _job_record(name: str) -> dict[str, Any]:
    """A good record for the stubbed job ``name``: ``precision-<p>`` with p's dtype, or the DDP job's."""
    if name.startswith("ddp"):
        return dict(ddp_record())
    record = gpu_record()
    record["info"]["dtype"] = gpu_check.DTYPES[name.removeprefix("precision-")]
    return record


def _stub_gpu_run(monkeypatch: pytest.MonkeyPatch, gpus: int, records: dict[str, Any]) -> list[str]:
    """Stub the parts that need a GPU; job ``name`` returns ``records[name]``, else a good record."""
    found = [
        {"name": "NVIDIA H200", "index": i, "uuid": uuid, "memory_gib": 139.8, "energy_counter": True}
        for i, uuid in enumerate([GPU_A, GPU_B][:gpus])
    ]
    torch_info = {"torch": "2.14.1", "cuda": "13.0", "available": True, "devices": gpus}
    monkeypatch.setattr(gpu_check, "gpu_inventory", lambda: GpuInventory(found, "570.86.15", "12.8"))
    monkeypatch.setattr(gpu_check, "probe_torch", lambda: torch_info)
    monkeypatch.setattr(gpu_check, "compare_counter_and_samples", lambda outcome: None)
    monkeypatch.setattr(gpu_check, "run_b7", lambda out, n, t: ([Check("B7: x", "0.4%", True)], {"rows": []}))
    ran: list[str] = []

    def run_job(name: str, overrides: list[str], out: Path, timeout: float) -> JobOutcome:
        ran.append(name)
        record = records.get(name) or _job_record(name)
        return JobOutcome(name, list(overrides), out / "jobs" / name, 40.0, record)

    monkeypatch.setattr(gpu_check, "run_job", run_job)
    return ran


def test_the_whole_check_on_two_gpus_runs_three_precisions_and_ddp_and_writes_its_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = _stub_gpu_run(monkeypatch, 2, {})
    assert gpu_check.main(["--out", str(tmp_path)]) == gpu_check.EXIT_OK
    assert ran == ["precision-no", "precision-fp16", "precision-bf16", "ddp-2-gpus"]
    report = (tmp_path / "gpu-check.md").read_text()
    assert report.startswith("explaunch GPU check, ") and ": NVIDIA H200 x2, driver 570.86.15, CUDA 12.8" in report
    assert "| precision-no: dtype | float32 (want float32) | yes |" in report
    assert "| ddp-2-gpus: backend | nccl | yes |" in report and "| B7: x | 0.4% | yes |" in report
    raw = json.loads((tmp_path / "gpu-check.json").read_text())
    assert raw["passed"] is True and set(raw["jobs"]) == set(ran)
    assert raw["jobs"]["ddp-2-gpus"]["record"]["info"]["backend"] == "nccl"
    assert report in capsys.readouterr().out


def test_the_whole_check_on_one_gpu_skips_ddp_and_exits_1_on_a_bad_record(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _job_record("precision-bf16")
    bad["energy"] = energy(5200.0, scope="machine")
    ran = _stub_gpu_run(monkeypatch, 1, {"precision-bf16": bad})
    assert gpu_check.main(["--out", str(tmp_path)]) == gpu_check.EXIT_FAILED
    assert ran == ["precision-no", "precision-fp16", "precision-bf16"]
    assert capsys.readouterr().err == "FAILED: precision-bf16: GPU energy, whole job\n"
    assert json.loads((tmp_path / "gpu-check.json").read_text())["passed"] is False
