"""One small generic registry for everything a user can name.

Models, recipes, optimizers, datasets (and later augmentations, searches, SSL
methods) each live in a :class:`Registry`. Names are lowercase, aliases are
explicit, duplicates raise, and an unknown name raises with the closest
matches, as timm's ``register_model`` / ``list_models`` do.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from typing import Any, Callable, Dict, Generic, Iterator, List, Optional, Sequence, TypeVar

from zoo.errors import DuplicateNameError, InvalidInputError, UnknownNameError
from zoo.papers import Paper

T = TypeVar("T")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")

# What `zoo list --kind` takes, by registry kind: the one table of the listable kinds.
LIST_KINDS = {"model": "models", "recipe": "recipes", "dataset": "datasets",
              "optimizer": "optimizers", "augmentation": "augmentations", "ssl": "ssl",
              "search": "searches"}


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class Registry(Generic[T]):
    """A mapping of names (and aliases) to entries of one kind."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, T] = {}
        self._aliases: Dict[str, str] = {}

    def register(self, name: str, entry: T, aliases: Sequence[str] = ()) -> T:
        keys = (name, *aliases)
        if len(set(keys)) != len(keys):
            raise DuplicateNameError(f"{self.kind} {name!r} repeats a name in its aliases {aliases}.")
        for key in keys:
            if not _NAME_RE.match(key):
                raise ValueError(
                    f"Invalid {self.kind} name {key!r}: use lowercase letters, digits and '_'."
                )
            if key in self._entries or key in self._aliases:
                raise DuplicateNameError(f"{self.kind} name {key!r} is already registered.")
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias] = name
        return entry

    def canonical(self, name: str) -> str:
        key = str(name).strip().lower().replace("-", "_")
        if key in self._entries:
            return key
        if key in self._aliases:
            return self._aliases[key]
        candidates = list(self._entries) + list(self._aliases)
        close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownNameError(f"Unknown {self.kind} {name!r}.{hint}{self.list_hint()}")

    def list_hint(self) -> str:
        """Where users see every name of this registry (``zoo list --kind``, plural)."""
        if self.kind == "model":
            return " Run `zoo list` to see them all."
        if self.kind in LIST_KINDS:
            return f" Run `zoo list --kind {LIST_KINDS[self.kind]}` to see them all."
        return ""

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)]

    def __contains__(self, name: str) -> bool:
        try:
            self.canonical(name)
        except UnknownNameError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, pattern: str = "*", exclude: Optional[str] = None) -> List[str]:
        """Canonical names matching a shell wildcard, naturally sorted."""
        names = [n for n in self._entries if fnmatch.fnmatchcase(n, pattern.lower())]
        if exclude:
            names = [n for n in names if not fnmatch.fnmatchcase(n, exclude.lower())]
        return sorted(names, key=_natural_key)

    def aliases_of(self, name: str) -> List[str]:
        canonical = self.canonical(name)
        return sorted(a for a, target in self._aliases.items() if target == canonical)

    def items(self):
        return [(n, self._entries[n]) for n in self.names()]


@dataclasses.dataclass
class ModelEntry:
    """One registered architecture: its builder plus the metadata shown by ``zoo info``."""

    name: str
    builder: Callable[..., Any]
    aliases: tuple = ()
    paper: Optional[Paper] = None
    family: str = ""
    description: str = ""
    # {"imagenet2012": {"top1": 56.4, "top5": 79.5, "source": "..."}}: numbers the paper reports
    reported: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)
    # (H, W, C) the paper evaluates at; OPs in `zoo info` are computed there
    input_size: tuple = (224, 224, 3)
    # smallest spatial size the architecture accepts (it downsamples by this much)
    min_input_size: int = 16
    # spatial sizes must be divisible by this (1: any size from min_input_size)
    input_multiple: int = 1
    default_recipe: str = "default"
    binary: bool = True
    # weight specs by tag (filled from weights/manifest.json)
    weights: Dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def __call__(self, **kwargs):
        return self.builder(**kwargs)


@dataclasses.dataclass(frozen=True)
class FactoryEntry:
    """A named factory with what ``zoo list --kind`` shows (augmentations, SSL methods)."""

    name: str
    factory: Callable[..., Any]
    description: str
    paper: str = ""


def check_arguments(owner: str, given, allowed, hint: str = "") -> None:
    """One clear error for user-given arguments ``owner`` does not take."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise InvalidInputError(f"{owner} takes no argument {', '.join(unknown)}; it takes "
                                f"{', '.join(sorted(allowed))}{hint}.")


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(
    name: Optional[str] = None,
    *,
    aliases: Sequence[str] = (),
    paper: Optional[Paper] = None,
    registry: Registry = MODELS,
    **metadata,
):
    """Decorator: register a builder (keras.applications signature) as a model entry.

    >>> @register_model("mynet", aliases=("mine",), paper=Paper("1234.5678", "My net"))
    ... def mynet(*, include_top=True, input_shape=None, input_tensor=None, num_classes=1000): ...
    """

    def decorator(builder):
        entry_name = name or builder.__name__
        entry = ModelEntry(
            name=entry_name,
            builder=builder,
            aliases=tuple(aliases),
            paper=paper,
            description=metadata.pop("description", (builder.__doc__ or "").strip().split("\n")[0]),
            **metadata,
        )
        registry.register(entry_name, entry, aliases)
        builder.zoo_entry = entry
        return builder

    return decorator
