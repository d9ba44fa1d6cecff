"""Architecture strings: the one parser and formatter of searched architectures.

A searched network is written as integer *genes*, in one or more *parts*, plus its
width when that is not 1.0:

- bmes and MetaPruning: genes joined by ``-``, the width as a prefix:
  ``"0.25x:1-2-4-..."`` (``sep="-"``, ``width_style="prefix"``);
- SPOS: one digit per gene (``sep=""``), two parts (blocks, channel scales) joined by
  ``-``, the width as a suffix: ``"0031...-6535...@0.25"`` (``parts=2``,
  ``width_style="suffix"``);
- the search engine's default encoding: genes joined by ``-`` (``"0-3-1"``).

:func:`parse_arch` and :func:`format_arch` read and write all of them;
:func:`split_width` only takes the width off (checked against an explicit ``width=``)
for a family that needs the width before it can check the genes. The parser checks
the syntax; each model checks its genes (how many, which values) in its own module
and reports a bad one with :func:`arch_error`. Every error is an
:class:`~zoo.errors.InvalidInputError` that says what was expected.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

from zoo.errors import InvalidInputError

_PART_SEP = "-"  # between the parts of a string whose genes are single digits
# where a width annotation stands, for the error of a bad one
_WIDTH_MARK = {"prefix": ("the part before ':'", "'0.25x:'"),
               "suffix": ("the part after '@'", "'@0.25'")}


def arch_error(arch, what: str, expected: str) -> InvalidInputError:
    """The error of a bad architecture string: ``Bad {what} {arch!r}: expected {expected}.``"""
    return InvalidInputError(f"Bad {what} {arch!r}: expected {expected}.")


def _check_style(width_style: Optional[str]) -> None:
    if width_style is not None and width_style not in _WIDTH_MARK:
        raise ValueError(f"width_style must be one of {sorted(_WIDTH_MARK)} or None, "
                         f"got {width_style!r}.")


def _take_width(arch, width_style: str) -> Tuple[str, Optional[float]]:
    """``(the rest of the string, its width or None)`` for a string in ``width_style``."""
    _check_style(width_style)
    text = str(arch)
    if width_style == "prefix":
        if ":" not in text:
            return text, None
        head, body = text.split(":", 1)
        head = head.strip().lower()
        number = head[:-1] if head.endswith("x") else ""
    else:
        if "@" not in text:
            return text, None
        body, number = text.rsplit("@", 1)
    try:
        width = float(number)
        if not (math.isfinite(width) and width > 0):
            raise ValueError
    except ValueError:
        where, example = _WIDTH_MARK[width_style]
        raise InvalidInputError(
            f"Bad architecture {arch!r}: {where} is the width, e.g. {example}.") from None
    return body, width


def resolve_width(arch, arch_width: Optional[float], width: Optional[float]) -> float:
    """The network width: the string's (``arch_width``), an explicit ``width`` (they must
    agree when both are given) or 1.0."""
    if arch_width is None:
        return 1.0 if width is None else float(width)
    if width is not None and abs(float(width) - float(arch_width)) > 1e-9:
        raise InvalidInputError(
            f"Architecture {arch!r} is for width {float(arch_width):g}, but width={width!r} was "
            f"given; drop one of them.")
    return float(arch_width)


def split_width(arch, width: Optional[float] = None, *,
                width_style: str = "prefix") -> Tuple[object, float]:
    """``(the genes part, the width)`` of an architecture string; anything but a string
    (``None``, a sequence of genes) passes through with ``width`` (default 1.0)."""
    if not isinstance(arch, str):
        return arch, resolve_width(arch, None, width)
    body, arch_width = _take_width(arch, width_style)
    return body, resolve_width(arch, arch_width, width)


def _genes(piece: str, sep: str) -> Tuple[int, ...]:
    """The integers of one part; ValueError if it is not one."""
    if sep == "":
        if not piece or any(c not in "0123456789" for c in piece):
            raise ValueError(piece)
        return tuple(int(c) for c in piece)
    return tuple(int(token.strip()) for token in piece.split(sep))


def parse_arch(arch, *, what: str, expected: str, sep: str = "-", parts: int = 1,
               width_style: Optional[str] = None
               ) -> Tuple[Tuple[Tuple[int, ...], ...], Optional[float]]:
    """``(parts of integer genes, width or None)`` of an architecture string.

    ``sep`` joins the genes of a part (``""``: one digit per gene); with one-digit genes
    up to ``parts`` parts are joined by ``-``. ``width_style`` is where the string may
    carry its width (``"prefix"``, ``"suffix"``; ``None``: nowhere). Only the syntax is
    checked: a bad string raises :func:`arch_error` with ``what`` and ``expected``.
    """
    if parts > 1 and sep == _PART_SEP:
        raise ValueError(f"Several parts need one-digit genes (sep=''), not sep={sep!r}.")
    text = str(arch).strip()
    body, width = _take_width(text, width_style) if width_style else (text, None)
    pieces = body.split(_PART_SEP) if parts > 1 else [body]
    if len(pieces) > parts:
        raise arch_error(arch, what, expected)
    try:
        return tuple(_genes(piece, sep) for piece in pieces), width
    except ValueError:
        raise arch_error(arch, what, expected) from None


def format_arch(parts: Sequence[Sequence[int]], width: Optional[float] = None, *,
                sep: str = "-", width_style: Optional[str] = None) -> str:
    """The string :func:`parse_arch` reads back: the width written only when it is not 1.0
    (and ``width_style`` is given)."""
    _check_style(width_style)
    if sep == "" and any(not 0 <= int(g) <= 9 for part in parts for g in part):
        raise ValueError(f"One-digit genes must be 0-9, got {[list(p) for p in parts]}.")
    body = _PART_SEP.join(sep.join(str(int(g)) for g in part) for part in parts)
    if width_style is None or width is None or float(width) == 1.0:
        return body
    mark = f"{float(width):g}"
    return f"{mark}x:{body}" if width_style == "prefix" else f"{body}@{mark}"


__all__ = ["arch_error", "parse_arch", "format_arch", "split_width", "resolve_width"]
