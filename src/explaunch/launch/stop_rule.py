"""Stop at a target: ``hydra.sweeper.stop_when="accuracy >= 0.9 and demographic_parity_difference <= 0.05"``.

The expression is one of ``explaunch validate``'s rules (:class:`explaunch.review.rule_expressions.Expression`):
parsed, never run as code; metric and swept parameter names, numbers, comparisons, ``and``/``or``/``not``,
arithmetic and ``abs``/``min``/``max``. It is checked with the sweeper settings (``ExplaunchSweeperConf.check``), so
a bad one stops the sweep before anything starts. On the command line Hydra's override grammar wants the value
quoted (``>`` and ``=`` are not allowed bare): ``'hydra.sweeper.stop_when="accuracy >= 0.9"'``.

How the sweeper uses it::

    rule = stop_rule.parse(settings.stop_when) if settings.stop_when else None   # once, before launching
    ...
    # for each job record as it comes in (completed jobs only: a failed job has no metrics to meet it with)
    if rule is not None and record.status == "completed" and rule.met(record.metrics):
        stop_reason = "stop_when"         # launch nothing more; jobs already running finish
        log.info("stop_when met by job %d: %s", job.num, rule.describe(record.metrics))

A name the job has no value for makes the rule not met (never an error): pass the metrics merged with the job's
swept parameters (``{**params, **record.metrics}``) where the rule may name a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from explaunch.review.rule_expressions import Expression, MissingName

KEY = "hydra.sweeper.stop_when"


@dataclass(frozen=True)
class StopRule:
    """A parsed ``stop_when``; ``met(metrics)`` says whether one job's values meet it."""

    expression: Expression

    @property
    def text(self) -> str:
        return self.expression.source

    @property
    def metrics(self) -> list[str]:
        """The names the rule reads, each once, in the order written."""
        return list(dict.fromkeys(self.expression.names))

    def met(self, metrics: Mapping[str, Any]) -> bool:
        """True when the values meet the rule; False when they do not, lack a name it reads or cannot be compared."""
        try:
            return bool(self.expression.evaluate(metrics))
        except MissingName:
            return False
        except (TypeError, ValueError, ArithmeticError):
            return False

    def describe(self, metrics: Mapping[str, Any]) -> str:
        """The values the rule read, for the line that says why the sweep stopped: ``accuracy=0.93, dp=0.01``."""
        shown = []
        for name in self.metrics:
            value = metrics.get(name)
            shown.append(f"{name}={value:.6g}" if isinstance(value, float) else f"{name}={value}")
        return ", ".join(shown)


def parse(text: str, key: str = KEY) -> StopRule:
    """The rule in ``text``; a ``ConfigError`` naming ``key`` and what is allowed when it is not a condition
    (``accuracy >>= 1``, ``accuracy``, ``open('x')``)."""
    return StopRule(Expression(text, key))
