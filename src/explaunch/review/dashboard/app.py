"""The dashboard's web app (FastAPI, which MLflow already brings): the page, its JSON API and the sweep's files.

Read-only: every route is GET. ``/files/<path>`` serves only regular files inside the served folder, found by
resolving the path (symlinks included) and checking it is still inside; ``..``, absolute paths, hidden entries
(``.hydra/``, Hydra's internals) and anything that resolves outside answer 404. Files are sent as plain
text (images as images) under a sandboxing Content-Security-Policy, so an HTML file in a job folder cannot run on
the dashboard's origin. The page's own CSP allows only its own script and styles.

Every request for a sweep's data (``/api/...``, ``/files/...``) needs the dashboard's token (loopback is not
private on a login node shared with other users): as ``?token=`` in the URL printed at start (the answer then sets
it as an HTTP-only cookie, so that the page's own requests carry it), as that cookie, or as an ``Authorization:
token ...`` header. Without it, or with a wrong one: 403. The page shell (``/``, ``/static/...``: the same bytes for
every sweep, no data in them) is served without it, as Jupyter serves its login page; fetched without the token it
says where to find it. The token is compared in constant time and never logged (uvicorn's access log is off).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware

from explaunch.errors import ExplaunchError
from explaunch.review import rows as review
from explaunch.review import tradeoff
from explaunch.review.dashboard.state import sweep_state
from explaunch.sweepdir.reader import SweepReader, find_sweeps, is_sweep

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
FILE_CSP = "default-src 'none'; sandbox"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
FILE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".json": "application/json"}
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


class SafeJSONResponse(JSONResponse):
    """JSON with ``<``, ``>`` and ``&`` written as ``\\u003c``...: inert even if something renders it as HTML."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode("utf-8")


def static_text(name: str) -> str:
    return resources.files("explaunch.review.dashboard").joinpath("static", name).read_text(encoding="utf-8")


def safe_file(root: Path, relative: str) -> Path | None:
    """The regular file ``relative`` names inside ``root`` (already resolved), or None: never a path outside."""
    if not relative or "\x00" in relative or "\\" in relative or relative.startswith("/"):
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    try:
        target = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target


def cookie_name(token: str) -> str:
    """One cookie per dashboard: cookies are shared by every port of a host, and so by every dashboard on it."""
    return "explaunch-" + hashlib.sha256(token.encode()).hexdigest()[:12]


def presented_token(request: Request, cookie: str) -> tuple[str, bool]:
    """The token a request carries, and whether it came in the URL (then the answer sets the cookie)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "token" and value:
        return value.strip(), False
    if "token" in request.query_params:
        return request.query_params["token"], True
    return request.cookies.get(cookie, ""), False


def create_app(root: Path, allowed_hosts: list[str] | None = None, token: str | None = None) -> FastAPI:
    """The app serving ``root``: one sweep folder, or a folder of sweeps (``multirun/``) to choose from.

    ``allowed_hosts``: the Host headers accepted (loopback names by default), against DNS rebinding. ``token``: what
    every request must carry (None: none, for a caller that guards the app itself)."""
    root = root.resolve()
    reader = SweepReader(root)
    app = FastAPI(title="explaunch dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    cookie = cookie_name(token or "")

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        in_url = False
        if token is not None:
            presented, in_url = presented_token(request, cookie)
            shell = request.url.path == "/" or request.url.path.startswith("/static/")
            if not shell and not hmac.compare_digest(presented.encode(), token.encode()):
                return Response(
                    "403: this dashboard needs its token: open the URL it printed (…/?token=...)\n",
                    status_code=403,
                    media_type="text/plain; charset=utf-8",
                    headers={"Cache-Control": "no-store", "Content-Security-Policy": FILE_CSP},
                )
        response: Response = await call_next(request)
        if in_url and hmac.compare_digest(presented.encode(), str(token).encode()):
            response.set_cookie(cookie, str(token), httponly=True, samesite="strict", path="/")
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_NAMES)  # checked first

    def sweep_dir(sweep: str | None) -> Path:
        path = root if sweep in (None, "", ".") else safe_dir(root, sweep)
        if path is None or not is_sweep(path):
            raise HTTPException(404, "no such sweep")
        return path

    @app.get("/")
    def page() -> Response:
        return Response(static_text("index.html"), media_type="text/html; charset=utf-8")

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(404, "not found")
        return Response(static_text(name), media_type=f"{STATIC_FILES[name]}; charset=utf-8")

    @app.get("/api/sweeps")
    def sweeps() -> Response:
        return SafeJSONResponse({"root": str(root), "sweeps": find_sweeps(root)})

    @app.get("/api/sweep")
    def sweep(sweep: str | None = None, metric: str | None = None, param: str | None = None) -> Response:
        return SafeJSONResponse(sweep_state(reader, sweep_dir(sweep), metric, param))

    @app.get("/api/tradeoff")
    def tradeoff_view(
        sweep: str | None = None,
        x: str | None = None,
        y: str | None = None,
        better_x: str | None = None,
        better_y: str | None = None,
    ) -> Response:
        return SafeJSONResponse(tradeoff_state(reader, sweep_dir(sweep), x, y, better_x, better_y))

    @app.get("/files/{path:path}")
    def files(path: str) -> Response:
        target = safe_file(root, path)
        if target is None:
            raise HTTPException(404, "not found")
        media_type = FILE_TYPES.get(target.suffix.lower(), "text/plain; charset=utf-8")
        return FileResponse(target, media_type=media_type, headers={"Content-Security-Policy": FILE_CSP})

    return app


def tradeoff_state(
    reader: SweepReader, sweep_dir: Path, x: str | None, y: str | None, better_x: str | None, better_y: str | None
) -> dict[str, Any]:
    """The trade-off view: ``explaunch.review.tradeoff.tradeoff`` of the sweep's completed jobs (as ``explaunch report
    --tradeoff X Y`` computes it), with the metrics to choose from and their known directions. Two metrics are
    chosen when none are given; a choice that cannot be drawn comes back as ``error``, in words for the page."""
    try:
        rows = review.load_rows(sweep_dir, reader)
    except ExplaunchError as ex:
        return {"metrics": [], "x": x, "y": y, "error": str(ex)}
    metrics = review.metric_names(review.completed(rows))
    if not x or not y:
        x, y = tradeoff.default_pair(metrics) or (None, None)
    out: dict[str, Any] = {
        "metrics": metrics,
        "x": x,
        "y": y,
        "known": {m: tradeoff.known_direction(m) for m in metrics},
    }
    if x is None or y is None:
        return {**out, "error": "no two metrics of completed jobs to set against each other yet"}
    better = {axis: v for axis, v in (("x", better_x), ("y", better_y)) if v in tradeoff.DIRECTIONS}
    try:
        return {**out, **tradeoff.tradeoff(rows, x, y, better)}
    except tradeoff.UnknownDirection as ex:
        return {**out, "error": f"is higher or lower better for {ex.metric}? choose it under 'better' ({ex.axis})"}
    except ExplaunchError as ex:
        return {**out, "error": str(ex)}


def safe_dir(root: Path, relative: str) -> Path | None:
    parts = relative.split("/")
    if "\x00" in relative or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    try:
        target = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    return target if target.is_relative_to(root) and target.is_dir() else None
