"""The GPU check: real explaunch jobs on this machine's NVIDIA GPU(s), their records held to the energy contract.

    make gpu-check          (or: .venv/bin/python scripts/gpu_check.py [--out DIR] [--b7-repeats N] [--budget-s S])

What it runs, one after another, each ``python main.py`` job in a process of its own with a time limit: one LLM job
per ``hardware.mixed_precision`` (no, fp16, bf16) on GPU 0 (``benchmarks.b7_gpu_energy.GPU_JOB``); benchmark B7
(the GPU's energy counter against the integral of the sampled power); and, with two GPUs or more, a ``sharding=ddp``
job across GPUs 0 and 1. Each ``job.json`` is checked: the GPU energy is read from the counter (or sampled, with the
reason given) over the job's own devices (``scope: devices``, every device once), the measured window lasted
about ``energy.min_window_s``, the record says how good its energy figure is, CUDA memory and tokens/s were
measured. About 5 minutes on one GPU; ``--budget-s`` (default 480) bounds the whole.

It prints one Markdown table (check, value, ok) headed by the date and the GPU, and writes it with the raw JSON
(every job record, B7's result) to ``--out`` (default: a new temporary folder; its path is printed).
Exit 0 when every check passes, 1 when one fails, 2 with one line (nothing run) where there is no NVIDIA GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "main.py"
PRECISIONS = ("no", "fp16", "bf16")
DTYPES = {"no": "float32", "fp16": "float16", "bf16": "bfloat16"}
MIN_WINDOW_S = 9.5  # energy.min_window_s is 10 s by default; the clock that ends a window may read a bit early
JOB_TIMEOUT_S = 240.0
BUDGET_S = 480.0
EXIT_OK, EXIT_FAILED, EXIT_NO_GPU = 0, 1, 2
BACKEND_KEYS = frozenset({"backend", "dist_backend", "distributed_backend", "process_group_backend"})
DDP = ("sharding=ddp", "sharding.num_processes=2", "hardware.num_gpus=2", "hardware.gpu_ids=[0,1]")
TORCH_PROBE = (
    "import json, torch; print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda,"
    " 'available': torch.cuda.is_available(), 'devices': torch.cuda.device_count()}))"
)


class NoGpu(Exception):
    """No NVIDIA GPU to check: no NVML, no device, or none visible (``CUDA_VISIBLE_DEVICES``)."""


class DuplicateKey(ValueError):
    """A JSON object names one key twice: Python's json keeps the last silently (a device counted twice)."""


@dataclass(frozen=True)
class Check:
    """One row of the table. ``ok`` None: information, held to nothing."""

    name: str
    value: str
    ok: bool | None = None

    @property
    def mark(self) -> str:
        return "-" if self.ok is None else "yes" if self.ok else "NO"


@dataclass(frozen=True)
class GpuInventory:
    gpus: list[dict[str, Any]]  # the visible GPUs, in CUDA's order: index (NVML's), name, uuid, memory, counter
    driver: str
    cuda: str  # the CUDA version the driver supports

    @property
    def model(self) -> str:
        names = list(dict.fromkeys(str(g["name"]) for g in self.gpus))
        return f"{' + '.join(names)} x{len(self.gpus)}"


@dataclass
class JobOutcome:
    name: str
    overrides: list[str]
    job_dir: Path
    wall_s: float = 0.0
    record: dict[str, Any] | None = None
    error: str | None = None
    comparison: dict[str, Any] = field(default_factory=dict)  # B7's counter vs sampled, for information


# ---- the GPU and torch ----------------------------------------------------------------------------------------
def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cuda_version(number: int) -> str:
    """NVML's CUDA version as an integer (12040) to text (12.4)."""
    return f"{number // 1000}.{number % 1000 // 10}"


def visible_indices(uuids: Sequence[str], cuda_visible_devices: str | None) -> list[int]:
    """NVML indices of the GPUs a job may use, in CUDA's order: every GPU, or those ``CUDA_VISIBLE_DEVICES`` names
    (indices or UUID prefixes; as CUDA, the list ends at the first entry that names no GPU)."""
    if cuda_visible_devices is None:
        return list(range(len(uuids)))
    found: list[int] = []
    for item in (part.strip() for part in cuda_visible_devices.split(",")):
        if item.isdigit() and int(item) < len(uuids):
            found.append(int(item))
        elif item.startswith(("GPU-", "MIG-")) and (matches := [i for i, u in enumerate(uuids) if u.startswith(item)]):
            found.append(matches[0])
        else:
            break
    return found


def _describe_gpu(nvml: Any, index: int, handle: Any, uuid: str) -> dict[str, Any]:
    gpu: dict[str, Any] = {"index": index, "uuid": uuid, "name": _text(nvml.nvmlDeviceGetName(handle))}
    gpu["memory_gib"] = round(nvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30, 1)
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        gpu["energy_counter"] = True
    except nvml.NVMLError:
        gpu["energy_counter"] = False
    with contextlib.suppress(nvml.NVMLError):
        gpu["power_limit_w"] = nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
    return gpu


def gpu_inventory() -> GpuInventory:
    """The NVIDIA GPUs the jobs will see; raises NoGpu (with why) where there is none."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as ex:
        raise NoGpu(f"no NVIDIA GPU here: NVML is not available ({type(ex).__name__})") from None
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(int(pynvml.nvmlDeviceGetCount()))]
        uuids = [_text(pynvml.nvmlDeviceGetUUID(h)) for h in handles]
        wanted = os.environ.get("CUDA_VISIBLE_DEVICES")
        visible = visible_indices(uuids, wanted)
        if not visible:
            where = "NVML sees no device" if wanted is None else f"CUDA_VISIBLE_DEVICES={wanted!r}"
            raise NoGpu(f"no NVIDIA GPU visible here ({where})")
        return GpuInventory(
            gpus=[_describe_gpu(pynvml, i, handles[i], uuids[i]) for i in visible],
            driver=_text(pynvml.nvmlSystemGetDriverVersion()),
            cuda=cuda_version(int(pynvml.nvmlSystemGetCudaDriverVersion_v2())),
        )
    except pynvml.NVMLError as ex:
        raise NoGpu(f"NVML failed: {ex}") from None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def probe_torch(timeout: float = 120) -> dict[str, Any]:
    """torch's version, its CUDA and whether it sees the GPUs, asked in a process of its own (no CUDA context here)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", TORCH_PROBE], capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"error": f"importing torch took over {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": " | ".join(done.stderr.strip().splitlines()[-2:])}
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return data


# ---- running jobs ---------------------------------------------------------------------------------------------
def _job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "MLFLOW_DISABLE_TELEMETRY": "true", "HYDRA_FULL_ERROR": "0"}


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the job's process group (a DDP job's ranks included), SIGKILL to whatever is left 15 s later."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_logged(cmd: Sequence[str], cwd: Path, log: Path, timeout: float) -> int | None:
    """Exit status of ``cmd`` (None when it ran past ``timeout`` and was stopped); its output goes to ``log``."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=_job_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a timeout stops the job and every process it started
        )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if proc.poll() is None:
                _stop_group(proc)


def _log_tail(log: Path, lines: int = 3) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def run_job(name: str, overrides: Sequence[str], out: Path, timeout: float) -> JobOutcome:
    jobs = out / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    outcome = JobOutcome(name, list(overrides), jobs / name)
    log = jobs / f"{name}.log"
    start = time.monotonic()
    code = run_logged([sys.executable, str(MAIN), *overrides, f"hydra.run.dir={outcome.job_dir}"], out, log, timeout)
    outcome.wall_s = time.monotonic() - start
    if code is None:
        outcome.error = f"no result within {timeout:.0f} s (log: {log})"
    elif code != 0:
        outcome.error = f"exit {code}: {_log_tail(log)}"
    try:
        outcome.record = load_record(outcome.job_dir / "job.json")
    except FileNotFoundError:
        outcome.error = outcome.error or f"no job.json in {outcome.job_dir}"
    except ValueError as ex:
        outcome.error = f"job.json unreadable: {ex}"
    return outcome


# ---- the record checks (pure) ---------------------------------------------------------------------------------
def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise DuplicateKey(f"key {key!r} appears twice in one object")
        found[key] = value
    return found


def load_record(path: Path) -> dict[str, Any]:
    """A ``job.json``; raises DuplicateKey where an object names a key twice (json would keep one silently)."""
    data: dict[str, Any] = json.loads(path.read_text(), object_pairs_hook=_unique_keys)
    return data


def device_uuids(devices: Any) -> list[str]:
    """The UUIDs of a GPU component's ``devices``: a mapping UUID -> joules (or a list of UUIDs / {uuid: ...})."""
    if isinstance(devices, Mapping):
        return [str(k) for k in devices]
    if isinstance(devices, list):
        return [str(d.get("uuid")) if isinstance(d, Mapping) else str(d) for d in devices]
    return []


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _sampled_reason(gpu: Mapping[str, Any], energy: Mapping[str, Any]) -> str:
    for key in ("reason", "why", "note"):
        if isinstance(gpu.get(key), str) and gpu[key].strip():
            return str(gpu[key])
    reasons = [str(r) for r in energy.get("quality_reasons") or [] if "gpu" in str(r).lower()]
    return "; ".join(reasons)


def gpu_energy_check(label: str, energy: Any, expected_devices: int) -> Check:
    """The GPU component of an energy record (``info.energy`` or the job's ``energy``): read from the counter (or
    sampled, saying why), on the job's devices only (``scope: devices``), each device once, ``expected_devices`` of
    them, more than 0 J, the devices' joules adding up to the component's."""
    if not isinstance(energy, Mapping):
        return Check(label, "no energy record", False)
    gpu = (energy.get("components") or {}).get("gpu")
    if not isinstance(gpu, Mapping):
        why = (energy.get("unavailable") or {}).get("gpu")
        return Check(label, f"no gpu component ({why})" if why else "no gpu component", False)
    problems: list[str] = []
    source, scope, joules = gpu.get("source"), gpu.get("scope"), _number(gpu.get("joules"))
    if source == "sampled":
        reason = _sampled_reason(gpu, energy)
        source = f"sampled ({reason})" if reason else "sampled"
        if not reason:
            problems.append("sampled, and no reason given")
    elif source != "counter":
        problems.append(f"source {source!r}, want counter")
    if scope != "devices":
        problems.append(f"scope {scope!r}, want devices")
    if joules is None or joules <= 0:
        problems.append(f"joules {gpu.get('joules')!r}, want > 0")
    uuids = device_uuids(gpu.get("devices"))
    distinct = {u.strip().lower() for u in uuids}
    if len(distinct) < len(uuids):
        twice = sorted({u for u in uuids if [v.strip().lower() for v in uuids].count(u.strip().lower()) > 1})
        problems.append(f"counted twice: {', '.join(twice)}")
    if len(distinct) != expected_devices:
        problems.append(f"{len(distinct)} distinct device(s), want {expected_devices}")
    devices = gpu.get("devices")
    if isinstance(devices, Mapping) and joules and all(_number(v) is not None for v in devices.values()):
        total = sum(float(v) for v in devices.values())
        if abs(total - joules) > 0.01 * joules:
            problems.append(f"devices add up to {total:.0f} J, not {joules:.0f} J")
    shown = ", ".join(u[:12] for u in uuids) or "none"
    value = f"{source}, {scope}, {len(uuids)} device(s) [{shown}], " + (
        f"{joules:.0f} J" if joules is not None else "no joules"
    )
    return Check(label, "; ".join([value, *problems]), not problems)


def window_check(label: str, metrics: Mapping[str, Any]) -> Check:
    window, iterations = _number(metrics.get("energy_window_s")), metrics.get("energy_iterations")
    if window is None:
        return Check(label, "no energy_window_s", False)
    calls = f", {iterations:.0f} generate calls" if _number(iterations) is not None else ""
    return Check(label, f"{window:.1f} s{calls} (want >= {MIN_WINDOW_S} s)", window >= MIN_WINDOW_S)


def quality_check(label: str, energy: Any) -> Check:
    quality = energy.get("quality") if isinstance(energy, Mapping) else None
    if quality not in ("ok", "low"):
        return Check(label, f"quality {quality!r}, want ok or low", False)
    reasons = "; ".join(str(r) for r in (energy or {}).get("quality_reasons") or [])
    return Check(label, f"{quality}: {reasons}" if reasons else str(quality), True)


def positive_check(label: str, metrics: Mapping[str, Any], key: str, required: bool = True) -> Check:
    value = _number(metrics.get(key))
    if value is None:
        return Check(label, f"no {key}", False if required else None)
    return Check(label, f"{key} = {value:.1f}", value > 0)


def dtype_check(label: str, info: Mapping[str, Any], precision: str) -> Check:
    if "dtype" not in info:
        return Check(label, "not recorded")
    return Check(label, f"{info['dtype']} (want {DTYPES[precision]})", info["dtype"] == DTYPES[precision])


def backends(info: Any) -> list[str]:
    """Every value the record's ``info`` gives under a distributed-backend key, at any depth."""
    found: list[str] = []
    if isinstance(info, Mapping):
        for key, value in info.items():
            if key in BACKEND_KEYS and isinstance(value, str):
                found.append(value)
            else:
                found.extend(backends(value))
    elif isinstance(info, list):
        for item in info:
            found.extend(backends(item))
    return found


def backend_check(label: str, info: Mapping[str, Any]) -> Check:
    found = backends(info)
    if not found:
        return Check(label, "not recorded")
    return Check(label, ", ".join(sorted(set(found))), all(b.lower() == "nccl" for b in found))


def ranks_check(label: str, info: Mapping[str, Any], expected: int) -> Check:
    """The group's processes (``info.processes``), each on a device of its own."""
    processes = info.get("processes")
    if not isinstance(processes, list):
        return Check(label, "not recorded")
    devices = [str(p.get("device")) for p in processes if isinstance(p, Mapping)]
    ok = len(devices) == expected and len(set(devices)) == expected
    return Check(label, f"{len(devices)} process(es) on {', '.join(devices)} (want {expected}, distinct)", ok)


def record_checks(name: str, record: Mapping[str, Any], gpus: int, precision: str | None = None) -> list[Check]:
    """What one GPU job's ``job.json`` must show; ``gpus`` is how many devices the job ran on."""
    metrics, info = record.get("metrics") or {}, record.get("info") or {}
    error = record.get("error") or {}
    status = str(record.get("status"))
    if error:
        status += f": {error.get('type')}: {str(error.get('message'))[:160]}"
    checks = [Check(f"{name}: job completed", status, record.get("status") == "completed")]
    if precision is not None:
        checks.append(dtype_check(f"{name}: dtype", info, precision))
    checks += [
        gpu_energy_check(f"{name}: GPU energy, measured window", info.get("energy"), gpus),
        gpu_energy_check(f"{name}: GPU energy, whole job", record.get("energy"), gpus),
        window_check(f"{name}: measured window", metrics),
        quality_check(f"{name}: energy quality", info.get("energy")),
        positive_check(f"{name}: CUDA memory", metrics, "memory_cuda_max_allocated_mib", required=gpus == 1),
        positive_check(f"{name}: tokens/s", metrics, "throughput_e2e_tokens_per_s"),
    ]
    if gpus > 1:
        checks += [backend_check(f"{name}: backend", info), ranks_check(f"{name}: processes", info, gpus)]
    return checks


def outcome_checks(outcome: JobOutcome, gpus: int, precision: str | None = None) -> list[Check]:
    if outcome.record is None:
        return [Check(f"{outcome.name}: job completed", outcome.error or "no record", False)]
    checks = record_checks(outcome.name, outcome.record, gpus, precision)
    if outcome.error:  # a record, but the command failed or ran past its limit
        checks.append(Check(f"{outcome.name}: command", outcome.error, False))
    if outcome.comparison:
        c = outcome.comparison
        if "error" in c:
            checks.append(Check(f"{outcome.name}: GPU J, counter vs sampled", str(c["error"])))
        else:
            gap = 100.0 * (c["sampled_j"] / c["counter_j"] - 1.0) if c["counter_j"] else float("nan")
            value = f"{c['counter_j']:.0f} J vs {c['sampled_j']:.0f} J ({gap:+.1f}%)"
            checks.append(Check(f"{outcome.name}: GPU J, counter vs sampled", value))
    return checks


# ---- the report -----------------------------------------------------------------------------------------------
def markdown_table(checks: Sequence[Check]) -> str:
    lines = ["| check | value | ok |", "|---|---|---|"]
    for check in checks:
        cells = (check.name, check.value, check.mark)
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def report_title(date: str, inventory: GpuInventory, torch_info: Mapping[str, Any], commit: str) -> str:
    torch_text = (
        f"torch {torch_info.get('torch')} (CUDA {torch_info.get('cuda')})"
        if "torch" in torch_info
        else f"torch: {torch_info.get('error')}"
    )
    return (
        f"explaunch GPU check, {date}: {inventory.model}, driver {inventory.driver}, CUDA {inventory.cuda}, "
        f"{torch_text}, commit {commit or 'unknown'}"
    )


def verdict(checks: Sequence[Check]) -> int:
    return EXIT_FAILED if any(check.ok is False for check in checks) else EXIT_OK


def _commit() -> str:
    """The commit, with ``-dirty`` when the code the figures depend on has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src", "conf", "main.py", "benchmarks", "scripts"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    except OSError:
        return ""
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


# ---- the steps ------------------------------------------------------------------------------------------------
def inventory_checks(inventory: GpuInventory, torch_info: Mapping[str, Any]) -> list[Check]:
    checks = []
    for i, gpu in enumerate(inventory.gpus):
        counter = "yes" if gpu["energy_counter"] else "NO (energy is sampled)"
        value = f"{gpu['name']}, {gpu['memory_gib']} GiB, {gpu['uuid']}, energy counter: {counter}"
        checks.append(Check(f"GPU {i} (NVML index {gpu['index']})", value))
    if "torch" not in torch_info:
        checks.append(Check("torch sees CUDA", str(torch_info.get("error")), False))
    else:
        seen = f"{torch_info['devices']} device(s), torch {torch_info['torch']}, CUDA {torch_info['cuda']}"
        checks.append(Check("torch sees CUDA", seen, bool(torch_info["available"]) and torch_info["devices"] > 0))
    return checks


def compare_counter_and_samples(outcome: JobOutcome) -> None:
    """B7's comparison on a job that already ran (information: B7 itself is the check)."""
    if outcome.record is None or outcome.record.get("status") != "completed":
        return
    from benchmarks import b7_gpu_energy

    try:
        outcome.comparison = b7_gpu_energy.compare(outcome.job_dir)
    except Exception as ex:
        outcome.comparison = {"error": f"{type(ex).__name__}: {ex}"}


def run_b7(out: Path, repeats: int, timeout: float) -> tuple[list[Check], dict[str, Any]]:
    """Benchmark B7 through its own module; its result also goes to ``out/B7.json``."""
    from benchmarks import b7_gpu_energy
    from benchmarks.harness import ERROR, MET, MISSED, machine_info, write_result

    workdir = out / "b7"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = b7_gpu_energy.measure(workdir, repeats, timeout)
    except Exception as ex:
        why = f"{type(ex).__name__}: {ex}"
        return [Check("B7: GPU energy, sampled vs counter", why[:400], False)], {"error": why}
    machine = machine_info()
    write_result(result, machine, out)
    ok_of = {MET: True, MISSED: False, ERROR: False}
    checks = []
    for row in result.rows:
        value = row.detail if row.value is None else f"{row.value:.2f}% (target <= {b7_gpu_energy.TARGET.bound}%); "
        if row.value is not None:
            value += row.detail
        checks.append(Check(f"B7: {row.label}", value, ok_of.get(row.status)))
    return checks, result.to_dict(machine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/gpu_check.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="where the report, the raw JSON and the job folders go")
    parser.add_argument("--b7-repeats", type=int, default=2, metavar="N", help="B7's jobs (default 2)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="time for everything (default 480 s)")
    args = parser.parse_args(argv)
    try:
        inventory = gpu_inventory()
    except NoGpu as ex:
        print(f"gpu_check: {ex}; nothing was run", file=sys.stderr)
        return EXIT_NO_GPU

    if str(ROOT) not in sys.path:  # run as a script: the benchmarks package lies beside scripts/
        sys.path.insert(0, str(ROOT))
    start = time.monotonic()
    out = (args.out or Path(tempfile.mkdtemp(prefix="explaunch-gpu-check-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"gpu_check: writing to {out}", flush=True)
    torch_info = probe_torch()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = report_title(date, inventory, torch_info, _commit())
    print(title, flush=True)
    checks = inventory_checks(inventory, torch_info)
    raw: dict[str, Any] = {"date": date, "inventory": asdict(inventory), "torch": torch_info, "jobs": {}}

    from benchmarks.b7_gpu_energy import GPU_JOB

    plan: list[tuple[str, tuple[str, ...], int, str | None]] = [
        (f"precision-{p}", (*GPU_JOB, f"hardware.mixed_precision={p}"), 1, p) for p in PRECISIONS
    ]
    if len(inventory.gpus) >= 2:
        plan.append(("ddp-2-gpus", (*GPU_JOB, *DDP), 2, None))
    torch_ok = bool(torch_info.get("available")) and int(torch_info.get("devices") or 0) > 0
    for name, overrides, gpus, precision in plan:
        left = args.budget_s - (time.monotonic() - start)
        if not torch_ok or left < 60:
            why = "torch does not see CUDA" if not torch_ok else f"the budget of {args.budget_s:.0f} s is spent"
            checks.append(Check(f"{name}: job completed", f"not run: {why}", False))
            continue
        timeout = min(JOB_TIMEOUT_S, left)
        print(f"[{name}] python main.py {' '.join(overrides)} (limit {timeout:.0f} s)", flush=True)
        outcome = run_job(name, overrides, out, timeout)
        compare_counter_and_samples(outcome)
        job_checks = outcome_checks(outcome, gpus, precision)
        failed = [c.name for c in job_checks if c.ok is False]
        print(f"  {outcome.wall_s:.0f} s; " + (f"failed: {', '.join(failed)}" if failed else "checks ok"), flush=True)
        checks += job_checks
        raw["jobs"][name] = {k: v for k, v in asdict(outcome).items() if k != "job_dir"} | {
            "job_dir": str(outcome.job_dir)
        }

    left = args.budget_s - (time.monotonic() - start)
    if torch_ok and left >= 60 * args.b7_repeats:
        print(f"[B7] {args.b7_repeats} job(s)", flush=True)
        b7_checks, raw["b7"] = run_b7(out, args.b7_repeats, min(JOB_TIMEOUT_S, left / args.b7_repeats))
        checks += b7_checks
    else:
        why = "torch does not see CUDA" if not torch_ok else f"the budget of {args.budget_s:.0f} s is spent"
        checks.append(Check("B7: GPU energy, sampled vs counter", f"not run: {why}", False))

    code = verdict(checks)
    raw["checks"] = [asdict(c) for c in checks]
    raw["passed"] = code == EXIT_OK
    raw["wall_s"] = time.monotonic() - start
    report = f"{title}\n\n{markdown_table(checks)}\n"
    (out / "gpu-check.md").write_text(report)
    (out / "gpu-check.json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
    failed = [c.name for c in checks if c.ok is False]
    held = sum(c.ok is not None for c in checks)
    print(f"\n{report}")
    print(f"{held - len(failed)} of {held} checks passed, {raw['wall_s']:.0f} s; {out}/gpu-check.md, gpu-check.json")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
