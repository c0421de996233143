"""Bearer-key check. Keys come from a file and/or an environment variable; only their SHA-256 digests
are kept, compared in constant time, and no key (given or expected) is ever logged or echoed."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from .errors import APIError


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def load_keys(path: Path | None, env_var: str | None) -> list[str]:
    """Keys from `path` (one per line; blank lines and '#' comments skipped) and `$env_var` (comma-separated)."""
    keys: list[str] = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"API key file {path} does not exist")
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                keys.append(line)
    if env_var and os.environ.get(env_var):
        keys += [k.strip() for k in os.environ[env_var].split(",") if k.strip()]
    return keys


class KeyChecker:
    def __init__(self, keys: list[str], allow_no_auth: bool = False) -> None:
        if not keys and not allow_no_auth:
            raise ValueError("no API keys configured: give a key file or set the key environment variable "
                             "(or allow an open server explicitly)")
        self._digests = [_digest(k) for k in keys]
        self.open = not keys

    def check(self, authorization: str | None) -> None:
        """Raise the API's 401 unless `authorization` is 'Bearer <a configured key>'."""
        if self.open:
            return
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise APIError(401, "You didn't provide an API key. You need to provide your API key in an "
                                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                           code="missing_api_key")
        given = _digest(token)
        matched = False
        for d in self._digests:  # no short-circuit: the time taken does not tell which key matched
            matched |= hmac.compare_digest(given, d)
        if not matched:
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
