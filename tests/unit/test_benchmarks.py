"""The benchmark suite's own logic: statistics, targets, the table, the verdict and the command line. No timing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import __main__ as suite
from benchmarks import b2_joblib_efficiency, b4_resume, b7_gpu_energy, b8_repeatability, b10_status_detach
from benchmarks.harness import (
    ERROR,
    INFO,
    MET,
    MISSED,
    SKIPPED,
    BenchResult,
    Context,
    Row,
    Spread,
    Target,
    abba_ratios,
    errored,
    exit_code,
    failures,
    format_markdown,
    format_rows,
    paired_ratios,
    skipped,
    write_result,
)


def test_spread_gives_median_extremes_and_quartiles() -> None:
    spread = Spread.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (spread.n, spread.median, spread.min, spread.max) == (5, 3.0, 1.0, 5.0)
    assert (spread.q1, spread.q3) == (2.0, 4.0)


def test_spread_of_fewer_than_four_values_uses_the_extremes_as_quartiles() -> None:
    spread = Spread.of([2.0, 1.0])
    assert (spread.median, spread.q1, spread.q3) == (1.5, 1.0, 2.0)
    with pytest.raises(ValueError, match="no measurements"):
        Spread.of([])


def test_paired_ratios_divide_side_by_side_repeats() -> None:
    assert paired_ratios([2.0, 3.0], [1.0, 2.0]) == [2.0, 1.5]
    with pytest.raises(ValueError):
        paired_ratios([1.0], [1.0, 2.0])


def test_abba_ratios_cancel_a_linear_drift_that_pair_ratios_keep() -> None:
    """Two equal variants timed A B B A A B B A while every repeat takes 1% longer than the one before."""
    order = ["a", "b", "b", "a", "a", "b", "b", "a", "a"]  # and a last, unpaired repeat of a
    times: dict[str, list[float]] = {"a": [], "b": []}
    for place, variant in enumerate(order):
        times[variant].append(1.0 + 0.01 * place)
    times["b"].append(99.0)  # the last pair, cut short, is left out
    assert [round(r, 4) for r in paired_ratios(times["a"], times["b"])][:4] == [0.9901, 1.0098, 0.9905, 1.0094]
    assert abba_ratios(times["a"], times["b"]) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="side by side"):
        abba_ratios([1.0], [1.0, 2.0])


def test_targets_hold_on_the_bound_and_say_how_far_a_miss_is() -> None:
    at_most = Target("<=", 1.3)
    assert at_most.met(1.3) and not at_most.met(1.31)
    assert at_most.miss(1.5) == pytest.approx(0.2)
    assert at_most.miss(1.0) == 0.0
    at_least = Target(">=", 85.0)
    assert at_least.met(85.0) and not at_least.met(84.0)
    with pytest.raises(ValueError, match="allowed"):
        Target("<", 1.0)


def test_row_status_follows_target_and_overrides() -> None:
    assert Row("B1", "ratio", 1.2, "x", Target("<=", 1.3)).status == MET
    assert Row("B1", "ratio", 1.4, "x", Target("<=", 1.3)).status == MISSED
    assert Row("B2", "whole process", 50.0, "%").status == INFO
    assert skipped("B7", "gpu", "no NVIDIA GPU (NVML not available)").status == SKIPPED
    assert errored("B3", "llm", "boom").status == ERROR


def test_exit_code_fails_on_a_miss_or_an_error_but_not_on_skipped_or_info_rows() -> None:
    ok = [
        Row("B1", "ratio", 1.1, "x", Target("<=", 1.3)),
        Row("B2", "whole process", 10.0, "%"),
        skipped("B7", "gpu", "no NVIDIA GPU (NVML not available)"),
    ]
    assert exit_code(ok) == 0 and failures(ok) == []
    assert exit_code([*ok, errored("B3", "llm", "RuntimeError: x")]) == 1
    missed = [*ok, Row("B2", "efficiency", 17.2, "%", Target(">=", 85.0))]
    assert exit_code(missed) == 1
    assert failures(missed) == ["B2 efficiency: 17.2% misses the target >= 85.0% by 67.8%, 80% off"]


def test_table_shows_value_spread_target_and_status_per_row() -> None:
    rows = [
        Row("B1", "32 no-op jobs", 2.35, "x", Target("<=", 1.3), 2.1, 2.6, detail="15.8 s vs 6.7 s"),
        Row("B4", "re-run", 0.0, "jobs", Target("<=", 0.0)),
        skipped("B7", "GPU energy", "no NVIDIA GPU (NVML not available)"),
    ]
    lines = format_rows(rows).splitlines()
    assert lines[0].split() == ["id", "what", "value", "spread", "target", "status", "detail"]
    assert "2.35x" in lines[1] and "2.10x .. 2.60x" in lines[1] and "<= 1.30x" in lines[1] and MISSED in lines[1]
    assert "0 jobs" in lines[2] and MET in lines[2]
    assert "skipped: no NVIDIA GPU (NVML not available)" in lines[3]
    markdown = format_markdown(rows).splitlines()
    assert markdown[0] == "| id | what | value | spread | target | status | detail |"
    assert len(markdown) == 2 + len(rows)


def test_result_file_holds_machine_rows_raw_timings_and_verdict(tmp_path: Path) -> None:
    result = BenchResult(
        "B1",
        "sweep",
        [Row("B1", "ratio", 1.5, "x", Target("<=", 1.3))],
        raw={"wall_s": {"explaunch": [3.0], "plain_hydra": [2.0]}},
        stats={"explaunch": Spread.of([3.0])},
    )
    path = write_result(result, {"cpu_model": "test CPU", "cpu_count": 2}, tmp_path)
    data = json.loads(path.read_text())
    assert path.name == "B1.json"
    assert data["machine"]["cpu_model"] == "test CPU"
    assert data["raw"]["wall_s"]["explaunch"] == [3.0]
    assert data["rows"][0]["status"] == MISSED and data["met"] is False
    assert data["stats"]["explaunch"]["median"] == 3.0


def test_context_repeats_default_quick_and_forced() -> None:
    assert Context(Path()).n(9) == 9
    assert Context(Path(), quick=True).n(9) == 3
    assert Context(Path(), quick=True).n(2) == 1
    assert Context(Path(), repeats=4, quick=True).n(9) == 4


def test_only_picks_benchmarks_and_rejects_unknown_ids() -> None:
    assert suite.parse_only(None) == ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8"]
    assert suite.parse_only("b3, B1") == ["B3", "B1"]
    with pytest.raises(SystemExit, match="no such benchmark B99; allowed: B1, B2"):
        suite.parse_only("B1,B99")


def test_a_benchmark_that_raises_becomes_an_error_row_and_a_failing_exit(tmp_path: Path) -> None:
    class Broken:
        ID = "B99"
        TITLE = "broken"

        @staticmethod
        def run(ctx: Context) -> BenchResult:
            raise RuntimeError("the sweep exited 1")

    result = suite.run_one(Broken, Context(tmp_path))  # type: ignore[arg-type]
    assert [row.status for row in result.rows] == [ERROR]
    assert "RuntimeError: the sweep exited 1" in result.rows[0].detail
    assert exit_code(result.rows) == 1


def test_suite_prints_one_table_and_exits_zero_when_the_only_benchmark_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(b7_gpu_energy, "nvml_unavailable", lambda: "no NVIDIA GPU (NVML not available)")
    assert suite.main(["--only", "B7", "--results-dir", str(tmp_path), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "skipped: no NVIDIA GPU (NVML not available)" in out
    assert "| B7 |" in out
    assert json.loads((tmp_path / "B7.json").read_text())["rows"][0]["status"] == SKIPPED


def test_job_phase_spans_first_start_to_last_end_of_the_records(tmp_path: Path) -> None:
    for number in range(b2_joblib_efficiency.JOBS):
        job = tmp_path / str(number)
        job.mkdir()
        start = f"2026-01-01T00:00:{number:02d}.000+00:00"
        end = f"2026-01-01T00:00:{number:02d}.500+00:00"
        record = {"status": "completed", "start_time": start, "end_time": end}
        (job / "job.json").write_text(json.dumps(record))
    assert b2_joblib_efficiency.record_phase_s(tmp_path) == pytest.approx(15.5)
    (tmp_path / "15" / "job.json").unlink()
    with pytest.raises(RuntimeError, match="15 of 16 job records"):
        b2_joblib_efficiency.record_phase_s(tmp_path)


def test_resume_summary_line_is_read_from_the_sweep_output() -> None:
    output = "progress...\nsweep /x: 0 completed, 0 not completed, 64 skipped (done before), 0 not run\n"
    assert b4_resume.summary_counts(output) == (0, 0, 64)
    with pytest.raises(RuntimeError, match="no summary line"):
        b4_resume.summary_counts("nothing here")


def test_sampled_gpu_energy_is_the_trapezoid_integral_of_every_gpu_power_column(tmp_path: Path) -> None:
    csv_path = tmp_path / "resources.csv"
    csv_path.write_text("elapsed_s,cpu_percent,gpu0_power_w,gpu1_power_w\n0,5,100,50\n1,5,200,50\n3,5,200,50\n")
    # gpu0: 150 J + 400 J, gpu1: 50 W for 3 s
    assert b7_gpu_energy.sampled_joules(csv_path) == pytest.approx(150 + 400 + 150)


def test_sampled_gpu_energy_counts_only_the_columns_of_the_jobs_gpus(tmp_path: Path) -> None:
    csv_path = tmp_path / "resources.csv"
    csv_path.write_text("elapsed_s,gpu0_power_w,gpu1_power_w\n0,70,300\n2,70,300\n")
    assert b7_gpu_energy.sampled_joules(csv_path, [1]) == pytest.approx(600)
    assert b7_gpu_energy.power_columns(["elapsed_s", "gpu0_power_w", "gpu0_util_percent"]) == ["gpu0_power_w"]
    with pytest.raises(RuntimeError, match="no column gpu3_power_w"):
        b7_gpu_energy.sampled_joules(csv_path, [3])


def test_b7_reads_the_whole_jobs_gpu_counter_from_the_record_or_the_flat_metric() -> None:
    record = {
        "energy": {
            "components": {"gpu": {"joules": 900.0, "source": "counter", "devices": {"GPU-a": 500.0, "GPU-b": 400.0}}}
        },
        "metrics": {"job_energy_gpu_joules": 1.0},
    }
    assert b7_gpu_energy.job_gpu_counter(record) == b7_gpu_energy.GpuCounter(900.0, "counter", ("GPU-a", "GPU-b"))
    flat = {"energy": {}, "metrics": {"job_energy_gpu_joules": 812.5}}
    assert b7_gpu_energy.job_gpu_counter(flat) == b7_gpu_energy.GpuCounter(812.5, "unknown", ())
    with pytest.raises(RuntimeError, match="no GPU energy"):
        b7_gpu_energy.job_gpu_counter({"energy": {"components": {"cpu": {"joules": 5.0}}}, "metrics": {}})


def test_coefficient_of_variation_is_the_sample_std_over_the_mean_in_percent() -> None:
    assert b8_repeatability.coefficient_of_variation([10.0, 10.0, 10.0]) == 0.0
    assert b8_repeatability.coefficient_of_variation([9.0, 10.0, 11.0]) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="at least 2 values"):
        b8_repeatability.coefficient_of_variation([10.0])
    with pytest.raises(ValueError, match="mean is 0"):
        b8_repeatability.coefficient_of_variation([1.0, -1.0])


def _repeat_record(job_num: int, tokens_per_s: float, status: str = "completed") -> dict[str, object]:
    return {
        "status": status,
        "job_num": job_num,
        "overrides": [f"+params.repeat={job_num}"],
        "duration_s": 14.0,
        "metrics": {
            "throughput_e2e_tokens_per_s": tokens_per_s,
            "throughput_decode_tokens_per_s": tokens_per_s * 1.2,
            "energy_per_output_token_j": 0.05 + 0.001 * job_num,
            "energy_window_s": 10.0 + 0.1 * job_num,
            "energy_iterations": 30,
            "energy_joules": 150.0,
            "output_tokens": 3000.0,
            "resources_mean_system_cpu_percent": 100.0 if job_num == 4 else 50.0,
            "resources_mean_cpu_percent": 100.0,
        },
        "info": {
            "device": "cpu",
            "output_sha256": "same",
            "energy": {"quality": "low" if job_num == 2 else "ok", "quality_reasons": ["cpu modelled"]},
        },
    }


def _write_sweep(sweep: Path, records: dict[str, dict[str, object]]) -> None:
    for folder, record in records.items():
        (sweep / folder).mkdir(parents=True)
        (sweep / folder / "job.json").write_text(json.dumps(record))


def test_other_load_is_the_machines_busy_cores_less_the_jobs_own() -> None:
    assert b8_repeatability.other_load_cores(100.0, 62.0, 2) == pytest.approx(1.38)
    assert b8_repeatability.other_load_cores(78.0, 166.0, 2) == 0.0  # the two means are not taken at the same instants
    assert b8_repeatability.other_load_cores(None, 50.0, 2) is None


def test_repeatability_reads_the_sweeps_records_in_job_order(tmp_path: Path) -> None:
    _write_sweep(tmp_path, {str(n): _repeat_record(n, 1000.0 + n) for n in (10, 2, 0, 1, 3)})
    records = b8_repeatability.read_records(tmp_path, 5)
    assert [r["job_num"] for r in records] == [0, 1, 2, 3, 10]


def test_repeatability_refuses_a_sweep_with_a_missing_or_failed_job(tmp_path: Path) -> None:
    _write_sweep(tmp_path, {str(n): _repeat_record(n, 1000.0, "failed" if n == 3 else "completed") for n in range(4)})
    with pytest.raises(RuntimeError, match=r"4 of 5 job records .*; not completed: 3: failed"):
        b8_repeatability.read_records(tmp_path, 5)


def test_repeatability_names_the_figure_an_older_record_lacks() -> None:
    old = {"job_num": 0, "metrics": {"throughput_tokens_per_s": 1000.0, "energy_joules": 1.0}}
    with pytest.raises(RuntimeError, match="job 0: no throughput_e2e_tokens_per_s, energy_per_output_token_j"):
        b8_repeatability.job_figures(old, cores=2)


def test_repeatability_rows_hold_tokens_per_s_cv_to_5_percent_and_report_energy_cv() -> None:
    steady = [
        b8_repeatability.job_figures(_repeat_record(n, tps), cores=2)
        for n, tps in enumerate([990, 1000, 1010, 995, 1005])
    ]
    summary = b8_repeatability.summarize_jobs(steady)
    assert summary["cv_throughput_e2e_percent"] == pytest.approx(0.79, abs=0.01)
    assert summary["same_outputs"] is True
    assert summary["energy_window_s"]["mean"] == pytest.approx(10.2)
    assert summary["low_quality"] == ["2: cpu modelled"]
    tps_row, energy_row, window_row = b8_repeatability.rows_of(summary, 5)
    assert (tps_row.status, energy_row.status, window_row.status) == (MET, INFO, INFO)
    assert tps_row.detail == (
        "mean 1000 tokens/s, 990 .. 1010; same tokens in every job; other processes kept up to 1.0 cores busy"
    )
    assert "quality low in 1" in energy_row.detail
    assert window_row.detail == "30.0 generate calls on average"
    noisy = [
        b8_repeatability.job_figures(_repeat_record(n, tps), cores=2)
        for n, tps in enumerate([800, 1000, 1200, 900, 1100])
    ]
    assert b8_repeatability.rows_of(b8_repeatability.summarize_jobs(noisy), 5)[0].status == MISSED


def test_b10_reads_the_job_id_sbatch_parsable_prints() -> None:
    assert b10_status_detach.submitted_job_id("4242\n") == "4242"
    assert b10_status_detach.submitted_job_id("4242;explaunch\n") == "4242"
    with pytest.raises(RuntimeError, match="not a job id"):
        b10_status_detach.submitted_job_id("sbatch: error: invalid partition\n")


def test_b10_without_slurm_skips_its_detach_rows_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(b10_status_detach, "slurm_unavailable", lambda: "sinfo fails: cannot reach slurmctld")
    rows, raw, stats = b10_status_detach.time_detach(Context(tmp_path), tmp_path)
    assert [row.status for row in rows] == [SKIPPED, SKIPPED]
    assert rows[0].detail == "skipped: no SLURM: sinfo fails: cannot reach slurmctld"
    assert rows[1].label == "100 jobs: detach returns / sbatch --array returns" and rows[1].value is None
    assert raw == {"slurm": "sinfo fails: cannot reach slurmctld"} and stats == {}


def test_b10_says_which_slurm_tools_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda tool: None if tool in ("sinfo", "sbatch") else tool)
    assert b10_status_detach.slurm_unavailable() == "no sinfo, sbatch on PATH (make slurm-up starts a local cluster)"
