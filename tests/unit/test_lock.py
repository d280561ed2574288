"""pyproject.toml's ranges against the lock (requirements/constraints.txt): each lower bound is the version the lock
pins, the one `make setup` installs and the tests run against (tests/packaging installs the wheel with the lock as
constraints on every interpreter). A lock bumped without its bounds (or a bound moved without the lock) would claim
lower bounds that no test runs."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT


def locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        text = line.partition("#")[0].strip()
        if text:
            (pin,) = Requirement(text).specifier
            assert pin.operator == "==", line
            pins[canonicalize_name(Requirement(text).name)] = Version(pin.version)
    return pins


def declared() -> list[tuple[str, Requirement]]:
    """Every dependency of the core and of each extra, with where it is declared (extras naming explaunch's own
    other extras left out)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [("dependencies", Requirement(text)) for text in project["dependencies"]]
    for extra, texts in project["optional-dependencies"].items():
        found += [(f"[{extra}]", Requirement(text)) for text in texts]
    return [(where, req) for where, req in found if canonicalize_name(req.name) != "explaunch"]


def test_every_lower_bound_in_pyproject_is_the_version_the_lock_pins() -> None:
    pins = locked()
    wrong = []
    for where, req in declared():
        bounds = [Version(spec.version) for spec in req.specifier if spec.operator == ">="]
        pinned = pins.get(canonicalize_name(req.name))
        if len(bounds) != 1 or bounds[0] != pinned:
            lower = ", ".join(str(bound) for bound in bounds) or "none"
            wrong.append(f"{where} {req}: lower bound {lower}, lock {pinned or 'none'}")
    assert wrong == []


def test_the_check_reads_real_bounds_and_pins() -> None:
    """The test above compares something: the core's Hydra and the [llm] extra's torch are found on both sides."""
    pins, names = locked(), {canonicalize_name(req.name) for _, req in declared()}
    assert {"hydra-core", "torch", "mlflow"} <= names
    assert {"hydra-core", "torch", "mlflow"} <= pins.keys()
