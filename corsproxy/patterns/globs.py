"""Path globs for rules: ``*`` stays within one path segment, ``**`` crosses segments.

``/public/**`` matches ``/public`` itself and everything below it. Globs are compiled
once, when the configuration loads; ``/**`` compiles to None, meaning "every path".
"""

from __future__ import annotations

import re


class GlobError(ValueError):
    """A rule path that cannot match any request path."""


def compile_glob(glob: str) -> re.Pattern[str] | None:
    if not glob.startswith("/"):
        raise GlobError(f"must start with '/', got {glob!r}")
    if glob == "/**":
        return None
    body = glob
    tail = ""
    if body.endswith("/**"):
        body = body[: -len("/**")]
        tail = "(?:/.*)?"
    parts = []
    index = 0
    while index < len(body):
        if body.startswith("**", index):
            parts.append(".*")
            index += 2
        elif body[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif body[index] == "?":
            parts.append("[^/]")
            index += 1
        else:
            parts.append(re.escape(body[index]))
            index += 1
    # DOTALL: a decoded path may hold %0A, and "**" must still cross it.
    return re.compile("".join(parts) + tail, re.DOTALL)
