"""A job packed to be rerun on another machine (``explaunch reproduce --archive``).

An archive (:func:`write_archive`) holds what another machine needs: the record, the config and overrides, the
snapshot, the package list, the code at the recorded commit with the recorded uncommitted changes applied, and a
``reproduce.py`` that runs ``explaunch reproduce`` on the unpacked folder.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from explaunch.errors import ExplaunchError
from explaunch.job.snapshot import PATCH_FILE
from explaunch.redaction import REDACTED
from explaunch.review.rerun import code_location, merge_overrides
from explaunch.sweepdir import records

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
                    redacted = REDACTED in patch.read_text(encoding="utf-8", errors="replace")
                    why = " (secrets in it were redacted: put them back by hand)" if redacted else ""
                    raise ExplaunchError(
                        f"{patch}: does not apply to commit {commit[:12]}{why}: {applied.stderr.strip()}"
                    )
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
