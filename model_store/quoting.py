"""Quoting what a file or a client sent inside a one-line message, cut to a bounded size.

An error names the offending value so the operator can find it, but the value comes
from outside: a CURRENT file or manifest field of 10 MB must not become a 10 MB log
line (or HTTP answer). Every message that echoes such a value goes through `quoted`.
"""

from __future__ import annotations

LIMIT = 80


def quoted(value: object, limit: int = LIMIT) -> str:
    """`repr(value)`, cut to about `limit` characters, saying how long it was."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = len(value) if isinstance(value, str | bytes) else len(text)
    return f"{text[:limit]}... ({size} characters)"
