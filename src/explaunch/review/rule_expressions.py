"""The expressions of a rules file's ``rules:`` section (``explaunch validate``), one job's condition each.

Expressions are parsed, never run as code: numbers, strings, names (a metric, a swept parameter such as ``lam`` or
``experiment_type.n_low``, ``status``, ``duration_s``), arithmetic (``+ - * / // % **``), comparisons (also chained,
and ``in (...)``), ``and``/``or``/``not``, and ``abs``/``min``/``max``. Anything else is refused when the file is read.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from explaunch.errors import ConfigError


class MissingName(Exception):
    """The job has no value for a name the expression uses (a failed job has no metrics)."""


BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: lambda a, b: math.pow(a, b),  # floats: an overflow raises instead of building a huge integer
}
COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {"abs": abs, "min": min, "max": max}
ALLOWED_TEXT = "numbers, strings, metric and parameter names, + - * / // % **, comparisons, and/or/not, abs/min/max"


class Expression:
    """A rule's expression, checked against a whitelist of syntax when made, evaluated over one job's values."""

    def __init__(self, source: str, key: str) -> None:
        self.source = source
        self.key = key
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as ex:
            raise ConfigError(key, source, f"not an expression ({ex.msg}); allowed: {ALLOWED_TEXT}") from None
        self.body = tree.body
        self.names: list[str] = []
        self._check(self.body)
        if not self._is_condition(self.body):
            raise ConfigError(key, source, "must be a condition: a comparison, or and/or/not of comparisons")

    def _refuse(self, what: str) -> ConfigError:
        return ConfigError(self.key, self.source, f"{what} is not allowed; allowed: {ALLOWED_TEXT}")

    def _is_condition(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Compare):
            return True
        if isinstance(node, ast.BoolOp):
            return all(self._is_condition(v) for v in node.values)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return True
        return isinstance(node, ast.Constant) and isinstance(node.value, bool)

    def _check(self, node: ast.expr) -> None:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float | str | bool) and node.value is not None:
                raise self._refuse(f"the constant {node.value!r}")
        elif isinstance(node, ast.Name | ast.Attribute):
            self.names.append(self._dotted(node))
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self._check(value)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.Not | ast.USub | ast.UAdd):
                raise self._refuse(type(node.op).__name__)
            self._check(node.operand)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in BINARY:
                raise self._refuse(f"the operator {type(node.op).__name__}")
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.Compare):
            if any(type(op) not in COMPARE for op in node.ops):
                raise self._refuse("this comparison")
            for part in [node.left, *node.comparators]:
                self._check(part)
        elif isinstance(node, ast.Tuple | ast.List):
            for item in node.elts:
                self._check(item)
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
                raise self._refuse(f"the call {ast.unparse(node.func)}(...)")
            for arg in node.args:
                self._check(arg)
        else:
            raise self._refuse(f"{type(node).__name__} ({ast.unparse(node)})")

    def _dotted(self, node: ast.expr) -> str:
        """``experiment_type.n_low`` (an Attribute chain) as the one name it is in the job's overrides."""
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return f"{self._dotted(node.value)}.{node.attr}"
        raise self._refuse(f"{type(node).__name__} ({ast.unparse(node)})")

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        return self._eval(self.body, values)

    def _eval(self, node: ast.expr, values: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name | ast.Attribute):
            name = self._dotted(node)
            if name not in values or values[name] is None:
                raise MissingName(name)
            return values[name]
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                return all(bool(self._eval(v, values)) for v in node.values)
            return any(bool(self._eval(v, values)) for v in node.values)
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, values)
            if isinstance(node.op, ast.Not):
                return not operand
            return -operand if isinstance(node.op, ast.USub) else +operand
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, values), self._eval(node.right, values)
            for operand in (left, right):  # numbers only: "x" * 10**9 or "%999999999d" % 1 would eat memory
                if not isinstance(operand, int | float):
                    raise TypeError(f"arithmetic on {operand!r}, which is not a number")
            return BINARY[type(node.op)](left, right)
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, values)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self._eval(right_node, values)
                if not COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.Tuple | ast.List):
            return tuple(self._eval(item, values) for item in node.elts)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return FUNCTIONS[node.func.id](*(self._eval(arg, values) for arg in node.args))
        raise TypeError(type(node).__name__)  # refused in _check; kept for the type checker
