"""The PNGs behind response URLs: kept in memory under unguessable ids until they expire.

A URL is a capability (like the API's signed blob URLs): whoever holds it may download the image
until `ttl_s` has passed; after that, or for an id never issued, the server answers 404."""

from __future__ import annotations

import collections
import secrets
import threading
import time


class ImageStore:
    def __init__(self, ttl_s: float, max_bytes: int, clock=time.monotonic) -> None:
        self.ttl_s, self.max_bytes, self._clock = ttl_s, max_bytes, clock
        # id -> (expiry, png)
        self._items: collections.OrderedDict[str, tuple[float, bytes]] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, png: bytes) -> str:
        key = secrets.token_urlsafe(24)
        with self._lock:
            self._evict(self._clock())
            self._items[key] = (self._clock() + self.ttl_s, png)
            self._bytes += len(png)
            while self._bytes > self.max_bytes and len(self._items) > 1:  # oldest first
                self._bytes -= len(self._items.popitem(last=False)[1][1])
        return key

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] <= self._clock():
                self._bytes -= len(self._items.pop(key)[1])
                return None
            return item[1]

    def _evict(self, now: float) -> None:
        # Insertion order is expiry order (one ttl for all), so expired items sit at the front.
        while self._items:
            key, (expiry, png) = next(iter(self._items.items()))
            if expiry > now:
                break
            del self._items[key]
            self._bytes -= len(png)

    def __len__(self) -> int:
        return len(self._items)
