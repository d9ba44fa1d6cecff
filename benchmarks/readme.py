"""The README's generated parts: text between a start and an end marker, rewritten by the
command the start marker names (the claims table, the published sets)."""
from __future__ import annotations

from pathlib import Path


def replace_between(readme: Path, start: str, end: str, text: str) -> None:
    """Replaces what lies between ``start`` and ``end`` in ``readme`` with ``text``; a README
    without both markers is an error and is left as it was."""
    readme = Path(readme)
    content = readme.read_text()
    first, last = content.find(start), content.find(end)
    if first < 0 or last < first:
        raise ValueError(f"{readme} has no markers {start} ... {end}")
    readme.write_text(f"{content[:first + len(start)]}\n{text}\n{content[last:]}")
