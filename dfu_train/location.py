"""A folder or file on the local disk or in a bucket, named by a path or a URI.

Sweeps live where the user points `--storage`: a folder, a `file://` URI, or a bucket
(`s3://bucket/prefix`, `gs://bucket/prefix`, or any URI `pyarrow.fs` understands). Ray Tune
writes its part of the sweep through `pyarrow.fs`; `Location` gives the rest of the project the
few path operations it needs on the same filesystems, so a leaderboard is read from a laptop
against the bucket the cluster wrote. Credentials come from the usual places (the AWS and Google
environment variables and config files; `AWS_ENDPOINT_URL` for MinIO and other S3 servers).
"""

from __future__ import annotations

import fnmatch
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pyarrow.fs as pafs

from dfu_train.atomic import write_atomic
from dfu_train.errors import ConfigError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")


class Location:
    """A path on one filesystem, with the pathlib operations the sweep folder needs.

    A local location is an absolute path and behaves exactly as `pathlib.Path`; a bucket location
    keeps its URI (`str()` gives it back, for Ray's `storage_path`). Locations made from one
    another with `/` and `parent` share one filesystem object, made on first use (for a bucket
    that is a request to find its region)."""

    __slots__ = ("_fs", "_path", "_prefix", "_query")

    def __init__(self, where: str | Path | Location):
        if isinstance(where, Location):
            self._fs, self._path, self._prefix, self._query = (
                where._fs, where._path, where._prefix, where._query)
            return
        text = str(where)
        match = _SCHEME.match(text)
        self._fs: list[pafs.FileSystem] = []  # shared with every location made from this one
        if match is None or len(match.group(1)) == 1:  # a plain path (or a Windows drive letter)
            self._prefix, self._query, self._path = "", "", str(Path(text).resolve())
        elif match.group(1).lower() == "file":
            self._prefix, self._query = "", ""
            self._path = str(Path(unquote(urlsplit(text).path)).resolve())
        else:
            parts = urlsplit(text)
            if not parts.netloc:
                raise ConfigError(f"{text!r}: a bucket URI needs a bucket "
                                  f"({parts.scheme}://BUCKET/...)")
            self._prefix = f"{parts.scheme}://"
            self._query = f"?{parts.query}" if parts.query else ""
            self._path = f"{parts.netloc}{parts.path}".rstrip("/") or parts.netloc

    @property
    def is_local(self) -> bool:
        return not self._prefix

    @property
    def path(self) -> str:
        """The path inside the filesystem (`bucket/prefix/...` for a bucket)."""
        return self._path

    @property
    def local_path(self) -> Path:
        if not self.is_local:
            raise ValueError(f"{self} is not on the local disk")
        return Path(self._path)

    @property
    def name(self) -> str:
        return self._path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        if self.is_local:
            return self._child(str(Path(self._path).parent))
        head = self._path.rsplit("/", 1)[0] if "/" in self._path else self._path
        return self._child(head)

    def __truediv__(self, name: str) -> Location:
        return self._child(f"{self._path.rstrip('/')}/{str(name).strip('/')}")

    def __str__(self) -> str:
        return f"{self._prefix}{self._path}{self._query}"

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def __fspath__(self) -> str:
        return str(self.local_path)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Path):
            other = Location(other)
        return isinstance(other, Location) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: Location) -> bool:
        return str(self) < str(other)

    def __reduce__(self):  # the filesystem object stays behind; the URI rebuilds it
        return Location, (str(self),)

    def _child(self, path: str) -> Location:
        child = Location(self)
        child._path = path
        return child

    @property
    def filesystem(self) -> pafs.FileSystem:
        if not self._fs:
            if self.is_local:
                self._fs.append(pafs.LocalFileSystem())
            else:
                bucket = self._path.split("/", 1)[0]
                try:
                    filesystem, _ = pafs.FileSystem.from_uri(
                        f"{self._prefix}{bucket}{self._query}")
                except (OSError, ValueError) as exc:
                    raise ConfigError(f"storage {self}: {exc}") from None
                self._fs.append(filesystem)
        return self._fs[0]

    def info(self) -> pafs.FileInfo:
        return self.filesystem.get_file_info(self._path)

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def mtime(self) -> float:
        mtime = self.info().mtime
        return mtime.timestamp() if mtime is not None else 0.0

    def read_bytes(self) -> bytes:
        if self.is_local:
            return Path(self._path).read_bytes()
        with self.filesystem.open_input_stream(self._path) as stream:
            return stream.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        """The whole file at once: renamed into place on a disk, one upload on a bucket, so
        readers never see half of it and a failed write leaves the earlier file."""
        if self.is_local:
            write_atomic(Path(self._path), data)
            return
        with self.filesystem.open_output_stream(self._path) as out:
            out.write(data)

    def delete(self) -> None:
        if self.is_local:
            Path(self._path).unlink(missing_ok=True)
        else:
            self.filesystem.delete_file(self._path)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def mkdir(self) -> None:
        if self.is_local:
            Path(self._path).mkdir(parents=True, exist_ok=True)
        else:
            self.filesystem.create_dir(self._path, recursive=True)

    def iterdir(self) -> list[Location]:
        selector = pafs.FileSelector(self._path, recursive=False, allow_not_found=True)
        try:
            infos = self.filesystem.get_file_info(selector)
        except (NotADirectoryError, OSError):
            return []
        return [self._child(i.path.rstrip("/")) for i in infos]

    def glob(self, pattern: str) -> list[Location]:
        """Matches of a relative pattern whose parts are shell-style names (`*/params.json`),
        sorted; one directory listing per wildcard part."""
        found = [self]
        for part in pattern.strip("/").split("/"):
            if any(ch in part for ch in "*?["):
                found = [child for loc in found for child in loc.iterdir()
                         if fnmatch.fnmatchcase(child.name, part)]
            else:
                found = [c for c in (loc / part for loc in found) if c.exists()]
        return sorted(found, key=str)


BUCKET_READ_THREADS = 16


def read_all(locations: list[Location]) -> list[bytes | None]:
    """The content of each file (None where unreadable), in order. Bucket objects are fetched
    concurrently: a leaderboard of 500 fold records is 500 round trips to the bucket."""
    def read(location: Location) -> bytes | None:
        try:
            return location.read_bytes()
        except OSError:
            return None

    if all(location.is_local for location in locations) or len(locations) < 2:
        return [read(location) for location in locations]
    with ThreadPoolExecutor(max_workers=BUCKET_READ_THREADS) as pool:
        return list(pool.map(read, locations))
