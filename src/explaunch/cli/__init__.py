"""The ``explaunch`` command: review what sweeps left in their folders. One module per subcommand."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from explaunch import __version__
from explaunch.cli import attach as attach_cli
from explaunch.cli import cancel as cancel_cli
from explaunch.cli import clean as clean_cli
from explaunch.cli import compare as compare_cli
from explaunch.cli import dashboard, report
from explaunch.cli import reproduce as reproduce_cli
from explaunch.cli import runs as runs_cli
from explaunch.cli import status as status_cli
from explaunch.cli import sync as sync_cli
from explaunch.cli import validate as validate_cli
from explaunch.errors import ExplaunchError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="explaunch",
        description="Review explaunch sweeps. Run sweeps with: python main.py -m key=a,b other=1,2",
    )
    parser.add_argument("--version", action="version", version=f"explaunch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report.add_parser(commands)
    compare_cli.add_parser(commands)
    dashboard.add_parser(commands)
    runs_cli.add_parser(commands)
    reproduce_cli.add_parser(commands)
    clean_cli.add_parser(commands)
    sync_cli.add_parser(commands)
    validate_cli.add_parser(commands)
    status_cli.add_parser(commands)
    attach_cli.add_parser(commands)
    cancel_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from explaunch.settings import load_dotenv_or_exit

    load_dotenv_or_exit()  # ./.env: MLFLOW_TRACKING_URI and the rest, where the environment does not give them
    try:
        code: int = args.handler(args)
    except ExplaunchError as ex:
        print(f"error: {ex}", file=sys.stderr)
        return ex.exit_code
    return code


def entry() -> None:
    """Console-script entry point."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `explaunch report ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        code = 0
    sys.exit(code)
