"""One error family the CLI turns into exit code 2 and a single line a user can act on."""

from __future__ import annotations

import difflib
import reprlib
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


QUOTE_LIMIT = 200  # characters of one value quoted in an error message
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = QUOTE_LIMIT
_QUOTE.maxlist = _QUOTE.maxtuple = _QUOTE.maxdict = _QUOTE.maxset = 8
_QUOTE.maxlevel = 3


def quoted(value) -> str:
    """`repr(value)` cut to QUOTE_LIMIT characters: a value from a user's file may be huge (or
    an alias bomb's shared lists), and quoting it must cost little and stay one short line."""
    text = _QUOTE.repr(value)
    return text if len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT - 3] + "..."


MESSAGE_LIMIT = 1000  # characters of one error line: a hostile input must not flood a terminal


def one_line(message: str) -> str:
    """`message` as one printable line of at most MESSAGE_LIMIT characters: line breaks become
    spaces, other control characters and undecodable bytes (surrogates) are escaped."""
    text = " ".join(message.splitlines())
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) > MESSAGE_LIMIT:
        text = f"{text[:MESSAGE_LIMIT]}... ({len(text) - MESSAGE_LIMIT} more characters)"
    return text
