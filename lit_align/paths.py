"""Local path or hub name: the one rule for every ``*_name_or_path`` and data ``path:`` a recipe holds.

``from_pretrained`` and ``load_dataset`` send any name that is not an existing local path to the hub, so a typo
in a local path (``models/does-not-exist``, ``./models/x``) used to end in five retries and a connection error,
or an ``HFValidationError`` about repository ids, neither of which mentions the typo. A name that could not be
a hub id (``name`` or ``org/name``) is a local path, and a missing one is an error at once; a name that could
be a hub id is one, and with the hub offline or unreachable it is refused at once unless the local cache has it.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE",)


def looks_local(path: str, suffixes: tuple[str, ...] = ()) -> bool:
    """True for names that cannot be a hub id (``name`` or ``org/name``): ``./x``, ``../x``, ``/x``, ``~/x``,
    ``x/``, a backslash or a second ``/``, an ``org/`` that is a local folder, or one of ``suffixes`` (data files:
    ``.jsonl``...)."""
    if path.startswith(("./", "../", "/", "~", ".\\", "..\\")) or path in (".", "..") or "\\" in path:
        return True
    if path.endswith("/") or path.count("/") > 1 or (suffixes and path.lower().endswith(suffixes)):
        return True
    return "/" in path and Path(path.split("/", 1)[0]).exists()


def hub_offline(variables: tuple[str, ...] = OFFLINE_VARIABLES) -> str | None:
    """The environment variable that puts the hub offline (``HF_HUB_OFFLINE=1``), or None."""
    truthy = ("1", "ON", "YES", "TRUE")
    return next((name for name in variables if os.environ.get(name, "").upper() in truthy), None)


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint (``HF_ENDPOINT``, a mirror, or huggingface.co) opens; asked
    once per process. Behind a proxy a direct connection says nothing, so the answer is then True."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    if not url.hostname:
        return True
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True
