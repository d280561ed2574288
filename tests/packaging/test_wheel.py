"""The sdist (with the package data) and the wheel built from it, installed (not editable) without extras into a
fresh venv on Python 3.11, 3.12 and 3.13, as a user of another Hydra project would: no torch comes with it, Hydra
finds our sweeper and every launcher we ship, the package data is inside, ``explaunch --version`` says the
package's version, a two-job sweep runs from it, an experiment type whose extra is missing stops with one line
naming the extra, and the example plain Hydra app (examples/any_hydra_app) gets its records and MLflow runs from
it. On 3.12 and 3.13 the core's unit tests (those not marked ``extras``) then run against that install.

Each venv installs the wheel with ``requirements/constraints.txt`` as constraints: the versions the lock names are
the lower bounds ``pyproject.toml`` declares, so this is the lower bounds tested on every interpreter. An interpreter
that is not on the machine fails its test by name (pyenv's ``~/.pyenv/versions/3.X*`` or ``python3.X`` on PATH).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import MAIN, ROOT

pytestmark = pytest.mark.slow

PYTHONS = ("3.11", "3.12", "3.13")
HEAVY = ("torch", "transformers", "ultralytics", "torchvision", "accelerate")
PIP_TIMEOUT_S = 900
# what the package ships, by name: its Hydra plugins (src/hydra_plugins/explaunch_plugins) and its data files
SWEEPER = "hydra_plugins.explaunch_plugins.sweeper.ExplaunchSweeper"
LAUNCHERS = (
    "hydra_plugins.explaunch_plugins.local_launcher.ExplaunchLocalLauncher",  # hydra/launcher=explaunch_local
    "hydra_plugins.explaunch_plugins.launchers.ExplaunchLocalLauncher",  # hydra/launcher=submitit_local
    "hydra_plugins.explaunch_plugins.launchers.ExplaunchSlurmLauncher",  # hydra/launcher=submitit_slurm
)
DATA_FILES = (  # under src/explaunch
    "data/prompts.jsonl",
    "data/tokenizer/tokenizer.json",
    "data/tokenizer/tokenizer_config.json",
    "review/dashboard/static/index.html",
    "review/dashboard/static/app.js",
    "review/dashboard/static/style.css",
    "py.typed",
)


def find_python(version: str) -> str | None:
    """pyenv's newest ``version`` first, then ``python3.X`` on PATH (not pyenv's shim, which may point elsewhere)."""
    pyenv = sorted((Path.home() / ".pyenv" / "versions").glob(f"{version}*/bin/python{version}"))
    if pyenv:
        return str(pyenv[-1])
    found = shutil.which(f"python{version}")
    return found if found and ".pyenv/shims" not in found else None


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, from the build backend's own PEP 517 hook (setuptools.build_meta, pyproject's build-backend) with
    the setuptools of this venv: nothing is downloaded (`python -m build` is not installed)."""
    dist = tmp_path_factory.mktemp("sdist")
    hook = "import sys, setuptools.build_meta as backend; backend.build_sdist(sys.argv[1])"
    built = subprocess.run(
        [sys.executable, "-c", hook, str(dist)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (archive,) = dist.glob("explaunch-*.tar.gz")
    return archive


@pytest.fixture(scope="module")
def wheel(sdist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from the unpacked sdist as `python -m build` builds it: the sdist alone must make it (pip's
    build environment comes from the local index the venvs install from)."""
    unpacked, dist = tmp_path_factory.mktemp("unpacked"), tmp_path_factory.mktemp("dist")
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked, filter="data")
    (source,) = unpacked.iterdir()
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel_file,) = dist.glob("explaunch-*.whl")
    return wheel_file


def test_the_sdist_holds_the_plugins_and_the_package_data(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = {name.partition("/")[2] for name in archive.getnames()}  # without the explaunch-X.Y.Z/ folder
    plugins = {f"src/{name.rpartition('.')[0].replace('.', '/')}.py" for name in (SWEEPER, *LAUNCHERS)}
    wanted = {"pyproject.toml", "README.md", *plugins, *(f"src/explaunch/{name}" for name in DATA_FILES)}
    assert sorted(wanted - names) == []


def run(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MLFLOW_TRACKING"))}
    base["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return subprocess.run(
        list(args), cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("version", PYTHONS)
def test_the_core_wheel_installs_and_runs_a_sweep(version: str, wheel: Path, tmp_path: Path) -> None:
    python = find_python(version)
    if python is None:
        pytest.fail(f"python{version} is not on this machine (looked in ~/.pyenv/versions and on PATH)")
    venv = tmp_path / "venv"
    made = run(python, "-m", "venv", str(venv), cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    py, bin_dir = venv / "bin" / "python", venv / "bin"
    pip = run(
        str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "requirements" / "constraints.txt"), str(wheel),
        cwd=tmp_path, timeout=PIP_TIMEOUT_S,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-3000:]

    probe = run(
        str(py),
        "-c",
        f"""
import importlib.util, importlib.metadata, importlib.resources, json
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
data = importlib.resources.files("explaunch")
print(json.dumps({{
    "heavy": [m for m in {HEAVY!r} if importlib.util.find_spec(m)],
    "sweepers": [f"{{p.__module__}}.{{p.__name__}}" for p in Plugins.instance().discover(Sweeper)],
    "launchers": [f"{{p.__module__}}.{{p.__name__}}" for p in Plugins.instance().discover(Launcher)],
    "version": importlib.metadata.version("explaunch"),
    "editable": not str(data).startswith({str(venv)!r}),
    "data": [f for f in {DATA_FILES!r} if data.joinpath(*f.split("/")).is_file()],
}}))
""",
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout)
    assert found["heavy"] == [], f"the core install pulled {found['heavy']}"
    assert SWEEPER in found["sweepers"], found["sweepers"]
    assert sorted(set(LAUNCHERS) - set(found["launchers"])) == [], found["launchers"]
    assert not found["editable"]
    assert found["data"] == list(DATA_FILES)

    version_line = run(str(bin_dir / "explaunch"), "--version", cwd=tmp_path)
    assert version_line.returncode == 0 and found["version"] in version_line.stdout, version_line

    sweep = tmp_path / "sweep"
    swept = run(
        str(py), str(MAIN), "-m", "experiment_type=probe", "seed=0,1", "tracking=none", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )  # fmt: skip
    assert swept.returncode == 0, swept.stderr[-3000:]
    statuses = sorted(json.loads(p.read_text())["status"] for p in sweep.glob("*/job.json"))
    assert statuses == ["completed", "completed"]
    report = run(str(bin_dir / "explaunch"), "report", str(sweep), "--json", cwd=tmp_path)
    assert report.returncode == 0 and len(json.loads(report.stdout)) == 2, report.stderr[-2000:]

    # a plain Hydra app of the user's own (examples/any_hydra_app) gets explaunch's sweeper and recording from the
    # wheel: its records and one MLflow run per job under the sweep's run
    app_sweep, store = tmp_path / "app", tmp_path / "app.db"
    app = run(
        str(py), str(ROOT / "examples" / "any_hydra_app" / "app.py"), "-m", "seed=0,1", f"hydra.sweep.dir={app_sweep}",
        cwd=tmp_path, env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"},
    )  # fmt: skip
    assert app.returncode == 0, app.stderr[-3000:]
    assert sorted(json.loads(p.read_text())["status"] for p in app_sweep.glob("*/job.json")) == ["completed"] * 2
    counted = run(
        str(py), "-c",
        "import mlflow, sys; c = mlflow.MlflowClient(sys.argv[1]); "
        "print(sum(1 for e in c.search_experiments() for r in c.search_runs([e.experiment_id]) "
        "if r.data.tags.get('mlflow.parentRunId')))",
        f"sqlite:///{store}", cwd=tmp_path,
    )  # fmt: skip
    assert counted.returncode == 0 and counted.stdout.strip() == "2", counted.stderr[-2000:]

    # the default experiment type (llm_inference) needs the [llm] extra: one line, exit 2, no job folder
    no_extra = run(str(py), str(MAIN), "model=llama", f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)
    assert no_extra.returncode == 2, no_extra.stderr[-3000:]
    assert "Traceback" not in no_extra.stderr
    assert "pip install 'explaunch[llm]'" in no_extra.stderr
    assert not (tmp_path / "job").exists()

    if version == PYTHONS[0]:
        return  # `make test` runs every test on this interpreter, with the extras
    # the core's unit tests on this interpreter, against the installed wheel (tests/ imports `explaunch` from the venv)
    tools = run(
        str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "requirements" / "constraints.txt"), "pytest",
        cwd=tmp_path, timeout=PIP_TIMEOUT_S,
    )  # fmt: skip
    assert tools.returncode == 0, tools.stderr[-3000:]
    tests = run(
        str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", "-m", "not extras",
        "--ignore=tests/unit/test_llm_inference.py",  # imports torch at the top: it cannot even be collected
        "tests/unit", cwd=ROOT, timeout=1200,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-5000:]


@pytest.mark.parametrize("version", ["2.7", "3.10"])
def test_main_py_on_an_interpreter_older_than_3_11_says_what_to_install_in_one_line(
    version: str, tmp_path: Path
) -> None:
    """Python 2.7 (still ``python`` on old clusters) parses main.py before it runs the check: the file must parse
    there too, or the user gets a SyntaxError's traceback instead of the line."""
    python = find_python(version)
    if python is None:
        pytest.skip(f"no python{version} on this machine to try it with")
    ran = run(python, str(MAIN), "-m", "experiment_type=probe", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert ran.returncode == 1
    assert ran.stderr.strip().splitlines() == [ran.stderr.strip()], ran.stderr  # one line, no traceback
    assert ran.stderr.startswith(f"error: explaunch needs Python 3.11 to 3.13, this is {version}."), ran.stderr
    assert not (tmp_path / "sweep").exists()
