"""A content-addressed artifact cache that every trial of every sweep shares: `<root>/<kind>/<key>`.

A key hashes everything that changes an artifact's content and nothing else, so a trial that
differs from an earlier one only in its fusion head reuses that trial's forest outputs, pretrained
branches and crops. An entry is one file: a magic line, a JSON header (kind, what was hashed, the
body's length and SHA-256), then the body. It is written under a temporary name and renamed, so of
two trials writing one key at once one wins whole and readers never see half a file (on object
stores one upload is already atomic). An entry whose body does not match its header (truncated,
edited, half-synced) is treated as absent, removed and recomputed.

Each artifact is computed once even by trials that miss it at the same time (single flight): the
first takes a lease beside the entry (`<key>.bin.lease`), computes and writes it; the others wait
for the entry and load it. A lease names its holder and an expiry that a thread renews while the
holder computes, so a holder that died stops blocking at once on its own host (its process is
gone) and elsewhere once the lease expires; a waiter computes itself after `wait_limit_s`.

Bodies are numpy `.npz` files read with `allow_pickle=False` and torch state dicts read with
`weights_only=True`: nothing read from the cache can run code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow.fs as pafs

from dfu_train.atomic import write_atomic
from dfu_train.errors import ConfigError, did_you_mean
from dfu_train.liveness import holds
from dfu_train.location import Location

MAGIC = b"dfu-cache 1\n"
HEADER_LIMIT = 1 << 20
SUFFIX = ".bin"
LEASE_SUFFIX = ".lease"  # `<key>.bin.lease`: who computes the entry now, until when
LEASE_LOCK = ".lease.lock"  # one per kind folder, locked only to check and write a lease
LEASE_LIMIT = 4096  # bytes of a lease read: a longer one is damaged
LEASE_TTL_S = 120.0  # a holder that stops renewing (every third of this) is taken for dead
WAIT_LIMIT_S = 1800.0  # a waiter computes itself after this: a stuck holder blocks no one forever
POLL_S = 0.2  # a waiter looks for the entry after this, then ever more slowly, up to:
POLL_MAX_S = 0.5  # on a disk, where a look that misses is one failed open
BUCKET_POLL_MAX_S = 2.0  # on a bucket, where it is two requests
BUCKET_SETTLE_S = 1.0  # a racing writer's lease shows on a bucket within this
T = TypeVar("T")
log = logging.getLogger(__name__)


def cache_key(kind: str, parts: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of `parts` (and the kind), as 32 hex digits."""
    blob = json.dumps({"kind": kind, **parts}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CacheEntry:
    kind: str
    key: str
    size: int
    created: str
    label: str


@dataclass
class ArtifactCache:
    """The cache at `root` (a local folder or a URI pyarrow understands: `file://`, `s3://`,
    `gs://`); `enabled=False` computes everything and stores nothing. `reused` and `computed`
    list what this instance fetched, `kind:label` each, for the trial's record (an entry waited
    for while another trial computed it counts as reused)."""

    root: str
    enabled: bool = True
    filesystem: pafs.FileSystem | None = None  # given: `root` is a path inside it
    lease_ttl_s: float = LEASE_TTL_S
    wait_limit_s: float = WAIT_LIMIT_S
    reused: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.filesystem is not None:
            self._fs, self._base = self.filesystem, str(self.root).rstrip("/")
        else:
            location = Location(self.root)
            self._fs, self._base = location.filesystem, location.path

    @classmethod
    def off(cls) -> ArtifactCache:
        return cls(root=".", enabled=False)

    def fresh(self) -> ArtifactCache:
        """The same cache with empty `reused` and `computed` lists (one per fold run)."""
        return ArtifactCache(self.root, self.enabled, self.filesystem,
                             lease_ttl_s=self.lease_ttl_s, wait_limit_s=self.wait_limit_s)

    def fetch(self, kind: str, parts: Mapping[str, Any], compute: Callable[[], T], *,
              dump: Callable[[T], bytes], load: Callable[[bytes], T], label: str = "") -> T:
        """The artifact under (kind, parts): read if a valid entry exists, else computed, stored
        and returned. A corrupt entry counts as absent. While another trial holds the entry's
        lease this one waits for the entry rather than compute it a second time."""
        name = f"{kind}:{label}" if label else kind
        if not self.enabled:
            self.computed.append(name)
            return compute()
        key = cache_key(kind, parts)
        value, lease = self._load(kind, key, load), None
        if value is None:
            value, lease = self._await(kind, key, load, name)
        if value is not None:
            self.reused.append(name)
            return value
        try:
            value = compute()
            self.write(kind, key, dump(value), parts=parts, label=label)
        finally:  # a failed compute frees the lease at once: a waiter computes, not waits
            if lease is not None:
                lease.release()
        self.computed.append(name)
        return value

    def _load(self, kind: str, key: str, load: Callable[[bytes], T]) -> T | None:
        body = self.read(kind, key)
        if body is None:
            return None
        try:
            return load(body)
        except Exception:  # a body that hashes right but does not parse: written by a bug
            return None

    def _await(self, kind: str, key: str, load: Callable[[bytes], T],
               name: str) -> tuple[T | None, _Lease | None]:
        """(the entry, None) once another trial wrote it, or (None, the lease) when this one
        must compute it: the lease was free, its holder died or failed, or (None, None) after
        `wait_limit_s` of waiting for a holder that is alive but never finishes."""
        started, delay = time.monotonic(), POLL_S
        longest = POLL_MAX_S if isinstance(self._fs, pafs.LocalFileSystem) else BUCKET_POLL_MAX_S
        while True:
            lease = _Lease(self._fs, self.path(kind, key) + LEASE_SUFFIX, self.lease_ttl_s)
            if lease.acquire():
                value = self._load(kind, key, load)  # the holder before may just have finished
                if value is None:
                    return None, lease
                lease.release()
                return value, None
            left = self.wait_limit_s - (time.monotonic() - started)
            if left <= 0:
                log.warning("cache: %s is still being computed by another trial after %.0f s "
                            "of waiting; computing it here too", name, self.wait_limit_s)
                return None, None
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, longest)
            value = self._load(kind, key, load)
            if value is not None:
                return value, None

    def path(self, kind: str, key: str) -> str:
        return f"{self._base}/{kind}/{key}{SUFFIX}"

    def read(self, kind: str, key: str) -> bytes | None:
        """The body of a valid entry, or None (absent or corrupt; a corrupt one is removed)."""
        path = self.path(kind, key)
        try:
            with self._fs.open_input_stream(path) as stream:
                data = stream.read()
        except (FileNotFoundError, OSError):
            return None
        parsed = _parse(data)
        if parsed is None:
            self._remove(path)
            return None
        return parsed[1]

    def write(self, kind: str, key: str, body: bytes, *, parts: Mapping[str, Any],
              label: str = "") -> None:
        header = json.dumps({
            "kind": kind, "key": key, "label": label, "parts": parts, "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }, sort_keys=True, default=str).encode()
        data = MAGIC + len(header).to_bytes(8, "little") + header + body
        path = self.path(kind, key)
        self._fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        if not isinstance(self._fs, pafs.LocalFileSystem):
            with self._fs.open_output_stream(path) as out:  # one object upload is atomic
                out.write(data)
            return
        write_atomic(Path(path), data)

    def entries(self, name: str | None = None) -> list[CacheEntry]:
        """Every entry, or those whose kind is `name` or whose key starts with it."""
        out = []
        for info in self._files():
            kind = info.path.rsplit("/", 2)[-2]
            key = info.base_name[:-len(SUFFIX)]
            if name not in (None, kind) and not key.startswith(name):
                continue
            header = self._header(info.path) or {}
            out.append(CacheEntry(kind, key, info.size, header.get("created", "?"),
                                  header.get("label", "(unreadable header)")))
        return sorted(out, key=lambda e: (e.kind, e.created, e.key))

    def clear(self, name: str) -> tuple[int, int]:
        """Remove the entries `entries(name)` lists (`all` for every one): (count, bytes). An
        empty name, or one no entry has as its kind or key prefix, is refused (a mistyped
        target must not clear the wrong thing, nor quietly nothing)."""
        if not name.strip():
            raise ConfigError("cache clear: name an artifact kind, the start of a key, or 'all'")
        chosen = self.entries(None if name == "all" else name)
        if not chosen and name != "all":
            kinds = sorted({e.kind for e in self.entries()})
            raise ConfigError(f"cache clear {name[:100]!r}: no cached artifact has that kind or "
                              f"key prefix{did_you_mean(name, kinds)}; kinds in the cache: "
                              f"{', '.join(kinds) or 'none'}")
        for entry in chosen:
            self._remove(self.path(entry.kind, entry.key))
        return len(chosen), sum(e.size for e in chosen)

    def _files(self) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self._base, recursive=True, allow_not_found=True)
        return [i for i in self._fs.get_file_info(selector)
                if i.type == pafs.FileType.File and i.base_name.endswith(SUFFIX)]

    def _header(self, path: str) -> dict | None:
        try:
            with self._fs.open_input_file(path) as handle:
                start = handle.read(len(MAGIC) + 8)
                if not start.startswith(MAGIC):
                    return None
                length = int.from_bytes(start[len(MAGIC):], "little")
                return json.loads(handle.read(min(length, HEADER_LIMIT)))
        except (OSError, ValueError):
            return None

    def _remove(self, path: str) -> None:
        try:
            self._fs.delete_file(path)
        except (FileNotFoundError, OSError):
            pass  # another trial removed or replaced it first


class _Lease:
    """One trial's claim to compute one entry: `{"holder", "host", "pid", "expires"}` as JSON.

    On a disk (local or mounted) the lease is checked and written under an exclusive
    `flock` of the kind folder's `.lease.lock`, so of two racing trials one sees the other's.
    pyarrow offers no conditional create on buckets, so there it is written, then read back
    after `BUCKET_SETTLE_S`: of two that raced the later write wins and the other steps back.
    A thread rewrites it every third of its TTL until `release`."""

    def __init__(self, fs: pafs.FileSystem, path: str, ttl_s: float):
        self.fs, self.path, self.ttl_s = fs, path, ttl_s
        self.local = isinstance(fs, pafs.LocalFileSystem)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> bool:
        try:
            taken = self._acquire()
        except OSError as exc:  # no lease to be had (a read-only cache): compute as before
            log.warning("cache: no lease at %s (%s); computing without one", self.path, exc)
            return True
        if taken:
            self._renewer = threading.Thread(target=self._renew, daemon=True,
                                             name="cache-lease")
            self._renewer.start()
        return taken

    def _acquire(self) -> bool:
        self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        with self._guard():
            current = self._read()
            if current is not None and holds(current):
                return False
            self._write()
        if self.local:
            return True
        time.sleep(BUCKET_SETTLE_S)
        current = self._read()
        return current is not None and current["holder"] == self.holder

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        try:
            with self._guard():
                current = self._read()
                if current is not None and current["holder"] == self.holder:
                    self.fs.delete_file(self.path)
        except OSError:
            pass  # an expired lease is anyone's to remove

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                with self._guard():
                    current = self._read()
                    if current is None or current["holder"] != self.holder:
                        return  # taken over after this holder stalled past expiry
                    self._write()
            except OSError:
                continue  # a storage hiccup: try again at the next renewal

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        if not self.local:
            yield
            return
        import fcntl

        with open(f"{self.path.rsplit('/', 1)[0]}/{LEASE_LOCK}", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or its process dies
            yield

    def _read(self) -> dict | None:
        try:
            with self.fs.open_input_stream(self.path) as stream:
                return read_lease(stream.read(LEASE_LIMIT + 1))
        except OSError:
            return None

    def _write(self) -> None:
        data = json.dumps({"holder": self.holder, "host": socket.gethostname(),
                           "pid": os.getpid(), "expires": time.time() + self.ttl_s}).encode()
        if self.local:
            write_atomic(Path(self.path), data)
        else:
            with self.fs.open_output_stream(self.path) as out:
                out.write(data)


def read_lease(data: bytes) -> dict | None:
    """The lease in `data`, or None when it is damaged (a damaged lease holds nothing)."""
    if len(data) > LEASE_LIMIT:
        return None
    try:
        lease = json.loads(data)
    except (ValueError, RecursionError):
        return None
    types = {"holder": str, "host": str, "pid": int, "expires": (int, float)}
    if not isinstance(lease, dict) or not all(
            isinstance(lease.get(k), t) and not isinstance(lease.get(k), bool)
            for k, t in types.items()) or not math.isfinite(lease["expires"]):
        return None
    return lease


def _parse(data: bytes) -> tuple[dict, bytes] | None:
    """(header, body) of a whole, untampered entry, else None."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        return None
    length = int.from_bytes(data[len(MAGIC):len(MAGIC) + 8], "little")
    start = len(MAGIC) + 8
    if length > HEADER_LIMIT or len(data) < start + length:
        return None
    try:
        header = json.loads(data[start:start + length])
    except ValueError:
        return None
    body = data[start + length:]
    if len(body) != header.get("size") or hashlib.sha256(body).hexdigest() != header.get("sha256"):
        return None
    return header, body


def dump_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def load_arrays(body: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(body), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def dump_state(state: Mapping[str, Any]) -> bytes:
    import torch

    out = io.BytesIO()
    torch.save(dict(state), out)
    return out.getvalue()


def load_state(body: bytes) -> dict[str, Any]:
    import torch

    return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
