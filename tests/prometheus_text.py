"""Reading Prometheus text as a scraper would, strictly: every line a comment or a well-formed sample."""
from __future__ import annotations

import re

SAMPLE_LINE = re.compile(r'^[a-z_][a-z0-9_]*(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|[+-]Inf|NaN)$')


def parse_families(text: str) -> dict[str, list[str]]:
    """name -> its sample lines (a histogram's _bucket/_sum/_count under its own name)."""
    families: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families[line.split()[2]] = []
        elif not line.startswith("# HELP "):
            assert SAMPLE_LINE.match(line), line
            name = line.split("{")[0].split(" ")[0]
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            families[base if base in families else name].append(line)
    return families
