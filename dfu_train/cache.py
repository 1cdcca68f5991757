"""A content-addressed artifact cache that every trial of every sweep shares: `<root>/<kind>/<key>`.

A key hashes everything that changes an artifact's content and nothing else, so a trial that
differs from an earlier one only in its fusion head reuses that trial's forest outputs, pretrained
branches and crops. An entry is one file: a magic line, a JSON header (kind, what was hashed, the
body's length and SHA-256), then the body. It is written under a temporary name and renamed, so of
two trials writing one key at once one wins whole and readers never see half a file (on object
stores one upload is already atomic). An entry whose body does not match its header (truncated,
edited, half-synced) is treated as absent, removed and recomputed.

Bodies are numpy `.npz` files read with `allow_pickle=False` and torch state dicts read with
`weights_only=True`: nothing read from the cache can run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow.fs as pafs

from dfu_train.atomic import write_atomic
from dfu_train.errors import ConfigError, did_you_mean
from dfu_train.location import Location

MAGIC = b"dfu-cache 1\n"
HEADER_LIMIT = 1 << 20
SUFFIX = ".bin"
T = TypeVar("T")


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
    list what this instance fetched, `kind:label` each, for the trial's record."""

    root: str
    enabled: bool = True
    filesystem: pafs.FileSystem | None = None  # given: `root` is a path inside it
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
        return ArtifactCache(self.root, self.enabled, self.filesystem)

    def fetch(self, kind: str, parts: Mapping[str, Any], compute: Callable[[], T], *,
              dump: Callable[[T], bytes], load: Callable[[bytes], T], label: str = "") -> T:
        """The artifact under (kind, parts): read if a valid entry exists, else computed, stored
        and returned. A corrupt entry counts as absent."""
        name = f"{kind}:{label}" if label else kind
        if not self.enabled:
            self.computed.append(name)
            return compute()
        key = cache_key(kind, parts)
        body = self.read(kind, key)
        if body is not None:
            try:
                value = load(body)
            except Exception:  # a body that hashes right but does not parse: written by a bug
                value = None
            if value is not None:
                self.reused.append(name)
                return value
        value = compute()
        self.write(kind, key, dump(value), parts=parts, label=label)
        self.computed.append(name)
        return value

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
