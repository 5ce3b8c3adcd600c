"""`moco serve`: any configured collaboration as one OpenAI-compatible model, and the CoLM server role.

    build_service(config, role="collaboration" | "colm-server", ...)  -> the service
    create_app(service, token=..., max_body_bytes=...)                 -> an ASGI app (FastAPI)
    serve(config, host, port, ...)                                     -> run it with uvicorn
"""
from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

from moco.cache import NullCache, ResponseCache
from moco.config import config_notes, parse_config, read_config_file
from moco.errors import ConfigError
from moco.serve.served_task import SERVED, served_task

log = logging.getLogger(__name__)
ROLES = ("collaboration", "colm-server")


def load_serve_config(path: str | Path, role: str = "collaboration", sets: Any = (), *, limit: int | None = None,
                      seed: int | None = None):
    """An experiment config whose `task` is optional (without one, requests form a generation-only task), with
    `--set`/`--seed` overrides (and `--limit`, which only a task has). A colm-server config with
    `method: client_server_colm_vlm` needs no model either."""
    from moco.overrides import apply_overrides

    raw = read_config_file(path)
    with config_notes():  # its warnings once, and only for a config that is accepted
        has_task = "task" in apply_overrides(raw, sets, seed=seed)
        raw = apply_overrides(raw, sets, limit=limit if has_task else None, seed=seed)
        if not has_task:
            raw["task"] = {"name": SERVED}
        if role == "colm-server" and not raw.get("models"):
            raw["models"] = ["scripted:unused"]
        return parse_config(raw), has_task


def serve_plan(cfg: Any, has_task: bool, data_dir: str | None = None, backends: dict[str, Any] | None = None):
    """The plan `moco serve` runs — and `moco validate` checks for a config without a task — so the two give
    one verdict: `runner.plan` on the config's task, or on the requests' generation-only pseudo-task with the
    methods' documented defaults for what dev data would have chosen (`Plan.notes` says which)."""
    from moco.runner import plan

    if has_task:
        return plan(cfg, data_dir, backends)
    return plan(cfg, data_dir, backends, task=served_task(), served=True)


def build_service(config: str | Path, *, role: str = "collaboration", name: str | None = None,
                  cache: bool = False, data_dir: str | None = None, window_ms: float = 5.0, max_batch: int = 32,
                  gather_timeout_s: float = 120.0, expect: int = 1, log_dir: Path | None = None,
                  backends: dict[str, Any] | None = None, max_queue: int = 256):
    if role not in ROLES:
        raise ConfigError(f"unknown role '{role}' (use {' or '.join(ROLES)})")
    cfg, has_task = load_serve_config(config, role)
    store = ResponseCache() if cache else NullCache()
    if role == "colm-server":
        from moco.serve.colm_server import ColmServer

        return ColmServer(cfg, name=name, cache=store, window_ms=window_ms, max_batch=max_batch,
                          gather_timeout_s=gather_timeout_s, default_expected=expect, log_dir=log_dir,
                          backends=backends, max_pending=max_queue)
    from moco.serve.collab import CollaborationService

    return CollaborationService(cfg, has_task=has_task, name=name, cache=store, data_dir=data_dir,
                                window_ms=window_ms, max_batch=max_batch, log_dir=log_dir, backends=backends,
                                max_pending=max_queue)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """Refuse a port this process cannot listen on before the start-up run (which can take minutes), not after."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(addr)
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def serve(service: Any, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          max_body_bytes: int = 4 * 2**20, log_level: str = "warning", request_timeout_s: float = 600.0) -> None:
    """Run the server until interrupted."""
    import uvicorn

    from moco.serve.app import create_app

    app = create_app(service, token=token, max_body_bytes=max_body_bytes, request_timeout_s=request_timeout_s)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
    finally:
        service.close()
