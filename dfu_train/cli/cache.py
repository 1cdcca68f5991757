"""`dfu cache`: the artifact cache that trials share."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from dfu_train.cli.common import AsJson, CacheRoot, Storage, emit_json, out, user_errors

cache_app = typer.Typer(help="The artifact cache that trials share.", no_args_is_help=True)


CacheName = Annotated[Optional[str], typer.Argument(
    help="an artifact kind (crops, forest, branch) or the start of a key; none = every entry")]


def _cache_at(storage: str, cache_dir: str | None):
    from dfu_train.cache import ArtifactCache

    from dfu_train.results.store import CACHE_DIR, storage_path

    return ArtifactCache(cache_dir or str(storage_path(storage) / CACHE_DIR))


@cache_app.command("ls")
@user_errors
def cache_ls(name: CacheName = None, storage: Storage = "results",
             cache_dir: CacheRoot = None, as_json: AsJson = False) -> None:
    """List cached artifacts: kind, key, size, when made and what they are."""
    entries = _cache_at(storage, cache_dir).entries(name)
    if as_json:
        emit_json([entry.__dict__ for entry in entries])
        return
    table = Table(title=f"{len(entries)} cached artifacts")
    for column in ("kind", "key", "size", "created", "what"):
        table.add_column(column)
    for e in entries:
        table.add_row(e.kind, e.key[:12], _size(e.size), e.created, e.label)
    out.print(table)


@cache_app.command("du")
@user_errors
def cache_du(name: CacheName = None, storage: Storage = "results",
             cache_dir: CacheRoot = None, as_json: AsJson = False) -> None:
    """Disk use of the cache by artifact kind."""
    usage: dict[str, list[int]] = {}
    for entry in _cache_at(storage, cache_dir).entries(name):
        count_size = usage.setdefault(entry.kind, [0, 0])
        count_size[0] += 1
        count_size[1] += entry.size
    if as_json:
        emit_json({kind: {"entries": n, "bytes": b} for kind, (n, b) in usage.items()})
        return
    for kind, (count, size) in sorted(usage.items()):
        out.print(f"{kind:8} {count:5} entries {_size(size):>10}")
    total = sum(b for _, b in usage.values())
    out.print(f"{'total':8} {sum(n for n, _ in usage.values()):5} entries {_size(total):>10}")


@cache_app.command("clear")
@user_errors
def cache_clear(
    name: Annotated[str, typer.Argument(help="an artifact kind, the start of a key, or 'all'")],
    storage: Storage = "results",
    cache_dir: CacheRoot = None,
) -> None:
    """Remove cached artifacts; trials that need them compute them again."""
    count, size = _cache_at(storage, cache_dir).clear(name)
    out.print(f"removed {count} cached artifacts ({_size(size)})")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
