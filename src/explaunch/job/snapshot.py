"""What a job ran on: code (git), packages, platform, hardware, seed, command line, selected environment.

Secrets never leave the process (explaunch.redaction says what a secret is): a secret environment variable is
recorded as ``<redacted>``, credentials inside URLs are stripped. ``git.patch`` holds the uncommitted changes of
tracked files; untracked files only with ``EXPLAUNCH_PATCH_UNTRACKED=1``, and then never one that looks like
credentials (``.env*``, ``*.pem``, ``*.key``, ``id_*``...) nor one over 1 MB. Its text is redacted as a config is
(a tracked ``conf/db.yaml`` edited to ``password: ...`` is a change of a secret too): a patch with a redacted line
may no longer apply.

``env_hash`` changes when the code (commit or uncommitted changes), the installed packages, the Python build or the
hardware model change, and not otherwise (not with the host name, the time or the job's config).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from explaunch.redaction import REDACTED, is_secret_variable, looks_like_credentials, redact, redact_patch

# Environment variables worth recording (prefixes); anything else stays out of the record.
ENV_PREFIXES = (
    "CUDA_",
    "NVIDIA_",
    "SLURM_",
    "SLURMD_",
    "SUBMITIT_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "TORCH",
    "PYTORCH_",
    "HF_",
    "TRANSFORMERS_",
    "HYDRA_",
    "MLFLOW_",
    "EXPLAUNCH_",
    "PYTHONHASHSEED",
    "VIRTUAL_ENV",
)
PATCH_FILE = "git.patch"
_MAX_UNTRACKED_BYTES = 1_000_000
UNTRACKED_VARIABLE = "EXPLAUNCH_PATCH_UNTRACKED"  # 1: git.patch also holds untracked files (never credentials)


@dataclass(frozen=True)
class GitState:
    commit: str | None
    branch: str | None
    dirty: bool
    patch_file: str | None  # uncommitted changes of tracked files (untracked ones if asked) as a patch
    patch_sha256: str | None
    root: str | None


@dataclass(frozen=True)
class Snapshot:
    git: GitState
    python: str
    executable: str
    packages: dict[str, str]
    packages_sha256: str
    platform: dict[str, str]
    cpu: dict[str, Any]
    memory_total_bytes: int
    gpus: list[dict[str, Any]]
    seed: int | None
    overrides: list[str]
    command: str
    environment: dict[str, str]
    slurm: dict[str, str] = field(default_factory=dict)
    env_hash: str = ""
    code_dir: str = ""  # the folder holding the entry script and conf/: where `explaunch reproduce` reruns it
    entry: str = "main.py"  # the entry script, relative to code_dir

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(code_dir: Path, job_dir: Path | None, environ: Mapping[str, str] | None = None) -> GitState:
    """Commit, branch and the uncommitted changes of the repository holding ``code_dir`` (a patch file if dirty)."""
    both = _git(["rev-parse", "--show-toplevel", "HEAD", "--abbrev-ref", "HEAD"], code_dir)  # one process, not 3
    if both is not None and len(both.split()) == 3:
        root, commit, branch = both.split("\n")[:3]
    else:  # not a repository, or one without a commit yet
        root = (_git(["rev-parse", "--show-toplevel"], code_dir) or "").strip()
        if not root:
            return GitState(None, None, False, None, None, None)
        commit, branch = "", (_git(["rev-parse", "--abbrev-ref", "HEAD"], Path(root)) or "").strip()
    top = Path(root.strip())
    commit_id, branch_name = commit.strip() or None, branch.strip() or None
    patch = _git(["diff", "HEAD", "--binary"], top) or ""
    for name in untracked_files(top, environ):
        # git diff --no-index exits 1 when files differ, which they do: read stdout regardless
        proc = subprocess.run(
            ["git", "diff", "--no-index", "--binary", "--", "/dev/null", name],
            cwd=top,
            capture_output=True,
            text=True,
            check=False,
        )
        patch += proc.stdout
    dirty = bool(patch)
    patch = redact_patch(patch)  # the hash too is of the redacted text: a secret is not guessed back from it
    patch_file = None
    if dirty and job_dir is not None:
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / PATCH_FILE).write_text(patch, encoding="utf-8")
        patch_file = PATCH_FILE
    digest = hashlib.sha256(patch.encode()).hexdigest() if dirty else None
    return GitState(commit_id, branch_name, dirty, patch_file, digest, str(top))


def untracked_files(top: Path, environ: Mapping[str, str] | None = None) -> list[str]:
    """The untracked files ``git.patch`` may hold: none unless ``EXPLAUNCH_PATCH_UNTRACKED=1``; then those not
    ignored, not looking like credentials and not over the size limit."""
    setting = (os.environ if environ is None else environ).get(UNTRACKED_VARIABLE, "")
    if setting.strip().lower() not in ("1", "true", "yes"):
        return []
    listed = (_git(["ls-files", "--others", "--exclude-standard", "-z"], top) or "").split("\0")
    return [
        name
        for name in sorted(n for n in listed if n)
        if not looks_like_credentials(name)
        and (top / name).is_file()
        and not (top / name).is_symlink()
        and (top / name).stat().st_size <= _MAX_UNTRACKED_BYTES
    ]


def installed_packages() -> dict[str, str]:
    """Installed distributions, name (lower case) -> version; computed once per process and ``sys.path``."""
    return dict(_installed_packages(tuple(sys.path)))


@functools.lru_cache(maxsize=4)
def _installed_packages(path: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    found: dict[str, str] = {}
    for dist in metadata.distributions(path=list(path)):
        name, version = _name_and_version(dist)
        if name and name.lower() not in found:  # the first on sys.path is the one imported
            found[name.lower()] = version
    return tuple(sorted(found.items()))


def _name_and_version(dist: metadata.Distribution) -> tuple[str | None, str]:
    """From the metadata file's header lines: parsing the whole file as email (importlib's way) costs ~1 ms each."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    name = version = None
    for line in text.splitlines():
        if not line.strip():
            break  # end of the headers
        if line.startswith("Name:") and name is None:
            name = line[5:].strip()
        elif line.startswith("Version:") and version is None:
            version = line[8:].strip()
        if name and version:
            break
    if name is None or version is None:
        name, version = dist.metadata["Name"], dist.version
    return name, version


def cpu_info() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"model": model, "logical_cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0))}


def gpu_info() -> list[dict[str, Any]]:
    """NVIDIA GPUs through NVML (nvidia-ml-py); an empty list where there is no driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(
                {
                    "index": index,
                    "name": pynvml.nvmlDeviceGetName(handle),
                    "uuid": pynvml.nvmlDeviceGetUUID(handle),
                    "memory_total_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                    "driver": driver,
                    "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}",
                }
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def selected_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        k: REDACTED if is_secret_variable(k) else str(redact(k, v))
        for k, v in sorted(environ.items())
        if k.startswith(ENV_PREFIXES)
    }


def compute_env_hash(snapshot: Snapshot) -> str:
    """Code, packages, Python and hardware models: what can change a result while the config stays the same."""
    basis = {
        "commit": snapshot.git.commit,
        "patch": snapshot.git.patch_sha256,
        "packages": snapshot.packages_sha256,
        "python": snapshot.python,
        "machine": snapshot.platform.get("machine"),
        "system": snapshot.platform.get("system"),
        "cpu": snapshot.cpu.get("model"),
        "cores": snapshot.cpu.get("usable_cores"),
        "gpus": sorted(g["name"] for g in snapshot.gpus),
        "driver": sorted({g["driver"] for g in snapshot.gpus}),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def take_snapshot(
    *,
    code_dir: Path,
    job_dir: Path | None,
    seed: int | None,
    overrides: list[str],
    entry: str = "main.py",
    environ: Mapping[str, str] | None = None,
) -> Snapshot:
    """``environ``: the environment to record (default ``os.environ``), for a snapshot taken in another thread."""
    import psutil

    packages = installed_packages()
    environment = selected_environment(os.environ if environ is None else environ)
    snapshot = Snapshot(
        git=git_state(code_dir, job_dir, environ),
        python=sys.version.split()[0] + f" ({platform.python_implementation()})",
        executable=sys.executable,
        packages=packages,
        packages_sha256=hashlib.sha256(json.dumps(packages, sort_keys=True).encode()).hexdigest(),
        platform={
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "libc": "-".join(platform.libc_ver()),
            "node": platform.node(),
        },
        cpu=cpu_info(),
        memory_total_bytes=int(psutil.virtual_memory().total),
        gpus=gpu_info(),
        seed=seed,
        overrides=list(overrides),
        command=" ".join(["python", entry, *(_shell_quote(o) for o in overrides)]),
        environment=environment,
        slurm={k: v for k, v in environment.items() if k.startswith(("SLURM_", "SLURMD_"))},
        code_dir=str(code_dir.resolve()),
        entry=entry,
    )
    return dataclasses.replace(snapshot, env_hash=compute_env_hash(snapshot))


def _shell_quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
