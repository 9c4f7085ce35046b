"""Decide whether W&B can run online, without ever waiting on the network for long.

``wandb.init`` on a machine without network (or without an account) can wait around 100 s before giving up.
:func:`decide_wandb_mode` settles the mode first, quickly, in this order:

1. ``WANDB_MODE`` (or the older ``WANDB_OFFLINE=true``) is set: respect it.
2. No API key anywhere wandb would look (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``, the netrc
   entry for the W&B host, ``api_key`` in wandb's settings file): ``offline``.
3. A short probe of the W&B host (TCP connect, TLS for https, then an HTTP request: the server must answer,
   not merely accept) in a daemon thread, waited on for ``timeout`` seconds, so that neither DNS
   nor a silent host can hang the job: ``online`` if it answered in time, else ``offline``.

Behind a proxy that the probe cannot see through, set ``WANDB_MODE=online`` explicitly.
"""

from __future__ import annotations

import configparser
import functools
import netrc
import os
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 1.5
#: W&B modes that write a local run folder to `wandb sync` later
OFFLINE_MODES = ("offline", "dryrun")


@dataclass(frozen=True)
class WandbModeDecision:
    """The mode to pass to ``wandb.init`` (``online``, ``offline``, ``disabled``, ...) and why."""

    mode: str
    reason: str

    @property
    def offline(self) -> bool:
        return self.mode in OFFLINE_MODES


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("HOME") or Path.home())


def _settings_file(environ: Mapping[str, str]) -> Path:
    config_dir = environ.get("WANDB_CONFIG_DIR")
    return Path(config_dir) / "settings" if config_dir else _home(environ) / ".config" / "wandb" / "settings"


def _read_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``[default]`` section of wandb's global settings file (empty when absent or unreadable)."""
    parser = configparser.ConfigParser()
    try:
        parser.read(_settings_file(environ))
    except (configparser.Error, OSError, UnicodeDecodeError):
        return {}
    return dict(parser["default"]) if parser.has_section("default") else {}


def base_url(environ: Mapping[str, str] | None = None) -> str:
    """The W&B server: ``WANDB_BASE_URL``, else ``base_url`` of the settings file, else the public cloud."""
    environ = os.environ if environ is None else environ
    return environ.get("WANDB_BASE_URL") or _read_settings(environ).get("base_url") or DEFAULT_BASE_URL


def _netrc_key(environ: Mapping[str, str], host: str) -> str | None:
    home = _home(environ)
    candidates = [Path(environ["NETRC"]).expanduser()] if environ.get("NETRC") else [home / ".netrc", home / "_netrc"]
    for path in candidates:
        try:
            entry = netrc.netrc(str(path)).authenticators(host)
        except (OSError, netrc.NetrcParseError):
            continue
        if entry and entry[2]:
            return entry[2]
    return None


def find_api_key(environ: Mapping[str, str] | None = None) -> str | None:
    """Where wandb would find credentials, or ``None``: the environment, the netrc entry for the W&B host,
    or the settings file (the value is a description of the source, never the key itself)."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    if environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "WANDB_IDENTITY_TOKEN_FILE"
    host = urlsplit(base_url(environ)).hostname or ""
    if _netrc_key(environ, host):
        return f"netrc entry for {host}"
    if _read_settings(environ).get("api_key"):
        return "wandb settings file"
    return None


def _speaks_http(sock: socket.socket, host: str) -> bool:
    sock.sendall(f"HEAD / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    return sock.recv(5) == b"HTTP/"


def _answers(url: str, timeout: float) -> bool:
    """Whether the server at ``url`` accepts a TCP connection and answers an HTTP request (over TLS for https)."""
    parts = urlsplit(url)
    secure = parts.scheme != "http"
    host = parts.hostname or ""
    with socket.create_connection((host, parts.port or (443 if secure else 80)), timeout=timeout) as sock:
        sock.settimeout(timeout)
        if not secure:
            return _speaks_http(sock, host)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # only "does it answer"; wandb itself verifies
        with context.wrap_socket(sock, server_hostname=host) as tls:
            return _speaks_http(tls, host)


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the W&B server at ``url`` answers within ``timeout`` seconds in all (DNS included): the probe
    runs in a daemon thread, which is abandoned if it is late."""
    result: list[bool] = []

    def target() -> None:
        try:
            result.append(_answers(url, timeout))
        except (OSError, ValueError):
            result.append(False)

    thread = threading.Thread(target=target, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


@functools.lru_cache(maxsize=8)
def _cached_probe(url: str, timeout: float) -> bool:
    return probe(url, timeout)


def decide_wandb_mode(environ: Mapping[str, str] | None = None, timeout: float = PROBE_TIMEOUT_S,
                      cache: bool = True) -> WandbModeDecision:
    """The W&B mode for this process (see the module docstring); takes at most about ``timeout`` seconds.

    Args:
        environ: the environment to read (default ``os.environ``); ``HOME`` in it locates netrc and settings.
        timeout: seconds the probe may take, DNS included.
        cache: reuse the probe's answer for the same server within the process (a multirun's jobs).
    """
    environ = os.environ if environ is None else environ
    mode = environ.get("WANDB_MODE", "").strip().lower()
    if mode:
        return WandbModeDecision(mode, "WANDB_MODE is set")
    if environ.get("WANDB_OFFLINE", "").strip().lower() in ("1", "true", "yes"):
        return WandbModeDecision("offline", "WANDB_OFFLINE is set")
    source = find_api_key(environ)
    if source is None:
        return WandbModeDecision("offline", "no W&B API key (WANDB_API_KEY, netrc or wandb settings)")
    url = base_url(environ)
    answered = _cached_probe(url, timeout) if cache else probe(url, timeout)
    if answered:
        return WandbModeDecision("online", f"API key from {source}; {url} answered")
    return WandbModeDecision("offline", f"API key from {source}, but {url} did not answer within {timeout:g} s")
