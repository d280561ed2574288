"""The order jobs start in: ``hydra.sweeper.order`` = grid | shuffle | interleave (``order_seed`` for shuffle).

- ``grid``: as the grid expands (the last swept key varies fastest).
- ``shuffle``: a permutation by ``random.Random(seed)``; with no seed, one is drawn and returned, so that the sweep
  records it and a rerun with ``hydra.sweeper.order_seed=<it>`` starts the jobs in the same order.
- ``interleave``: the jobs of one group (a configuration without its seed/repeat keys: ``model=a batch=8
  seed=0..4`` is one group) are spread over the whole sweep instead of running back to back, so that no group runs
  all first or all last (on a machine that warms up, or a shared one whose load changes). With groups of one size
  this is a round-robin: a0 b0 c0 a1 b1 c1 ...; with groups of different sizes each group's jobs sit at evenly
  spaced points of the sweep.

How the sweeper uses it, once, on the jobs left to run (after skipping those done before)::

    jobs, seed = order.order_jobs(jobs, settings.order, settings.order_seed,
                                  group_of=lambda job: order.group_key(job.grid_overrides))
    # record `seed` (None unless shuffled) in the sweep record / plan, e.g. as "order_seed"

Only the start order changes: job numbers (folders) and ledger keys stay those of the grid.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

from explaunch.errors import ConfigError

T = TypeVar("T")

ORDERS = ("grid", "shuffle", "interleave")
SPREAD_KEYS = ("seed", "repeat", "+repeat")
SEED_BOUND = 2**31


def order_jobs(
    jobs: Sequence[T], order: str, seed: int | None, group_of: Callable[[T], Hashable]
) -> tuple[list[T], int | None]:
    """The jobs in ``order`` and the seed that shuffled them (drawn when ``seed`` is None; None unless shuffled).

    ``group_of`` maps a job to its group (see :func:`group_key`); only ``interleave`` calls it.
    """
    if order == "grid":
        return list(jobs), None
    if order == "shuffle":
        used = secrets.randbelow(SEED_BOUND) if seed is None else seed
        shuffled = list(jobs)
        random.Random(used).shuffle(shuffled)
        return shuffled, used
    if order == "interleave":
        return interleave(jobs, group_of), None
    raise ConfigError("hydra.sweeper.order", order, f"allowed: {', '.join(ORDERS)}")


def interleave(jobs: Sequence[T], group_of: Callable[[T], Hashable]) -> list[T]:
    """Each group's jobs (in their grid order) at evenly spaced points: job i of a group of n sits at (i + 0.5) / n
    of the way through; ties go to the group seen first in the grid. Equal groups give a round-robin."""
    groups: dict[Hashable, list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault(group_of(job), []).append(index)
    placed: list[tuple[float, int, int]] = []  # (position, group rank, index in jobs)
    for rank, members in enumerate(groups.values()):
        n = len(members)
        placed.extend(((i + 0.5) / n, rank, index) for i, index in enumerate(members))
    placed.sort()
    return [jobs[index] for _, _, index in placed]


def override_key(override: str) -> str:
    """``+repeat=2`` -> ``repeat``; ``~seed`` -> ``seed``; ``model.lr=0.1`` -> ``model.lr``."""
    return override.split("=", 1)[0].lstrip("+~")


def group_key(overrides: Iterable[str], spread_keys: Iterable[str] = SPREAD_KEYS) -> tuple[str, ...]:
    """A job's group: its overrides without those of ``spread_keys`` (with or without a ``+``/``++``/``~``
    prefix), sorted, so that the order they were written in does not matter."""
    spread = {key.lstrip("+~") for key in spread_keys}
    return tuple(sorted(o for o in overrides if override_key(o) not in spread))
