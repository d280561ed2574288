"""What an install costs: the core (``pip install explaunch``: the Hydra plugins, recording, records, review, the
dashboard) against the full one (``explaunch[all]``: torch, transformers, ultralytics, ...), each in a fresh venv of
this interpreter, side by side in one run: pip's wall time, the venv's size on disk, and how many packages it holds.

Both take the versions of ``requirements/constraints.txt`` (what ``make setup`` installs), so the figures are those
of the lock. pip's cache is used as it would be on a machine that installed once before; the first run downloads.

    .venv/bin/python -m benchmarks.install_footprint [--python PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"


def venv_size_mb(venv: Path) -> float:
    total = 0
    for folder, _, files in os.walk(venv):
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return total / 1e6


def install(python: str, target: str, workdir: Path) -> dict[str, float | int]:
    venv = Path(tempfile.mkdtemp(dir=workdir)) / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    start = time.perf_counter()
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS), target],
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - start
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"], check=True, capture_output=True, text=True
    )
    return {"install_s": wall, "size_mb": venv_size_mb(venv), "packages": len(json.loads(listed.stdout))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the fresh venvs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "install_footprint.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(workdir / "dist"), str(ROOT)],
            check=True,
            capture_output=True,
        )
        (wheel,) = (workdir / "dist").glob("explaunch-*.whl")
        core = install(args.python, str(wheel), workdir)
        full = install(args.python, f"explaunch[all] @ {wheel.as_uri()}", workdir)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "python": subprocess.run([args.python, "--version"], check=True, capture_output=True, text=True).stdout.strip(),
        "core": core,
        "full": full,
        "ratios_full_over_core": {k: full[k] / core[k] for k in ("install_s", "size_mb", "packages")},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':6} {'install':>9} {'size':>10} {'packages':>9}")
    for name, row in (("core", core), ("full", full)):
        print(f"{name:6} {row['install_s']:8.1f}s {row['size_mb']:8.0f}MB {row['packages']:9d}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
