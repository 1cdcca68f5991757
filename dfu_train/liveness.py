"""Whether a lease file's holder still holds it: shared by the sweep lease (`results.lease`) and
the artifact cache's single-flight leases (`cache`)."""

from __future__ import annotations

import os
import socket
import time


def holds(lease: dict) -> bool:
    """Whether a lease still holds: not expired, and on this host its process still lives."""
    if lease["expires"] <= time.time():
        return False
    return lease["host"] != socket.gethostname() or _alive(lease["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True
