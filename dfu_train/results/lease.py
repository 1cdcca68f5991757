"""One writer per sweep: `run`, `resume` and `promote` hold `<sweep>/lease.json` while they run.

A second writer of the same sweep would run every trial again beside the first and race it for
the manifest. The lease names its holder (host, process, command) and an expiry that a thread
renews while the sweep runs, so a holder that died (a killed driver, a lost laptop) stops
blocking the sweep once its lease expires; on the same host a holder whose process is gone is
known dead at once. On a local disk the lease is checked and written under an exclusive lock; on a bucket, where no
exclusive create is at hand, it is written and read back after a pause, and the later writer of
two that raced sees the other's lease and steps back.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from dfu_train.errors import ConfigError
from dfu_train.liveness import holds
from dfu_train.location import Location
from dfu_train.results import records as shapes

LEASE = "lease.json"
TTL_S = 90.0  # a holder that stops renewing is taken for dead after this long
RENEW_S = 20.0
BUCKET_SETTLE_S = 1.0  # a racing writer's lease shows within this on the bucket


class SweepBusy(ConfigError):
    """Another process holds the sweep's lease."""


class SweepLease:
    """`with SweepLease(sweep_dir, "dfu sweep run"):` holds the sweep or raises SweepBusy."""

    def __init__(self, sweep_dir: Location | Path, command: str, *, ttl_s: float = TTL_S,
                 renew_s: float = RENEW_S):
        self.path = Location(sweep_dir) / LEASE
        self.command, self.ttl_s, self.renew_s = command[:200], ttl_s, renew_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> SweepLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _body(self) -> dict:
        now = time.time()
        return {"holder": self.holder, "host": socket.gethostname(), "pid": os.getpid(),
                "command": self.command, "acquired": getattr(self, "_acquired", now),
                "expires": now + self.ttl_s}

    def acquire(self) -> None:
        if self.path.is_local:
            self._acquire_local()
        else:
            self._acquire_bucket()
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="sweep-lease")
        self._renewer.start()

    def _acquire_local(self) -> None:
        """Check and take the lease under an exclusive lock, so of two racing writers one
        sees the other's lease."""
        import fcntl

        path = self.path.local_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{LEASE}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = read_lease(self.path)
            if current is not None and holds(current):
                raise SweepBusy(busy_message(self.path, current))
            self._acquired = time.time()
            self.path.write_bytes(json.dumps(self._body()).encode())

    def _acquire_bucket(self) -> None:
        current = read_lease(self.path)
        if current is not None and holds(current):
            raise SweepBusy(busy_message(self.path, current))
        self._acquired = time.time()
        self.path.write_bytes(json.dumps(self._body()).encode())
        time.sleep(BUCKET_SETTLE_S)
        now = read_lease(self.path)
        if now is None or now["holder"] != self.holder:
            raise SweepBusy(busy_message(self.path, now or current or {}))

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                current = read_lease(self.path)
                if current is not None and current["holder"] != self.holder:
                    return  # taken over after we stalled past expiry: do not fight for it
                self.path.write_bytes(json.dumps(self._body()).encode())
            except OSError:
                continue  # a storage hiccup: try again at the next renewal

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        try:
            current = read_lease(self.path)
            if current is not None and current["holder"] == self.holder:
                self.path.delete()
        except OSError:
            pass


def check_free(sweep_dir: Location | Path) -> None:
    """Refuse at once (before a cohort is loaded) a sweep another process holds."""
    path = Location(sweep_dir) / LEASE
    current = read_lease(path)
    if current is not None and holds(current):
        raise SweepBusy(busy_message(path, current))


def read_lease(path: Location) -> dict | None:
    """The lease, or None when there is none or it is damaged (a damaged lease holds nothing)."""
    try:
        data = json.loads(Location(path).read_bytes())
    except (OSError, ValueError):
        return None
    lease, _ = shapes.validated(shapes.Lease, data)
    return lease


def busy_message(path: Location, lease: dict) -> str:
    sweep = path.parent.name
    who = (f"{lease.get('command') or 'another dfu'} (process {lease.get('pid')} on "
           f"{lease.get('host')})") if lease else "another dfu"
    left = max(0, round(lease.get("expires", time.time()) - time.time())) if lease else 0
    return (f"sweep {sweep} is being run by {who}; wait for it to end (`dfu sweep status "
            f"{sweep}` shows its progress); if that process is gone, its lease expires in "
            f"{left} s")[:400]
