"""Checked fields of a configuration record: one :class:`Schema` per record (a training
run's TrainConfig, a recipe stage, a search's settings), used alike by the command line
(``--set KEY=VALUE``), the Python API and ``--resume``.

A value is checked against its field's type and range before anything runs; a bad one
raises one :class:`~zoo.errors.InvalidInputError` that names the value, the field and
what the field takes. Keys a record does not have are refused with the list of those
it has. No TensorFlow here: the command line checks its input before importing it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from zoo.errors import InvalidInputError

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclasses.dataclass(frozen=True)
class Field:
    """One setting: ``kind`` is int, float, str, bool, floats (a list of numbers), dict or
    any; ``low``/``high`` bound numbers (and every number of a list), ``low_open`` makes
    the lower bound exclusive; ``choices`` lists the allowed strings; ``optional`` allows
    None."""

    name: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    choices: Optional[Tuple[str, ...]] = None
    optional: bool = False

    def describe(self) -> str:
        """What the field takes, e.g. 'a number > 0' or 'one of linear, cosine'."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        noun = {"int": "a whole number", "float": "a number", "str": "a text",
                "bool": "true or false", "floats": "a list of numbers, e.g. [0.5,0.75]",
                "dict": 'a JSON object, e.g. {"momentum":0.9}', "any": "a value"}[self.kind]
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {_fmt(self.low)}")
        if self.high is not None:
            bounds.append(f"<= {_fmt(self.high)}")
        return noun + (" " + " and ".join(bounds) if bounds else "")

    def check(self, value: Any, where: str) -> Any:
        """``value`` converted to the field's type; raises InvalidInputError when it does not
        fit. ``where`` names the value for the message (e.g. ``--set epochs=0``)."""
        if value is None or (isinstance(value, str) and value.strip() == "" and self.kind != "str"):
            if self.optional and value is None:
                return None
            raise InvalidInputError(f"{where}: {self.name} needs a value: {self.describe()}.")
        converted = self._convert(value)
        if converted is _BAD:
            raise InvalidInputError(f"{where}: {self.name} takes {self.describe()}, not {value!r}.")
        numbers = converted if self.kind == "floats" else (
            [converted] if self.kind in ("int", "float") else [])
        for number in numbers:
            if not _within(number, self.low, self.high, self.low_open):
                raise InvalidInputError(f"{where}: {self.name} takes {self.describe()}, not {value!r}.")
        if self.choices is not None and converted not in self.choices:
            from difflib import get_close_matches

            close = get_close_matches(str(converted), self.choices, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise InvalidInputError(f"{where}: {self.name} takes {self.describe()}, not "
                                    f"{value!r}.{hint}")
        return converted

    def _convert(self, value: Any) -> Any:
        kind = self.kind
        if kind == "any":
            return value
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            return True if text in _TRUE else False if text in _FALSE else _BAD
        if kind == "str":
            return value if isinstance(value, str) else _BAD
        if kind == "dict":
            return dict(value) if isinstance(value, Mapping) else _BAD
        if kind == "floats":
            if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
                return _BAD
            items = [_number(item, float) for item in value]
            return _BAD if any(item is _BAD for item in items) else tuple(items)
        return _number(value, int if kind == "int" else float)


_BAD = object()


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _number(value: Any, kind: type) -> Any:
    if isinstance(value, bool):
        return _BAD
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return _BAD
    if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return _BAD
    if kind is int:
        return int(value) if float(value).is_integer() else _BAD
    return float(value)


def _within(number: float, low: Optional[float], high: Optional[float], low_open: bool) -> bool:
    if low is not None and (number <= low if low_open else number < low):
        return False
    return high is None or number <= high


class Schema:
    """The checked fields of one record, by name."""

    def __init__(self, record: str, fields: Sequence[Field], aliases: Optional[Mapping[str, str]] = None):
        self.record = record
        self.fields: Dict[str, Field] = {field.name: field for field in fields}
        self.aliases = dict(aliases or {})  # old or other spellings of a field's name

    def names(self) -> Tuple[str, ...]:
        return tuple(self.fields)

    def check(self, values: Mapping[str, Any], where: str = "{key}={value}") -> Dict[str, Any]:
        """Every value of ``values`` checked and converted; an unknown key is refused with the
        list of known ones. ``where`` formats each value's name for messages (``{key}``,
        ``{value}``, ``{option}`` = the key with dashes: e.g. ``--set {key}={value}``)."""
        checked = {}
        for key, value in values.items():
            key = self.aliases.get(key, key)
            if key not in self.fields:
                from difflib import get_close_matches

                close = get_close_matches(str(key), self.fields, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise InvalidInputError(
                    f"{_where(where, key, value)}: {self.record} has no setting "
                    f"{key!r}{hint}; its settings are: {', '.join(self.fields)}.")
            checked[key] = self.fields[key].check(value, _where(where, key, value))
        return checked


def _where(where: str, key: str, value: Any) -> str:
    return where.format(key=key, value=_shown(value), option=key.replace("_", "-"))


def _shown(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else repr(value)


def check_call_arguments(owner: str, function, given: Mapping[str, Any], hint: str = "",
                         skip: Sequence[str] = (), open_keywords: bool = False,
                         types: bool = True) -> Dict[str, Any]:
    """Keyword arguments a user gives ``function`` (an optimizer's, a method's, a builder's
    settings): a name it does not take is refused with the list of those it takes (unless
    ``open_keywords`` and it has ``**kwargs``), and a value is checked against the type of
    the parameter's default (number, whole number, true/false, text). Returns them
    converted. ``skip``: parameters the zoo passes itself; ``types=False``: names only (for
    builders, whose settings may take other values than their default's type)."""
    import inspect

    # a decorated function (functools.wraps) takes its wrapper's own parameters and the
    # wrapped function's; it takes any keyword if the innermost one does
    inner = inspect.signature(function).parameters
    outer = inspect.signature(function, follow_wrapped=False).parameters
    params = {name: p for name, p in {**inner, **outer}.items()
              if name not in ("self", *skip) and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inner.values())
    unknown = sorted(set(given) - set(params))
    if unknown and not (open_keywords and takes_any):
        raise InvalidInputError(f"{owner} takes no argument {', '.join(unknown)}; it takes "
                                f"{', '.join(sorted(params))}{hint}.")
    checked = dict(given)
    for key, value in given.items() if types else ():
        default = params[key].default if key in params else None
        kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(type(default))
        if kind == "int" and _number(value, float) is not _BAD and _number(value, int) is _BAD:
            kind = "float"  # a default written 1 may stand for a rate: 0.5 is no type error
        if kind is not None:
            checked[key] = Field(key, kind).check(value, f"{owner} {key}={_shown(value)}{hint}")
    return checked
