"""``explaunch dashboard [SWEEP_DIR | multirun/]``: the live web dashboard of a sweep, on 127.0.0.1 by default."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from explaunch.errors import ExplaunchError


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "dashboard",
        help="live web dashboard of a running or finished sweep (progress, jobs, charts, resources, errors)",
        description="Serve a web page that follows a sweep as it runs: counts, progress and time left, the job "
        "table, a metric against a swept parameter, resource use and failed jobs. Read-only.",
    )
    parser.add_argument(
        "sweep_dir",
        nargs="?",
        type=Path,
        default=Path("multirun"),
        help="a sweep folder (multirun/<date>/<time>), or a folder of sweeps to choose from (default: multirun)",
    )
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default: a free one, printed)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; any other makes the sweep's files readable from there)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from explaunch.review.dashboard.server import is_loopback, serve

    sweep_dir: Path = args.sweep_dir
    if not sweep_dir.is_dir():
        raise ExplaunchError(f"{sweep_dir}: no such folder (give a sweep folder or multirun/)")

    def ready(url: str) -> None:
        print(f"dashboard of {sweep_dir.resolve()} at {url}  (Ctrl-C stops it)", flush=True)
        if not is_loopback(args.host):
            print(f"warning: listening on {args.host}: anyone who can reach it can read this folder", file=sys.stderr)

    serve(sweep_dir, host=args.host, port=args.port, on_ready=ready)
    return 0
