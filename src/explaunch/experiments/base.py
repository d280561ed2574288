"""What every experiment type returns to the task."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExperimentResult:
    """``metrics``: numbers only (logged as metrics). ``info``: how they were obtained (device, methods, sources)."""

    metrics: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
