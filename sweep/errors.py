"""flame's one error type for bad input: every message names the field and the fix.

The CLI turns a ``ConfigError`` into one line on stderr and exit status 2, before anything is
submitted or written (``jobs.cli``); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration or input error whose message names the field and how to fix it."""
