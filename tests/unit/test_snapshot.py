from __future__ import annotations

import hashlib
import subprocess
import uuid
from pathlib import Path

import pytest

from explaunch.job.snapshot import compute_env_hash, git_state, selected_environment, take_snapshot
from explaunch.redaction import REDACTED, install_log_redaction, redact, redact_override, redact_tree


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text("print('v1')\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "first")
    return root


@pytest.mark.parametrize(
    "name", ["HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "db_password", "MY_API_KEY", "gcp_credentials", "tracking.api_token"]
)
def test_secret_names_are_redacted(name: str) -> None:
    assert redact(name, "value-123") == REDACTED


@pytest.mark.parametrize(
    "name", ["batching.max_new_tokens", "model.num_key_value_heads", "model.tokenizer_path", "keyboard", "monkey"]
)
def test_model_settings_that_merely_contain_a_secret_word_are_kept(name: str) -> None:
    assert redact(name, 16) == 16


def test_credentials_in_urls_are_stripped() -> None:
    assert redact("MLFLOW_TRACKING_URI", "https://alice:pw@mlflow.example.org/") == "https://mlflow.example.org/"
    assert redact("uri", "sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_redact_tree_reaches_nested_keys() -> None:
    tree = {"tracking": {"api_token": "abc", "uri": "http://u:p@h"}, "items": [{"password": "x"}], "seed": 1}
    assert redact_tree(tree) == {
        "tracking": {"api_token": REDACTED, "uri": "http://h"},
        "items": [{"password": REDACTED}],
        "seed": 1,
    }


def test_only_selected_variables_are_recorded_and_secrets_never() -> None:
    env = {
        "CUDA_VISIBLE_DEVICES": "0",
        "HOME": "/root",
        "EXPLAUNCH_API_TOKEN": "sekrit",
        "HF_HUBKEY": "k",
        "SLURM_JOB_ID": "42",
    }
    assert selected_environment(env) == {
        "CUDA_VISIBLE_DEVICES": "0",
        "EXPLAUNCH_API_TOKEN": REDACTED,
        "HF_HUBKEY": REDACTED,  # environment variables: any name containing a secret word
        "SLURM_JOB_ID": "42",
    }


def test_clean_repository_has_its_commit_and_no_patch(repo: Path, tmp_path: Path) -> None:
    state = git_state(repo, tmp_path / "job")
    assert state.commit is not None and len(state.commit) == 40
    assert state.branch == "main"
    assert not state.dirty and state.patch_file is None


def test_uncommitted_changes_are_saved_as_a_patch_and_untracked_files_only_when_asked(
    repo: Path, tmp_path: Path
) -> None:
    (repo / "train.py").write_text("print('v2')\n")
    (repo / "new_module.py").write_text("X = 1\n")
    git_state(repo, tmp_path / "default")
    assert "+X = 1" not in (tmp_path / "default" / "git.patch").read_text()
    job = tmp_path / "job"
    state = git_state(repo, job, {"EXPLAUNCH_PATCH_UNTRACKED": "1"})
    assert state.dirty and state.patch_file == "git.patch"
    patch = (job / "git.patch").read_text()
    assert "+print('v2')" in patch and "-print('v1')" in patch
    assert "+X = 1" in patch
    check = subprocess.run(["git", "apply", "--check", "-R", str(job / "git.patch")], cwd=repo, capture_output=True)
    assert check.returncode == 0, check.stderr  # the patch is exactly the working tree's difference


def test_untracked_credentials_and_big_files_never_go_into_the_patch(repo: Path, tmp_path: Path) -> None:
    secrets = {".env": "A=SEKRIT", ".env.local": "B=SEKRIT", "deploy/server.pem": "SEKRIT", "tls.key": "SEKRIT"}
    secrets |= {"id_ed25519": "SEKRIT", "conf/credentials.json": "SEKRIT", "prod.env": "SEKRIT"}
    for name, text in secrets.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text + "\n")
    (repo / "big.bin").write_bytes(b"SEKRIT" * 200_000)
    (repo / "notes.txt").write_text("fine\n")
    state = git_state(repo, tmp_path / "job", {"EXPLAUNCH_PATCH_UNTRACKED": "1"})
    patch = (tmp_path / "job" / "git.patch").read_text()
    assert state.dirty and "+fine" in patch and "SEKRIT" not in patch


def test_secrets_in_tracked_config_files_are_redacted_in_the_patch_on_added_removed_and_context_lines(
    repo: Path, tmp_path: Path
) -> None:
    """A tracked config edited to hold a secret is a change like any other: git.patch (uploaded to MLflow, served by
    the dashboard) holds it with the values of secret-named keys redacted, and every secret text the process knows
    (here a job's ``params.api_token``) replaced wherever it appears."""
    old, new, kept, known = (f"SEKRIT-{name}-{uuid.uuid4().hex}" for name in ("old", "new", "kept", "known"))
    install_log_redaction({"params": {"api_token": known}})  # as the job's start does with its config
    (repo / "conf").mkdir()
    (repo / "conf" / "db.yaml").write_text(f"api_key: {kept}\nhost: db.example.org\npassword: {old}\n")
    (repo / "service.json").write_text('{\n  "name": "svc",\n  "note": "n"\n}\n')
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "config")
    (repo / "conf" / "db.yaml").write_text(
        f"api_key: {kept}\nhost: db.example.org\npassword: {new}\nbatching:\n  max_new_tokens: 16\n"
        "db_password: ${oc.env:DB_PW}\n"
    )
    (repo / "service.json").write_text(f'{{\n  "name": "svc",\n  "token": "{new}",\n  "note": "n"\n}}\n')
    (repo / "train.py").write_text(f"print('v2')  # calls the API with {known}\nmodel = load('m', token=token)\n")
    (repo / "settings.env.example").write_text("x")
    git(repo, "add", "settings.env.example")
    (repo / "settings.env.example").write_text(f"export DB_PASSWORD={new}\nsecret_key = '{new}'\n")

    state = git_state(repo, tmp_path / "job")
    patch = (tmp_path / "job" / "git.patch").read_text()
    assert [s for s in (old, new, kept, known) if s in patch] == []
    assert "\n-password: <redacted>\n+password: <redacted>\n" in patch
    assert "\n api_key: <redacted>\n" in patch  # a context line
    assert '\n+  "token": "<redacted>",\n' in patch
    assert "\n+export DB_PASSWORD=<redacted>\n+secret_key = '<redacted>'\n" in patch
    assert "\n+print('v2')  # calls the API with <redacted>\n+model = load('m', token=token)\n" in patch  # code kept
    assert "\n+  max_new_tokens: 16\n" in patch and "\n+db_password: ${oc.env:DB_PW}\n" in patch
    assert state.patch_sha256 == hashlib.sha256(patch.encode()).hexdigest()


def test_outside_a_repository_git_is_empty(tmp_path: Path) -> None:
    state = git_state(tmp_path, tmp_path)
    assert state.commit is None and not state.dirty


def test_env_hash_changes_with_code_and_packages_only(repo: Path, tmp_path: Path) -> None:
    first = take_snapshot(code_dir=repo, job_dir=tmp_path / "a", seed=1, overrides=["batch=8"])
    same = take_snapshot(code_dir=repo, job_dir=tmp_path / "b", seed=2, overrides=["batch=16"])
    assert first.env_hash == same.env_hash  # seed and overrides are config, not environment
    (repo / "train.py").write_text("print('v3')\n")
    changed_code = take_snapshot(code_dir=repo, job_dir=tmp_path / "c", seed=1, overrides=[])
    assert changed_code.env_hash != first.env_hash
    other_packages = first.__class__(**{**first.__dict__, "packages_sha256": "0" * 64})
    assert compute_env_hash(other_packages) != first.env_hash


@pytest.mark.extras
def test_snapshot_holds_platform_packages_and_command(repo: Path, tmp_path: Path) -> None:
    snap = take_snapshot(code_dir=repo, job_dir=tmp_path, seed=3, overrides=["model=mistral", "lam=0.5"])
    assert snap.packages["hydra-core"] and snap.packages["torch"].startswith("2.14")
    assert snap.cpu["logical_cores"] >= 1 and snap.memory_total_bytes > 0
    assert snap.command == "python main.py model=mistral lam=0.5"
    assert snap.seed == 3
    assert isinstance(snap.gpus, list)


def test_secret_overrides_are_redacted_and_others_kept() -> None:
    assert redact_override("tracking.api_token=abc") == "tracking.api_token=<redacted>"
    assert redact_override("+db.password=x") == "+db.password=<redacted>"
    assert redact_override("batching.max_new_tokens=16") == "batching.max_new_tokens=16"
    assert redact_override("-m") == "-m"
