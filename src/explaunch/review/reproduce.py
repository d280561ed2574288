"""Rerun a job from its folder and say whether its results came out the same.

The rerun is ``python <code_dir>/<entry> <recorded overrides> seed=<recorded seed> hydra.run.dir=<new folder>``, with
the code folder the job's snapshot names, the Python it ran with (where that still exists, else this one), and the
thread-count and hash-seed variables it ran with (:data:`RESTORED_ENV`); not logged to MLflow unless ``track``.
Its own ``job.json`` is then compared with the original's:

- **results that must be equal** (the verdict): the status, every metric that is not a measurement of time, energy,
  memory or resources (token counts, FLOPs, accuracy, losses...), every output hash in ``info`` (``output_sha256``:
  the generated token ids), and the resolved config (paths of the code folder and the Python executable aside);
- **measurements** (timings, throughput, energy, memory): shown with their relative change; they decide the verdict
  only when a relative tolerance is given (``rtol``), since a rerun on a loaded or another machine is rarely as fast;
- **the environment** (env hash, git commit and uncommitted changes, packages, Python, hardware, restored
  variables): every difference is listed, as the likely cause of a result that differs, but does not decide.

An archive (:func:`write_archive`) holds what another machine needs: the record, the config and overrides, the
snapshot, the package list, the code at the recorded commit with the recorded uncommitted changes applied, and a
``reproduce.py`` that runs ``explaunch reproduce`` on the unpacked folder.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from explaunch.errors import ExplaunchError
from explaunch.job.snapshot import PATCH_FILE
from explaunch.redaction import REDACTED
from explaunch.sweepdir import records

REPRODUCED = "REPRODUCED"
DIFFERS = "DIFFERS"
# Variables that change numerics or thread counts: the rerun gets the values the job ran with.
RESTORED_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG",
)
# Metric names that measure time, speed, energy, memory or resources: never expected to repeat exactly.
MEASURED = re.compile(
    r"(_s$|_ms$|time|throughput|latency|ttft|_per_s$|energy|joule|kwh|emissions|memory|_mb$|_gb$|_bytes$|"
    r"resources_|percent|power|_w$|duration|^window_|_mib$|_per_token_j$|_per_query_j$|per_kwh$|per_joule$)"
)
OUTPUT_HASH = re.compile(r"(sha256|_hash)$")
LOG_FILE = "reproduce.log"
MAX_LISTED = 10  # files or packages named in one row

# Row status: SAME and CHANGED never decide the verdict, DIFFERENT does.
SAME, CHANGED, DIFFERENT = "same", "changed", "differs"


@dataclass(frozen=True)
class Row:
    section: str  # result, measured, config, environment
    name: str
    original: Any
    rerun: Any
    status: str  # same, changed (environment / measurement, informational) or differs (decides the verdict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    original_dir: str
    rerun_dir: str
    rows: list[Row]
    rtol: float | None

    @property
    def verdict(self) -> str:
        return DIFFERS if any(r.status == DIFFERENT for r in self.rows) else REPRODUCED

    def summary(self) -> str:
        differing = [r.name for r in self.rows if r.status == DIFFERENT]
        env = [r for r in self.rows if r.section == "environment" and r.status == CHANGED]
        env_text = "; ".join(f"{r.name}: {short(r.original)} -> {short(r.rerun)}" for r in env[:4])
        if len(env) > 4:
            env_text += f"; ... ({len(env) - 4} more)"
        if differing:
            text = f"{DIFFERS}: {', '.join(differing[:MAX_LISTED])}"
            return text + (f" (environment changed: {env_text})" if env else " (no difference in the environment)")
        exact = sum(r.section == "result" for r in self.rows)
        text = f"{REPRODUCED}: {exact} deterministic results equal"
        if self.rtol is None:
            text += "; timings informational (--rtol makes them count)"
        return text + (f"; environment changed: {env_text}" if env else "; same environment")

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "summary": self.summary(),
            "original_dir": self.original_dir,
            "rerun_dir": self.rerun_dir,
            "rtol": self.rtol,
            "rows": [r.to_dict() for r in self.rows],
        }


def short(value: Any) -> str:
    text = "" if value is None else str(value)
    return text[:12] if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", text) else text


# ---- planning and running the rerun -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rerun:
    command: list[str]
    env: dict[str, str]  # the variables set on top of the current environment
    out_dir: Path
    code_dir: Path

    def shell(self) -> str:
        assigned = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        return " ".join([*assigned, shlex.join(self.command)])


def override_key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def recorded_overrides(job_dir: Path, record: records.JobRecord) -> list[str]:
    """Hydra's ``.hydra/overrides.yaml`` (the values as given, but secrets redacted and ``${oc.env:...}`` kept as
    written, so that the rerun reads the variable again), else the record's."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if path.is_file():
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, list):
            return [str(o) for o in data]
    return list(record.overrides)


def merge_overrides(
    recorded: Sequence[str], extra: Sequence[str], seed: int | None, *, check_redacted: bool = True
) -> list[str]:
    """``extra`` replaces a recorded override of the same key; the recorded seed is added when not overridden.
    A value still redacted is an error (unless ``check_redacted`` is false)."""
    for override in extra:
        if "=" not in override:
            raise ExplaunchError(f"--override {override}: expected KEY=VALUE")
    replaced = {override_key(o) for o in extra}
    merged = [o for o in recorded if override_key(o) not in replaced] + list(extra)
    for override in merged:
        if check_redacted and override.partition("=")[2] == REDACTED:
            key = override_key(override)
            raise ExplaunchError(
                f"override {key}: its value was redacted when the job was recorded; give it with --override {key}=VALUE"
            )
    if seed is not None and "seed" not in {override_key(o) for o in merged}:
        merged.append(f"seed={seed}")
    return merged


def code_location(record: records.JobRecord, code_dir: Path | None) -> tuple[Path, str]:
    """The folder holding the entry script and ``conf/``: ``code_dir`` if given, else the one the snapshot names
    (else its git root when the entry script is there)."""
    snapshot = record.snapshot
    entry = str(snapshot.get("entry") or "main.py")
    candidates = [code_dir] if code_dir else [snapshot.get("code_dir"), (snapshot.get("git") or {}).get("root")]
    for candidate in candidates:
        if candidate and (Path(candidate) / entry).is_file():
            return Path(candidate).resolve(), entry
    where = code_dir or snapshot.get("code_dir") or "not recorded"
    raise ExplaunchError(
        f"code folder {where}: no {entry} there; give --code-dir DIR (the folder with {entry} and conf/)"
    )


def default_out_dir(base: Path, now: datetime | None = None) -> Path:
    """``reproduce/<date>/<time>`` under ``base`` (not inside the sweep: its summaries count every job.json below)."""
    stamp = now or datetime.now()
    folder = base / "reproduce" / stamp.strftime("%Y-%m-%d") / stamp.strftime("%H-%M-%S")
    candidate, n = folder, 1
    while candidate.exists():
        candidate = folder.with_name(f"{folder.name}-{n}")
        n += 1
    return candidate


def hydra_value(text: str) -> str:
    """A value Hydra's override parser takes as one string (paths may hold ``:``, ``,`` or spaces)."""
    if re.fullmatch(r"[\w/.\-]+", text):
        return text
    return f"'{text}'" if "'" not in text else f'"{text}"'


def plan(
    job_dir: Path,
    out_dir: Path | None = None,
    *,
    code_dir: Path | None = None,
    overrides: Sequence[str] = (),
    track: bool = False,
    python: str | None = None,
) -> Rerun:
    record = records.read_job_record(job_dir)
    folder, entry = code_location(record, code_dir)
    out = (out_dir or default_out_dir(Path.cwd())).resolve()
    if (out / records.JOB_FILE).exists():
        raise ExplaunchError(f"--out {out}: holds a job record already; choose a new folder")
    merged = merge_overrides(recorded_overrides(job_dir, record), overrides, record.snapshot.get("seed"))
    if not track and "tracking=none" not in merged:
        merged = [o for o in merged if not override_key(o).startswith("tracking.backend")]
        merged.append("tracking.backend=none")
    recorded_python = str(record.snapshot.get("executable") or "")
    interpreter = python or (recorded_python if Path(recorded_python).is_file() else sys.executable)
    command = [interpreter, str(folder / entry), *merged, f"hydra.run.dir={hydra_value(str(out))}"]
    recorded_env = record.snapshot.get("environment") or {}
    env = {k: str(recorded_env[k]) for k in RESTORED_ENV if k in recorded_env and recorded_env[k] != REDACTED}
    return Rerun(command, env, out, folder)


def run(rerun: Rerun, cwd: Path | None = None, timeout_s: float | None = None) -> records.JobRecord:
    """Run the job; its output goes to ``<out_dir>/reproduce.log``. The rerun's record, completed or failed."""
    rerun.out_dir.mkdir(parents=True, exist_ok=True)
    log = rerun.out_dir / LOG_FILE
    env = {**os.environ, **rerun.env, "HYDRA_FULL_ERROR": "0"}
    with log.open("w", encoding="utf-8") as handle:
        handle.write(f"$ {rerun.shell()}\n")
        handle.flush()
        try:
            code = subprocess.run(
                rerun.command,
                cwd=cwd or Path.cwd(),
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout_s,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            raise ExplaunchError(f"the rerun ran past {timeout_s} s; its output: {log}") from None
    if not (rerun.out_dir / records.JOB_FILE).is_file():
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
        raise ExplaunchError(f"the rerun (exit {code}) wrote no job record: {tail[0]} (full output: {log})")
    return records.read_job_record(rerun.out_dir)


# ---- comparing ----------------------------------------------------------------------------------------------------


def is_measured(metric: str) -> bool:
    return bool(MEASURED.search(metric))


def same_number(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def relative_change(a: float, b: float) -> float | None:
    if a == 0:
        return None if b != 0 else 0.0
    return (b - a) / abs(a)


def compare_results(
    original: records.JobRecord, rerun: records.JobRecord, rtol: float | None = None, ignore: Iterable[str] = ()
) -> list[Row]:
    import fnmatch

    ignored = list(ignore)

    def wanted(name: str) -> bool:
        return not any(fnmatch.fnmatch(name, pattern) for pattern in ignored)

    rows = [
        Row("result", "status", original.status, rerun.status, SAME if original.status == rerun.status else DIFFERENT)
    ]
    if original.error or rerun.error:
        error_a = original.error.type if original.error else None
        error_b = rerun.error.type if rerun.error else None
        rows.append(Row("result", "error", error_a, error_b, SAME if error_a == error_b else DIFFERENT))
    hashes = sorted(k for k in {*original.info, *rerun.info} if OUTPUT_HASH.search(k) and wanted(k))
    for key in hashes:
        hash_a, hash_b = original.info.get(key), rerun.info.get(key)
        rows.append(Row("result", key, hash_a, hash_b, SAME if hash_a == hash_b else DIFFERENT))
    for name in sorted({*original.metrics, *rerun.metrics}):
        if not wanted(name):
            continue
        a, b = original.metrics.get(name), rerun.metrics.get(name)
        if a is None or b is None:
            status = CHANGED if is_measured(name) else DIFFERENT
            rows.append(Row("measured" if is_measured(name) else "result", name, a, b, status, "missing"))
        elif is_measured(name):
            change = relative_change(a, b)
            outside = rtol is not None and (change is None or abs(change) > rtol)
            note = "" if change is None else f"{change:+.1%}"
            status = DIFFERENT if outside else (SAME if same_number(a, b) else CHANGED)
            rows.append(Row("measured", name, a, b, status, note + (f" (beyond rtol {rtol})" if outside else "")))
        else:
            rows.append(Row("result", name, a, b, SAME if same_number(a, b) else DIFFERENT))
    return rows


def _normalized(config: Mapping[str, Any], record: records.JobRecord) -> dict[str, Any]:
    """The flattened config without ``tracking`` and with the code folder and Python paths made placeholders."""
    from explaunch.tracking.store import flatten

    replacements = [
        (record.snapshot.get("code_dir") or "", "<code_dir>"),
        (record.snapshot.get("executable") or "", "<python>"),
    ]
    flat = {k: v for k, v in flatten(config).items() if not k.startswith("tracking.")}

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for old, new in replacements:
                if old:
                    value = value.replace(old, new)
            return value
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {k: clean(v) for k, v in flat.items()}


def compare_config(original: records.JobRecord, rerun: records.JobRecord) -> list[Row]:
    a, b = _normalized(original.config, original), _normalized(rerun.config, rerun)
    rows = [
        Row("config", f"config.{key}", a.get(key), b.get(key), DIFFERENT)
        for key in sorted({*a, *b})
        if a.get(key) != b.get(key)
    ]
    if not rows:
        note = "" if original.config_hash == rerun.config_hash else "hash differs only by code folder/Python paths"
        rows.append(Row("config", "config", f"{len(a)} keys", f"{len(b)} keys", SAME, note))
    return rows


def compare_environment(
    original: records.JobRecord, rerun: records.JobRecord, original_dir: Path, rerun_dir: Path
) -> list[Row]:
    a, b = original.snapshot, rerun.snapshot
    if not a or not b:
        return [Row("environment", "snapshot", bool(a), bool(b), CHANGED, "a snapshot is missing")]
    rows: list[Row] = []

    def add(name: str, x: Any, y: Any, note: str = "") -> None:
        rows.append(Row("environment", name, x, y, SAME if x == y else CHANGED, note))

    add("env_hash", original.env_hash, rerun.env_hash)
    git_a, git_b = a.get("git") or {}, b.get("git") or {}
    add("git commit", git_a.get("commit"), git_b.get("commit"), _changed_files(git_a, git_b))
    add(
        "uncommitted changes",
        git_a.get("patch_sha256"),
        git_b.get("patch_sha256"),
        _patch_note(original_dir / PATCH_FILE, rerun_dir / PATCH_FILE),
    )
    add("python", a.get("python"), b.get("python"))
    packages_a, packages_b = a.get("packages") or {}, b.get("packages") or {}
    for name in sorted({*packages_a, *packages_b}):
        if packages_a.get(name) != packages_b.get(name):
            add(f"package {name}", packages_a.get(name), packages_b.get(name))
    for key in ("system", "machine"):
        add(f"platform {key}", (a.get("platform") or {}).get(key), (b.get("platform") or {}).get(key))
    for key in ("model", "usable_cores"):
        add(f"cpu {key}", (a.get("cpu") or {}).get(key), (b.get("cpu") or {}).get(key))
    add("gpus", sorted(g.get("name") for g in a.get("gpus") or []), sorted(g.get("name") for g in b.get("gpus") or []))
    env_a, env_b = a.get("environment") or {}, b.get("environment") or {}
    for key in RESTORED_ENV:
        if key in env_a or key in env_b:
            add(key, env_a.get(key), env_b.get(key))
    return rows


def _changed_files(git_a: Mapping[str, Any], git_b: Mapping[str, Any]) -> str:
    """The files that differ between two recorded commits, when the rerun's repository holds both."""
    first, second, root = git_a.get("commit"), git_b.get("commit"), git_b.get("root")
    if not (first and second and root) or first == second:
        return ""
    proc = subprocess.run(
        ["git", "diff", "--name-only", first, second], cwd=root, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return "the earlier commit is not in this repository"
    return _files_note(proc.stdout.split())


def _files_note(files: Sequence[str]) -> str:
    if not files:
        return ""
    shown = ", ".join(files[:MAX_LISTED])
    return f"files: {shown}" + (f" ... ({len(files) - MAX_LISTED} more)" if len(files) > MAX_LISTED else "")


def patch_files(path: Path) -> dict[str, str]:
    """A git patch split per file: {path: that file's diff}."""
    if not path.is_file():
        return {}
    files: dict[str, str] = {}
    current = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
        if line.startswith("diff --git "):
            current = line.rstrip("\n").split(" b/", 1)[-1]
            files[current] = ""
        if current is not None:
            files[current] += line
    return files


def _patch_note(a: Path, b: Path) -> str:
    files_a, files_b = patch_files(a), patch_files(b)
    return _files_note(sorted(k for k in {*files_a, *files_b} if files_a.get(k) != files_b.get(k)))


def compare(
    original_dir: Path,
    rerun_dir: Path,
    rtol: float | None = None,
    ignore: Iterable[str] = (),
) -> Comparison:
    original = records.read_job_record(original_dir)
    rerun = records.read_job_record(rerun_dir)
    rows = [
        *compare_results(original, rerun, rtol, ignore),
        *compare_config(original, rerun),
        *compare_environment(original, rerun, original_dir, rerun_dir),
    ]
    return Comparison(str(original_dir), str(rerun_dir), rows, rtol)


# ---- archive ------------------------------------------------------------------------------------------------------

ARCHIVE_README = """\
An explaunch job, packed to be rerun elsewhere.

  job.json          the record: status, resolved config, metrics, snapshot (code, packages, hardware)
  config.yaml       the resolved config (secrets redacted)
  overrides.yaml    the overrides the job ran with (secrets redacted)
  snapshot.json     the environment snapshot; requirements.txt: its packages as name==version
  git.patch         the uncommitted changes of the code that ran (when it was dirty)
  code/             {code_note}
  reproduce.py      reruns the job and compares it with job.json

Rerun it (a Python with the packages of requirements.txt, explaunch among them, or none when code/src/ holds it):

  python reproduce.py                 # = {command}
  python reproduce.py --rtol 0.5      # other options of `explaunch reproduce` pass through

It prints REPRODUCED or DIFFERS with a table and exits 0 or 1. The job alone, without the comparison:

  {plain}
"""

REPRODUCE_SCRIPT = '''\
#!/usr/bin/env python3
"""Rerun the archived job and compare it with job.json: `explaunch reproduce` on this folder (see README.txt)."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
env = dict(os.environ)
src = here / "code" / "src"
if (src / "explaunch").is_dir():  # the code that ran holds explaunch itself: use it, not an installed copy
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH", "")) if p)
code_dir = here / "@CODE_PATH@"
command = [sys.executable, "-m", "explaunch", "reproduce", str(here), "--code-dir", str(code_dir), *sys.argv[1:]]
print("$", shlex.join(command), flush=True)
sys.exit(subprocess.call(command, env=env))
'''


def _code_tree(record: records.JobRecord, job_dir: Path, code_dir: Path | None, into: Path) -> tuple[str, str]:
    """The code that ran, written to ``into``: the recorded commit (``git archive``) with the recorded patch
    applied; else (no repository) a copy of the code folder. Returns how it was made and where, below ``into``,
    the code folder (entry script and ``conf/``) is."""
    git = record.snapshot.get("git") or {}
    root, commit = git.get("root"), git.get("commit")
    folder, entry = code_location(record, code_dir)
    into.mkdir(parents=True)
    if root and commit and Path(root).is_dir():
        archived = subprocess.run(
            ["git", "archive", "--format=tar", commit], cwd=root, capture_output=True, check=False
        )
        if archived.returncode == 0:
            with tarfile.open(fileobj=io.BytesIO(archived.stdout)) as tar:
                tar.extractall(into, filter="data")
            note = f"the repository at commit {commit[:12]}"
            patch = job_dir / PATCH_FILE
            if patch.is_file() and patch.stat().st_size:
                applied = subprocess.run(
                    ["git", "apply", "--whitespace=nowarn", str(patch.resolve())],
                    cwd=into,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if applied.returncode != 0:
                    raise ExplaunchError(f"{patch}: does not apply to commit {commit[:12]}: {applied.stderr.strip()}")
                note += " with git.patch applied"
            top = Path(root).resolve()
            relative = folder.relative_to(top).as_posix() if folder.is_relative_to(top) else "."
            return note, relative
    shutil.copy2(folder / entry, into / entry)
    if (folder / "conf").is_dir():
        shutil.copytree(folder / "conf", into / "conf")
    return f"a copy of {entry} and conf/ (the code folder was not a git repository, or the commit is gone)", "."


def write_archive(job_dir: Path, dest: Path, code_dir: Path | None = None) -> list[str]:
    """A ``.tar.gz`` holding one folder that ``python <folder>/reproduce.py`` reruns. Returns its member names."""
    import yaml

    record = records.read_job_record(job_dir)
    name = dest.name.removesuffix(".gz").removesuffix(".tgz").removesuffix(".tar") or "job"
    packages = record.snapshot.get("packages") or {}
    overrides = list(record.overrides)
    seed = record.snapshot.get("seed")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        root.mkdir()
        code_note, relative = _code_tree(record, job_dir, code_dir, root / "code")
        code_path = "code" if relative == "." else f"code/{relative}"
        shutil.copy2(job_dir / records.JOB_FILE, root / records.JOB_FILE)
        (root / "config.yaml").write_text(yaml.safe_dump(record.config, sort_keys=False), encoding="utf-8")
        (root / "overrides.yaml").write_text(yaml.safe_dump(overrides), encoding="utf-8")
        (root / "snapshot.json").write_text(json.dumps(record.snapshot, indent=2) + "\n", encoding="utf-8")
        (root / "requirements.txt").write_text("".join(f"{k}=={v}\n" for k, v in packages.items()), encoding="utf-8")
        if (job_dir / PATCH_FILE).is_file():
            shutil.copy2(job_dir / PATCH_FILE, root / PATCH_FILE)
        script = root / "reproduce.py"
        script.write_text(REPRODUCE_SCRIPT.replace("@CODE_PATH@", code_path), encoding="utf-8")
        script.chmod(0o755)
        entry = str(record.snapshot.get("entry") or "main.py")
        plain = [
            "python",
            f"{code_path}/{entry}",
            *merge_overrides(overrides, [], seed, check_redacted=False),
            "hydra.run.dir=rerun",
        ]
        readme = ARCHIVE_README.format(
            code_note=code_note,
            command=f"explaunch reproduce . --code-dir {code_path}",
            plain=shlex.join(plain),
        )
        (root / "README.txt").write_text(readme, encoding="utf-8")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(dest, "w:gz") as tar:
            tar.add(root, arcname=name)
            return tar.getnames()
