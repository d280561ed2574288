"""hydra.sweeper.order: grid, shuffle (seeded, the seed drawn and returned when none), interleave (groups spread)."""

from __future__ import annotations

import random

import pytest

from explaunch.errors import ConfigError
from explaunch.launch.order import group_key, order_jobs


def itself(job: int) -> int:
    return job


def grid(models: str, batches: str, seeds: int) -> list[list[str]]:
    return [[f"model={m}", f"batch={b}", f"seed={s}"] for m in models for b in batches for s in range(seeds)]


def by_group(jobs: list[list[str]]) -> list[list[str]]:
    return order_jobs(jobs, "interleave", None, group_key)[0]


def test_grid_keeps_the_order_and_uses_no_seed() -> None:
    jobs = grid("ab", "8", 3)
    ordered, seed = order_jobs(jobs, "grid", 7, group_key)
    assert ordered == jobs and ordered is not jobs
    assert seed is None


def test_shuffle_with_a_seed_is_that_seed_s_permutation() -> None:
    jobs = list(range(20))
    ordered, seed = order_jobs(jobs, "shuffle", 42, itself)
    expected = list(range(20))
    random.Random(42).shuffle(expected)
    assert (ordered, seed) == (expected, 42)
    assert order_jobs(jobs, "shuffle", 42, itself)[0] == ordered
    assert jobs == list(range(20))  # the input is left alone


def test_shuffle_without_a_seed_draws_one_and_returns_it_so_that_it_can_be_repeated() -> None:
    jobs = list(range(50))
    ordered, seed = order_jobs(jobs, "shuffle", None, itself)
    assert isinstance(seed, int) and 0 <= seed < 2**31
    assert order_jobs(jobs, "shuffle", seed, itself) == (ordered, seed)
    assert sorted(ordered) == jobs


def test_interleave_is_a_round_robin_over_groups_of_one_size() -> None:
    jobs = grid("ab", "8", 3)
    assert [" ".join(j) for j in by_group(jobs)] == [
        "model=a batch=8 seed=0",
        "model=b batch=8 seed=0",
        "model=a batch=8 seed=1",
        "model=b batch=8 seed=1",
        "model=a batch=8 seed=2",
        "model=b batch=8 seed=2",
    ]


def test_interleave_spreads_each_group_of_a_different_size_over_the_whole_sweep() -> None:
    big = [["model=a", f"seed={s}"] for s in range(6)]
    small = [["model=b", f"seed={s}"] for s in range(2)]
    ordered = by_group(big + small)
    assert sorted(map(tuple, ordered)) == sorted(map(tuple, big + small))
    positions = [i for i, job in enumerate(ordered) if job[0] == "model=b"]
    assert positions[0] < 3 and positions[1] >= 4  # not both at the end, as a plain round-robin would leave a's
    assert [j for j in ordered if j[0] == "model=a"] == big  # each group keeps its own order


def test_interleave_of_one_group_or_none() -> None:
    jobs = grid("a", "8", 4)
    assert by_group(jobs) == jobs
    assert order_jobs([], "interleave", None, group_key) == ([], None)


def test_group_key_drops_the_seed_and_repeat_keys_and_ignores_the_order() -> None:
    assert group_key(["model=a", "batch=8", "seed=3"]) == group_key(["seed=4", "batch=8", "model=a"])
    assert group_key(["model=a", "+repeat=1", "repeat=2", "++seed=1", "~seed"]) == ("model=a",)
    assert group_key(["model=a", "seed=1"]) != group_key(["model=b", "seed=1"])
    assert group_key(["model.seed_name=x", "lr=0.1", "seed=1"], spread_keys=("lr",)) == (
        "model.seed_name=x",
        "seed=1",
    )


def test_an_unknown_order_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.order=random: allowed: grid, shuffle, interleave$"):
        order_jobs([1], "random", None, itself)
