"""A quiet terminal while Ray runs: Ray's, Tune's and Optuna's logs, Python warnings and whatever
Ray prints go to a log file in the sweep folder, so the terminal shows dfu's own lines only.

Ray logs through the `ray` logger (with its own stderr handler), Tune prints its tables and
hints to stdout, and the driver prints raylet messages to stdout from a background thread. While
`quiet_console` is open, those loggers write to the file and stdout is the file; dfu writes its
lines to stderr (and the leaderboard to stdout after the run).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator

from dfu_train.location import Location
from dfu_train.results.store import MANIFEST

LOG_DIR = "logs"
# Loggers with handlers of their own (the rest propagate to these or to the root).
LOGGERS = ("ray", "ray.data", "ray.tune", "ray.train", "optuna", "py.warnings")


@contextlib.contextmanager
def quiet_console(sweep_dir: Location, experiment: str) -> Iterator[Location]:
    """Send Ray's output to a log file while inside; yields where the log will land:
    `<sweep>/logs/<experiment>-<time>.log`. The log is written to a local scratch file and
    copied there when the block ends, if the sweep was recorded (a sweep refused before it
    started leaves nothing behind); on a bucket, it is uploaded then."""
    target = sweep_dir / LOG_DIR / f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    scratch = tempfile.mkdtemp(prefix="dfu-log-")
    local = os.path.join(scratch, target.name)
    handle = open(local, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed below)
    file_handler = logging.StreamHandler(handle)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = {}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.propagate)
        logger.handlers = [file_handler]
        logger.propagate = False
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(handle):
            warnings.simplefilter("default")
            yield target
    finally:
        logging.captureWarnings(False)
        for name, (handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        handle.close()
        with contextlib.suppress(OSError):
            if (sweep_dir / MANIFEST).is_file():
                with open(local, "rb") as log:
                    target.write_bytes(log.read())
        shutil.rmtree(scratch, ignore_errors=True)


def keep_ray_quiet() -> None:
    """Ray re-installs its stderr handler when it starts: call after `ray.init` inside
    `quiet_console` to point the `ray` loggers back at the file."""
    file_handlers = logging.getLogger("optuna").handlers  # the quiet console's, untouched by Ray
    for name in ("ray", "ray.data"):
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = list(file_handlers), False
