"""One error family the CLI turns into exit code 2 and a single line a user can act on."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DfuError(Exception):
    """Root of every error caused by the user's input rather than by a bug."""


class ConfigError(DfuError):
    """A config, sweep file or command-line value is invalid."""


class DataError(DfuError):
    """A cohort file is missing, malformed or inconsistent."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix naming the closest valid choice, or '' if none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
