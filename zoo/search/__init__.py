"""Architecture search: one evolutionary engine shared by every search method.

A search method (SPOS, binary MobileNet group-conv search, MetaPruning) is a
registry entry: a ``run(config) -> SearchResult`` function that trains its
supernet and runs :func:`zoo.search.engine.evolutionary_search`, plus the names
of the model entries that build its supernet and a searched architecture
(``zoo.load(method.model, arch=result.arch)``), so a searched network is
retrained from scratch with ``zoo train MODEL --arch STRING``. The weight-sharing
methods share one supernet trainer and one-shot flow, :mod:`zoo.search.oneshot`.

>>> from zoo.search import get_search, SearchConfig
>>> result = get_search("spos").run(SearchConfig(output=Path("runs/spos"), supernet_epochs=2))
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from zoo.registry import Registry
from zoo.schema import Field, Schema
from zoo.settings import MAX_IMAGE_SIZE, MAX_SEED


@dataclasses.dataclass(frozen=True)
class SearchMethod:
    """One registered architecture-search method."""

    name: str
    run: Callable[["SearchConfig"], "SearchResult"]  # supernet training + evolutionary search
    model: str  # registered entry that builds a searched architecture: zoo.load(model, arch=STRING)
    supernet: str  # registered entry of the supernet
    paper: str
    description: str


SEARCHES: Registry[SearchMethod] = Registry("search")


def register_search(name: str, *, model: str, supernet: str, paper: str, description: str = "",
                    aliases: Sequence[str] = ()):
    """Decorator: register ``run(config) -> SearchResult`` as the search method ``name``."""

    def decorator(run):
        text = description or (run.__doc__ or "").strip().split("\n")[0]
        SEARCHES.register(name, SearchMethod(name=name, run=run, model=model, supernet=supernet,
                                             paper=paper, description=text), aliases)
        return run

    return decorator


# Modules under zoo/search/ that register a method when imported (loaded on first use, so
# `import zoo` stays light). A module that does not exist in this checkout is skipped.
METHOD_MODULES = ("spos", "bmes", "metapruning")
_loaded = False


def load_methods() -> Registry:
    """Import the method modules (once) and return the registry."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in METHOD_MODULES:
            full = f"{__name__}.{module}"
            try:
                importlib.import_module(full)
            except ModuleNotFoundError as error:
                if error.name != full:
                    raise
    return SEARCHES


def get_search(name: str) -> SearchMethod:
    """The registered search method ``name`` (raises UnknownNameError with close matches)."""
    return load_methods().get(name)


@dataclasses.dataclass
class SearchConfig:
    """Everything a search run needs; method-specific settings go in ``extra``."""

    dataset: str = "fashion_mnist"
    output: Optional[Path] = None  # run directory (supernet weights, search log json, plots)
    supernet_epochs: Optional[int] = None  # None = the method's default
    max_ops: Optional[float] = None  # constraint limit (OPs for binary spaces, FLOPs for real ones)
    # SPOS (arXiv 1904.00420) §3.4 / MetaPruning (arXiv 1903.10258) §3.3: population 50,
    # 20 generations, top-10 parents, 25 mutations with gene probability 0.1, 25 crossovers
    population: int = 50
    generations: int = 20
    top_k: int = 10
    mutations: int = 25
    crossovers: int = 25
    mutation_prob: float = 0.1
    batch_size: int = 128
    image_size: Optional[int] = None
    limit: Optional[int] = None  # training images used for the supernet and BN recalibration
    eval_limit: Optional[int] = None  # held-out images that score a candidate
    seed: int = 0
    random_baseline: int = 20  # random architectures under the same limit scored for the median
    recalibration_batches: Optional[int] = None  # None = the method's default
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)  # --set KEY=VALUE

    def __post_init__(self):
        checked = SEARCH_SCHEMA.check(
            {f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
            "--{option} {value}")
        for key, value in checked.items():
            setattr(self, key, value)
        if self.output is not None:
            self.output = Path(self.output)
        # one name with `zoo train --set`: learning_rate (lr, the methods' own key, kept)
        if "learning_rate" in self.extra:
            self.extra["lr"] = self.extra.pop("learning_rate")


_COUNT = dict(kind="int", low=1)
SEARCH_SCHEMA = Schema("a search", [
    Field("dataset", "str"), Field("output", "any", optional=True),
    Field("supernet_epochs", "int", low=0, optional=True),
    Field("max_ops", "float", low=0, low_open=True, optional=True),
    Field("population", **_COUNT), Field("generations", **_COUNT), Field("top_k", **_COUNT),
    Field("mutations", "int", low=0), Field("crossovers", "int", low=0),
    Field("mutation_prob", "float", low=0, high=1), Field("batch_size", **_COUNT),
    Field("image_size", "int", low=1, high=MAX_IMAGE_SIZE, optional=True),
    Field("limit", optional=True, **_COUNT), Field("eval_limit", optional=True, **_COUNT),
    Field("seed", "int", low=0, high=MAX_SEED), Field("random_baseline", **_COUNT),
    Field("recalibration_batches", "int", low=0, optional=True), Field("extra", "dict"),
])


@dataclasses.dataclass
class SearchResult:
    """What a search returns (and ``zoo search --format json`` prints)."""

    method: str
    arch: str
    score: float
    cost: float
    max_cost: float
    random_median_score: float
    random_scores: List[float]
    output: Optional[Path]
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        record = dataclasses.asdict(self)
        record["output"] = None if self.output is None else str(self.output)
        return record


__all__ = [
    "SEARCHES", "SearchMethod", "SearchConfig", "SearchResult", "register_search", "get_search",
    "load_methods",
]
