"""``sharding=ddp``: the LLM job as ``sharding.num_processes`` processes, data-parallel.

The job's process starts N processes (torch.multiprocessing, spawn) that join one torch.distributed process group
(gloo on CPU, NCCL on GPUs; rank r on ``hardware.gpu_ids[r]``). Each builds the same model (same seed), takes every
N-th prompt, warms up, and all start the timed region together; each writes its result to ``ranks/rank-<r>.json``.
The job then aggregates: tokens summed, throughput = all tokens / the slowest process's time, memory as the largest
process (and the sum), energy as the sum of each process's CPU and GPU share with RAM counted once (codecarbon
models the machine's RAM, so summing it would count it N times).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from explaunch.config import ExplaunchConfig
from explaunch.experiments.base import ExperimentResult
from explaunch.seeding import seed_everything

RANKS_DIR = "ranks"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rank_main(rank: int, world: int, port: int, config: ExplaunchConfig, job_dir: str) -> None:
    """One process of the group (the target of torch.multiprocessing; importable, so that spawn finds it)."""
    from explaunch.experiments.llm_inference import measure, resolve_device

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ["LOCAL_RANK"] = str(rank)
    device = resolve_device(config.hardware, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    try:
        cores = len(os.sched_getaffinity(0))
        torch.set_num_threads(config.hardware.num_threads or max(1, cores // world))
        seed_everything(config.seed, deterministic=config.deterministic)
        result = measure(config, device, rank=rank, world=world)
        tokens = torch.tensor([result.metrics["output_tokens"]], dtype=torch.float64)
        dist.all_reduce(tokens)  # every process learns the group's total: a check that the group really formed
        info = {**result.info, "rank": rank, "pid": os.getpid(), "group_output_tokens": float(tokens.item())}
        path = Path(job_dir) / RANKS_DIR / f"rank-{rank}.json"
        path.write_text(json.dumps({"metrics": result.metrics, "info": info}, default=str))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_sharded(config: ExplaunchConfig, job_dir: Path) -> ExperimentResult:
    world = config.sharding.num_processes
    (job_dir / RANKS_DIR).mkdir(parents=True, exist_ok=True)
    torch.multiprocessing.start_processes(  # type: ignore[attr-defined,no-untyped-call]
        rank_main, args=(world, _free_port(), config, str(job_dir)), nprocs=world, join=True, start_method="spawn"
    )
    ranks = [json.loads((job_dir / RANKS_DIR / f"rank-{r}.json").read_text()) for r in range(world)]
    return aggregate(ranks)


def aggregate(ranks: list[dict[str, Any]]) -> ExperimentResult:
    metrics = [r["metrics"] for r in ranks]

    def total(name: str) -> float:
        return float(sum(m.get(name, 0.0) for m in metrics))

    slowest = max(m["generate_time_s"] for m in metrics)
    out: dict[str, float] = {
        "num_processes": float(len(ranks)),
        "num_batches": total("num_batches"),
        "input_tokens": total("input_tokens"),
        "output_tokens": total("output_tokens"),
        "generate_time_s": slowest,
        "throughput_tokens_per_s": total("output_tokens") / slowest,
        "throughput_total_tokens_per_s": (total("input_tokens") + total("output_tokens")) / slowest,
        "model_parameters": metrics[0]["model_parameters"],
        "memory_peak_rss_mb": max(m["memory_peak_rss_mb"] for m in metrics),
        "memory_peak_rss_total_mb": total("memory_peak_rss_mb"),
    }
    for name in ("latency_batch_p50_s", "latency_batch_p95_s", "ttft_p50_s", "ttft_p95_s"):
        out[name] = max(m[name] for m in metrics)  # the slowest process sets what a user waits for
    for name in ("flops", "flops_analytical"):
        if all(name in m for m in metrics):
            out[name] = total(name)
    if "flops" in out:
        out["flops_per_output_token"] = out["flops"] / out["output_tokens"]
    if all("energy_kwh" in m for m in metrics):
        cpu, gpu = total("energy_cpu_kwh"), total("energy_gpu_kwh")
        ram = max(m["energy_ram_kwh"] for m in metrics)
        out.update(energy_cpu_kwh=cpu, energy_gpu_kwh=gpu, energy_ram_kwh=ram, energy_kwh=cpu + gpu + ram)
        out["energy_joules"] = out["energy_kwh"] * 3.6e6
        out["energy_emissions_kg"] = total("energy_emissions_kg")
        if out["energy_joules"] > 0:
            out["tokens_per_joule"] = out["output_tokens"] / out["energy_joules"]
    processes = [
        {
            "rank": r["info"]["rank"],
            "pid": r["info"]["pid"],
            "device": r["info"]["device"],
            "output_tokens": r["metrics"]["output_tokens"],
            "generate_time_s": r["metrics"]["generate_time_s"],
            "throughput_tokens_per_s": r["metrics"]["throughput_tokens_per_s"],
            "memory_peak_rss_mb": r["metrics"]["memory_peak_rss_mb"],
            "energy_joules": r["metrics"].get("energy_joules"),
            "group_output_tokens": r["info"]["group_output_tokens"],
        }
        for r in ranks
    ]
    info = {
        "sharding": "ddp (data parallel): every N-th prompt per process",
        "processes": processes,
        "energy_method": "sum of each process's CPU and GPU energy (codecarbon process mode), RAM counted once",
        "device": ranks[0]["info"]["device"],
        "dtype": ranks[0]["info"]["dtype"],
        "weights": ranks[0]["info"]["weights"],
        "flops_method": ranks[0]["info"]["flops_method"],
    }
    return ExperimentResult(metrics=out, info=info)
