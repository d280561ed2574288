"""explaunch's entry point: Hydra composes conf/, explaunch.job.task.run does the job."""

import sys

# Python parses the whole file before it runs this check: the file stays valid Python 2.7 and 3.0+ (no f-strings, no
# annotations; mypy reads `# type:` comments), so that `python main.py` on an old cluster's Python 2 says what to
# install in one line instead of a SyntaxError.
if sys.version_info < (3, 11):  # noqa: UP036 -- before any import that would fail with a traceback
    sys.exit(
        "error: explaunch needs Python 3.11 to 3.13, this is " + sys.version.split()[0] + ": "
        "run it with python3.11 or newer (make setup makes .venv with python3.11)"
    )

from pathlib import Path

import hydra
from omegaconf import DictConfig  # noqa: F401 -- in the type comment of main() below

from explaunch.config import register_configs
from explaunch.job import task

register_configs(Path(__file__).parent)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):  # type: (DictConfig) -> dict[str, object]
    return task.run(cfg)


if __name__ == "__main__":
    from explaunch.launch.preflight import check_command_line
    from explaunch.settings import load_dotenv_or_exit

    load_dotenv_or_exit()  # ./.env: settings the environment does not give (MLFLOW_TRACKING_URI, EXPLAUNCH_*)

    check_command_line(Path(__file__).parent / "conf", "config")
    from explaunch._compat import exit_fast

    status = 0  # type: object
    try:
        main()
    except SystemExit as ex:
        status = ex.code
    exit_fast(status)  # everything is written: not Python's teardown (1.8 s after a 512-job sweep)
