"""A job's resource efficiency (explaunch.job.efficiency): the share of its allocated CPU time it used, and its GPUs'
mean utilisation."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from explaunch.job import efficiency


def test_cpu_efficiency_is_cpu_seconds_over_wall_seconds_times_cpus() -> None:
    assert efficiency.cpu_efficiency(3.0, 2.0, 2.0) == pytest.approx(0.75)  # 3 CPU s of 2 s x 2 CPUs
    assert efficiency.cpu_efficiency(0.5, 10.0, 0.5) == pytest.approx(0.1)  # half a core's share, a tenth used
    assert efficiency.cpu_efficiency(5.0, 2.0, 1.0) == 1.0  # more than its share (idle workers beside it)
    assert efficiency.cpu_efficiency(1.0, 0.0, 1.0) is None
    assert efficiency.cpu_efficiency(1.0, 1.0, 0.0) is None


def test_allocated_cpus_are_the_affinity_at_most_slurms_and_shared_by_joblibs_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert efficiency.allocated_cpus(None, {}) == (8.0, "8 cores of the process's affinity")
    assert efficiency.allocated_cpus(None, {"SLURM_CPUS_PER_TASK": "4"}) == (4.0, "SLURM_CPUS_PER_TASK=4")
    joblib = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}
    cpus, basis = efficiency.allocated_cpus(joblib, {"SLURM_CPUS_PER_TASK": "4"})
    assert (cpus, basis) == (2.0, "SLURM_CPUS_PER_TASK=4, shared by 2 joblib workers")
    assert efficiency.allocated_cpus({**joblib, "n_jobs": 1}, {})[0] == 8.0  # one worker: the jobs run in the parent
    basic = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
    assert efficiency.allocated_cpus(basic, {})[0] == 8.0


def test_the_gpu_efficiency_is_the_mean_utilisation_of_the_jobs_own_gpus() -> None:
    mean = {"gpu0_util_percent": 50.0, "gpu1_util_percent": 90.0, "gpu0_memory_percent": 99.0, "cpu_percent": 80.0}
    assert efficiency.gpu_efficiency(mean, [1]) == pytest.approx(0.9)
    assert efficiency.gpu_efficiency(mean, None) == pytest.approx(0.7)  # every GPU sampled
    assert efficiency.gpu_efficiency(mean, [3]) is None  # not sampled
    assert efficiency.gpu_efficiency({"cpu_percent": 80.0}, None) is None  # no GPU at all


def test_a_jobs_gpus_are_named_by_their_nvml_index() -> None:
    assert efficiency.job_gpu_indices("cpu", [0], None) == []
    assert efficiency.job_gpu_indices("auto", [], None) is None  # all the sampler sees
    assert efficiency.job_gpu_indices("cuda", [1], None) == [1]
    assert efficiency.job_gpu_indices("cuda", [1], "2,3") == [3]
    assert efficiency.job_gpu_indices("auto", [], "2,3") == [2, 3]
    assert efficiency.job_gpu_indices("cuda", [], "GPU-1234abcd") is None  # by UUID: not known here


def test_measure_gives_metrics_and_the_figures_they_come_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    found = efficiency.measure(6.0, 3.0, None, {"gpu0_util_percent": 40.0}, [0])
    assert found.metrics() == {"cpu_efficiency": pytest.approx(0.5), "gpu_efficiency": pytest.approx(0.4)}
    assert found.to_dict() == {
        "cpu_seconds": 6.0,
        "wall_s": 3.0,
        "cpus_allocated": 4.0,
        "cpus_basis": "4 cores of the process's affinity",
        "cpu_efficiency": pytest.approx(0.5),
        "gpu_efficiency": pytest.approx(0.4),
    }
    assert efficiency.measure(6.0, 3.0, None, None, [0]).metrics() == {"cpu_efficiency": pytest.approx(0.5)}
    assert "gpu_efficiency" not in efficiency.measure(1.0, 3.0, None, {"gpu0_util_percent": 40.0}, []).metrics()


def test_the_process_tree_counts_a_childs_cpu_time_and_leaves_a_helper_out() -> None:
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
    before = efficiency.tree_cpu_seconds()
    subprocess.run([sys.executable, "-c", busy], check=True)  # reaped: its time moves into ours
    assert efficiency.tree_cpu_seconds() - before >= 0.39  # clock ticks of 10 ms
    helper = subprocess.Popen([sys.executable, "-c", busy + "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        efficiency.helper_pids.add(helper.pid)
        start = efficiency.tree_cpu_seconds()
        import psutil

        deadline = time.monotonic() + 30
        while sum(psutil.Process(helper.pid).cpu_times()[:2]) < 0.39 and time.monotonic() < deadline:
            time.sleep(0.05)  # the helper works beside us; we wait idle
        assert efficiency.tree_cpu_seconds() - start < 0.2  # our own waiting only, not the helper's 0.4 s
        without = efficiency.tree_cpu_seconds()  # read first: our own time between the reads only adds below
        assert efficiency.tree_cpu_seconds(exclude=set()) - without >= 0.38  # 0.4 s less two 10 ms ticks
    finally:
        efficiency.helper_pids.discard(helper.pid)
        assert helper.stdin is not None
        helper.stdin.close()
        helper.wait()
