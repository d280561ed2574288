"""``sharding=ddp`` / ``sharding=fsdp``: the LLM job as ``sharding.num_processes`` processes in one group.

The processes join one torch.distributed process group (gloo on CPU, NCCL on GPUs; local rank r on
``hardware.gpu_ids[r]``). They start in one of two ways (``sharding.launch``):

* ``spawn``: the job's process starts them (``python -m explaunch.experiments.sharded``) on its own machine;
* ``slurm_tasks``: they are the tasks of the job's SLURM job (``tasks_per_node = num_processes``, one ``srun``
  step): task 0 runs the Hydra job (recording, MLflow), the other tasks run :func:`task_worker` only. Rank, world
  size and local rank come from SLURM's variables (through submitit); rank 0 writes the rendezvous address into
  the job folder, which all tasks share. ``auto`` takes this path when the job runs with ``num_processes`` tasks.

ddp: each process builds the same model (same seed). fsdp: the same, then FSDP2 ``fully_shard`` per decoder layer
and on the whole model, so each process keeps 1/N of the weights (``cpu_offload``: in host memory) and gathers a
layer's weights for each forward; every process must run the same number of forwards, so prompts are cut to a
multiple of N and lengths are fixed. Each process takes every N-th prompt, warms up, and all start the timed region
together and stop after the same number of calls; each writes its result to ``ranks/rank-<r>.json``. The job then
aggregates: tokens summed, throughput = all tokens / the slowest process's time, memory as the largest process (and
the sum), energy by :func:`sum_rank_energy` (each rank measures only its own GPU; a device is never counted twice).
"""

from __future__ import annotations

import datetime
import json
import os
import pickle
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from explaunch.config import ExplaunchConfig
from explaunch.experiments.base import ExperimentResult
from explaunch.job.seeding import seed_everything

RANKS_DIR = "ranks"
STRATEGY_NOTES = {
    "ddp": "ddp (data parallel): whole model and every N-th prompt per process",
    "fsdp": "fsdp (FSDP2 fully_shard per decoder layer): 1/N of the weights and every N-th prompt per process",
}


@dataclass(frozen=True)
class TaskGroup:
    """This process's place in a job that runs as several scheduler tasks (SLURM, or submitit's local executor)."""

    scheduler: str  # "slurm" or "local" (submitit's executor)
    job_id: str
    rank: int
    local_rank: int
    world: int
    num_nodes: int


def task_group(world: int) -> TaskGroup | None:
    """The group of tasks this process belongs to, when it runs as one of ``world`` tasks of a submitit job."""
    try:
        import submitit

        env = submitit.JobEnvironment()
    except (ImportError, RuntimeError):  # not inside a submitit job
        return None
    if env.num_tasks != world:
        return None
    return TaskGroup(
        scheduler=env.name(),
        job_id=str(env.raw_job_id),
        rank=env.global_rank,
        local_rank=env.local_rank,
        world=env.num_tasks,
        num_nodes=env.num_nodes,
    )


def uses_tasks(config: ExplaunchConfig) -> TaskGroup | None:
    """The task group when this job's processes are its scheduler tasks; None when the job spawns them."""
    sharding = config.sharding
    if sharding.strategy == "none" or sharding.launch == "spawn":
        return None
    group = task_group(sharding.num_processes)
    if group is None and sharding.launch == "slurm_tasks":
        raise RuntimeError(
            f"sharding.launch=slurm_tasks: this job does not run as {sharding.num_processes} tasks of a SLURM job "
            f"(hydra/launcher=submitit_slurm sets tasks_per_node=sharding.num_processes); use launch=auto or spawn"
        )
    return group


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def _rendezvous_file(job_dir: Path, group: TaskGroup) -> Path:
    return job_dir / RANKS_DIR / f"rendezvous-{group.job_id}.json"


def _publish_rendezvous(job_dir: Path, group: TaskGroup) -> tuple[str, int]:
    addr = "127.0.0.1" if group.num_nodes == 1 else socket.gethostname()
    port = _free_port()
    path = _rendezvous_file(job_dir, group)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"addr": addr, "port": port}))
    tmp.replace(path)
    return addr, port


def _await_rendezvous(job_dir: Path, group: TaskGroup, timeout_s: float) -> tuple[str, int]:
    path = _rendezvous_file(job_dir, group)
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {group.rank}: rank 0 did not publish {path} within {timeout_s:g} s")
        time.sleep(0.2)
    data = json.loads(path.read_text())
    return str(data["addr"]), int(data["port"])


def shard_fsdp(model: Any, config: ExplaunchConfig, device: torch.device) -> Any:
    """FSDP2: one shard unit per decoder layer and one for the rest; this process keeps 1/N of every weight."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    options: dict[str, Any] = {"mesh": mesh}
    if config.sharding.cpu_offload:  # pinned host memory needs CUDA; on a CPU-only job the shards are in RAM anyway
        options["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    for layer in model.model.layers:
        fully_shard(layer, **options)
    fully_shard(model, reshard_after_forward=True, **options)  # inference: free the gathered root weights too
    return model


def local_parameters(model: Any) -> float:
    """Parameters this process holds (its shards under FSDP, everything otherwise)."""
    return float(sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters()))


def rank_main(
    rank: int, world: int, addr: str, port: int, config: ExplaunchConfig, job_dir: str, local_rank: int = -1
) -> None:
    """One process of the group (the target of torch.multiprocessing; importable, so that spawn finds it)."""
    from explaunch.experiments.llm_inference import measure, resolve_device

    local_rank = rank if local_rank < 0 else local_rank
    os.environ.update(MASTER_ADDR=addr, MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ["LOCAL_RANK"] = str(local_rank)
    device = resolve_device(config.hardware, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=config.sharding.init_timeout_s)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world, timeout=timeout)
    try:
        cores = len(os.sched_getaffinity(0))
        spawned = os.environ.get("EXPLAUNCH_SPAWNED") == "1"  # spawned processes share the job's CPUs
        torch.set_num_threads(config.hardware.num_threads or max(1, cores // world if spawned else cores))
        seed_everything(config.seed, deterministic=config.deterministic)
        outputs = None
        if config.experiment_type.save_outputs:
            outputs = Path(job_dir) / RANKS_DIR / f"outputs-rank-{rank}.jsonl"
        result = measure(config, device, rank=rank, world=world, outputs=outputs)
        # NCCL reduces tensors on the GPU only
        tokens = torch.tensor([result.metrics["output_tokens"]], dtype=torch.float64, device=device)
        dist.all_reduce(tokens)  # every process learns the group's total: a check that the group really formed
        info = {
            **result.info,
            "rank": rank,
            "local_rank": local_rank,
            "backend": dist.get_backend(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "group_output_tokens": float(tokens.item()),
        }
        path = Path(job_dir) / RANKS_DIR / f"rank-{rank}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"metrics": result.metrics, "info": info}, default=str))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn_processes(config: ExplaunchConfig, job_dir: Path, world: int) -> None:
    """Start the ``world`` processes as ``python -m explaunch.experiments.sharded`` and wait for them. Plain
    subprocesses, not multiprocessing: a job may itself run in a joblib (loky) worker, whose start method its
    multiprocessing children cannot inherit. Each process's output goes to ``ranks/rank-<r>.log``; when one
    fails, the others are stopped and the error quotes the end of its log."""
    ranks = job_dir / RANKS_DIR
    config_file = ranks / "config.pickle"
    config_file.write_bytes(pickle.dumps(config))
    port = _free_port()
    env = {**os.environ, "EXPLAUNCH_SPAWNED": "1"}
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for rank in range(world):
            log_path = ranks / f"rank-{rank}.log"
            with log_path.open("wb") as out:
                cmd = [sys.executable, "-m", "explaunch.experiments.sharded", str(rank), str(world), str(port)]
                proc = subprocess.Popen(
                    [*cmd, str(config_file), str(job_dir)], stdout=out, stderr=subprocess.STDOUT, env=env
                )
            procs.append((proc, log_path))
        while True:
            codes = [proc.poll() for proc, _ in procs]
            failed = [(r, code) for r, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                rank, code = failed[0]
                tail = procs[rank][1].read_text(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"process {rank} of {world} exited with code {code}: " + " | ".join(tail))
            if all(code == 0 for code in codes):
                return
            time.sleep(0.1)
    finally:
        for proc, _ in procs:  # on failure, timeout or Ctrl-C of the job: no process is left behind
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def task_worker(config: ExplaunchConfig, job_dir: Path, group: TaskGroup) -> None:
    """What a task other than 0 of a multi-task job runs: its process of the group, nothing else (task 0 records)."""
    addr, port = _await_rendezvous(job_dir, group, config.sharding.init_timeout_s)
    rank_main(group.rank, group.world, addr, port, config, str(job_dir), group.local_rank)


def run_sharded(config: ExplaunchConfig, job_dir: Path) -> ExperimentResult:
    world = config.sharding.num_processes
    (job_dir / RANKS_DIR).mkdir(parents=True, exist_ok=True)
    for stale in (job_dir / RANKS_DIR).glob("rank-*.json"):  # a requeued or resumed attempt starts clean
        stale.unlink()
    group = uses_tasks(config)
    if group is None:
        spawn_processes(config, job_dir, world)
        launch = "spawn"
    else:  # this is task 0; the other tasks are already waiting for the address
        addr, port = _publish_rendezvous(job_dir, group)
        rank_main(0, world, addr, port, config, str(job_dir), group.local_rank)
        launch = f"tasks of {group.scheduler} job {group.job_id} ({group.num_nodes} node(s))"
    ranks = [json.loads((job_dir / RANKS_DIR / f"rank-{r}.json").read_text()) for r in range(world)]
    result = aggregate(ranks, config.sharding.strategy)
    result.info["launch"] = launch
    return result


def aggregate(ranks: list[dict[str, Any]], strategy: str = "ddp") -> ExperimentResult:
    metrics = [r["metrics"] for r in ranks]

    def total(name: str) -> float:
        return float(sum(m.get(name, 0.0) for m in metrics))

    slowest = max(m["generate_time_s"] for m in metrics)
    out: dict[str, float] = {
        "num_processes": float(len(ranks)),
        "model_parameters": metrics[0]["model_parameters"],
        "model_parameters_per_process_max": max(
            m.get("model_parameters_local", m["model_parameters"]) for m in metrics
        ),
        "memory_peak_rss_mib": max(m["memory_peak_rss_mib"] for m in metrics),
        "memory_peak_rss_total_mib": total("memory_peak_rss_mib"),
        "generate_time_s": slowest,
    }
    for name in ("num_batches", "queries", "input_tokens", "output_tokens", "window_iterations", "window_queries"):
        out[name] = total(name)
    out["window_input_tokens"], out["window_output_tokens"] = (
        total("window_input_tokens"),
        total("window_output_tokens"),
    )
    out["throughput_e2e_tokens_per_s"] = out["window_output_tokens"] / slowest
    out["throughput_total_tokens_per_s"] = (out["window_input_tokens"] + out["window_output_tokens"]) / slowest
    if all("throughput_decode_tokens_per_s" in m for m in metrics):
        slowest_decode = max(m["decode_time_s"] for m in metrics)
        out["throughput_decode_tokens_per_s"] = (out["window_output_tokens"] - out["window_queries"]) / slowest_decode
    if all("memory_cuda_max_allocated_mib" in m for m in metrics):
        out["memory_cuda_max_allocated_mib"] = max(m["memory_cuda_max_allocated_mib"] for m in metrics)
    for name in ("latency_batch_p50_s", "latency_batch_p95_s", "ttft_p50_s", "ttft_p95_s"):
        out[name] = max(m[name] for m in metrics)  # the slowest process sets what a user waits for
    for name in ("flops", "flops_analytical"):
        if all(name in m for m in metrics):
            out[name] = total(name)
    if "flops" in out:
        out["flops_per_output_token"] = out["flops"] / out["output_tokens"]
    energy = [r["info"].get("energy") or {} for r in ranks]
    energy_info: dict[str, Any] = {}
    if all("components" in e for e in energy):
        energy_info = sum_rank_energy(energy)
        joules = energy_info["joules"]
        out.update(
            energy_joules=joules,
            energy_kwh=joules / 3.6e6,
            energy_window_s=max(e["window_s"] for e in energy),
            energy_emissions_kg=total("energy_emissions_kg"),
            energy_iterations=total("energy_iterations"),
        )
        for name in ("cpu", "gpu", "ram"):
            out[f"energy_{name}_joules"] = energy_info["components"].get(name, {}).get("joules", 0.0)
        if joules > 0:
            out["energy_per_output_token_j"] = joules / out["window_output_tokens"]
            out["energy_per_query_j"] = joules / out["window_queries"]
            out["queries_per_kwh"] = out["window_queries"] / (joules / 3.6e6)
            out["tokens_per_joule"] = out["window_output_tokens"] / joules
    processes = [
        {
            "rank": r["info"]["rank"],
            "pid": r["info"]["pid"],
            "device": r["info"]["device"],
            "host": r["info"].get("host"),
            "model_parameters_local": r["metrics"].get("model_parameters_local"),
            "output_sha256": r["info"].get("output_sha256"),
            "output_tokens": r["metrics"]["output_tokens"],
            "generate_time_s": r["metrics"]["generate_time_s"],
            "throughput_e2e_tokens_per_s": r["metrics"]["throughput_e2e_tokens_per_s"],
            "memory_peak_rss_mib": r["metrics"]["memory_peak_rss_mib"],
            "energy_joules": r["metrics"].get("energy_joules"),
            "group_output_tokens": r["info"]["group_output_tokens"],
        }
        for r in ranks
    ]
    info: dict[str, Any] = {
        "sharding": STRATEGY_NOTES[strategy],
        "processes": processes,
        "device": ranks[0]["info"]["device"],
        "backend": ranks[0]["info"].get("backend"),
        "dtype": ranks[0]["info"]["dtype"],
        "weights": ranks[0]["info"]["weights"],
        "flops_method": ranks[0]["info"]["flops_method"],
    }
    if energy_info:
        info["energy"] = energy_info
    return ExperimentResult(metrics=out, info=info)


def sum_rank_energy(readings: list[dict[str, Any]]) -> dict[str, Any]:
    """One job's energy from its processes' windows. GPUs: each device once (the sum over distinct UUIDs; two
    ranks on one device read the same counter, so it is taken once, at its largest). Counted CPU/RAM
    (``apportioned``, ``process``-scoped counters) are the processes' own shares: summed. Machine-scoped figures and
    codecarbon's modelled RAM (a per-process constant of about 10 W whatever the process) are taken once."""
    components: dict[str, dict[str, Any]] = {}
    names = sorted({name for r in readings for name in r["components"]})
    for name in names:
        parts = [r["components"][name] for r in readings if name in r["components"]]
        merged = dict(parts[0])
        merged["reads"] = sum(int(p.get("reads", p.get("samples", 0)) or 0) for p in parts)
        if name == "gpu":
            devices: dict[str, float] = {}
            for part in parts:
                for uuid, joules in (part.get("devices") or {}).items():
                    devices[uuid] = max(devices.get(uuid, 0.0), float(joules))
            merged["devices"] = devices
            merged["joules"] = sum(devices.values())
        elif merged["scope"] == "machine" or (name == "ram" and merged["source"] == "modelled"):
            merged["joules"] = max(float(p["joules"]) for p in parts)
            merged["aggregation"] = "taken once (the largest process's figure): it is not the process's own"
        else:
            merged["joules"] = sum(float(p["joules"]) for p in parts)
            if merged.get("machine_joules") is not None:
                merged["machine_joules"] = max(float(p.get("machine_joules") or 0.0) for p in parts)
                merged["share"] = merged["joules"] / merged["machine_joules"] if merged["machine_joules"] else None
            merged["aggregation"] = "summed over the processes"
        components[name] = merged
    # the generate window's own quality: the job's figures come from it alone (the prefill window's are not summed)
    own = [r.get("quality_by_window", {}).get("generate", r) for r in readings]
    reasons = sorted({reason for r in own for reason in r.get("quality_reasons", [])})
    return {
        "joules": sum(c["joules"] for c in components.values()),
        "window_s": max(r["window_s"] for r in readings),
        "components": components,
        "quality": "low" if reasons else "ok",
        "quality_reasons": reasons,
        "processes": len(readings),
    }


def _main(argv: list[str]) -> None:
    """``python -m explaunch.experiments.sharded RANK WORLD PORT CONFIG_PICKLE JOB_DIR``: one spawned process."""
    rank, world, port, config_file, job_dir = argv
    config = pickle.loads(Path(config_file).read_bytes())
    rank_main(int(rank), int(world), "127.0.0.1", int(port), config, job_dir)


if __name__ == "__main__":
    _main(sys.argv[1:])
