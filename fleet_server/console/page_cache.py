"""One build of a console page per change, shared by every open console.

A page's *stamp* (a few indexed ``max()`` lookups) says whether what it
shows may have changed. :class:`PageCache` keeps the newest build of each
page with the stamp it was built at: the same stamp serves the same bytes
(and a client that sent that stamp as ``If-None-Match`` gets a ``304``);
a moved stamp rebuilds, but at most once per ``min_age_s``, however many
consoles poll and however busy the fleet is. Bodies are JSON, gzipped once
when large.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Built", "PageCache"]

_GZIP_OVER = 2048
"""Bodies larger than this are also kept gzipped, for clients that accept it."""


@dataclass(frozen=True)
class Built:
    """One build of a page: its ETag (the stamp it was built at), JSON bytes, gzipped bytes."""

    etag: str
    body: bytes
    gzipped: bytes | None
    built_at: float


class PageCache:
    """The newest build of each page (by key), rebuilt when its stamp moves, at most once per
    ``min_age_s``; at most ``capacity`` pages kept (the least recently used go first)."""

    def __init__(
        self,
        *,
        min_age_s: float = 1.0,
        capacity: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_age_s = min_age_s
        self.capacity = capacity
        self._clock = clock
        self._pages: OrderedDict[str, Built] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self.builds = 0
        """How many times a page was built (for tests and benchmarks)."""

    def get(
        self,
        key: str,
        stamp: Callable[[], str],
        build: Callable[[], Any],
        *,
        min_age_s: float | None = None,
    ) -> Built:
        """The page ``key``: cached while its stamp holds (or it is younger than ``min_age_s``,
        default the cache's), else built now by ``build`` (JSON-ready values)."""
        youngest = self.min_age_s if min_age_s is None else min_age_s
        with self._lock:
            page_lock = self._building.setdefault(key, threading.Lock())
        with page_lock:  # one build per page at a time; the others wait and take it
            cached = self._cached(key)
            if cached is not None and self._clock() - cached.built_at < youngest:
                return cached
            current = stamp()
            if cached is not None and cached.etag == _etag(current):
                return cached
            body = json.dumps(build(), separators=(",", ":"), allow_nan=False).encode("utf-8")
            built = Built(
                etag=_etag(current),
                body=body,
                gzipped=gzip.compress(body, compresslevel=5) if len(body) > _GZIP_OVER else None,
                built_at=self._clock(),
            )
            self.builds += 1
            with self._lock:
                self._pages[key] = built
                self._pages.move_to_end(key)
                while len(self._pages) > self.capacity:
                    dropped, _ = self._pages.popitem(last=False)
                    self._building.pop(dropped, None)
            return built

    def _cached(self, key: str) -> Built | None:
        with self._lock:
            found = self._pages.get(key)
            if found is not None:
                self._pages.move_to_end(key)
            return found


def _etag(stamp: str) -> str:
    return f'"{stamp}"'
