"""Single Path One-Shot NAS (arXiv 1904.00420): supernet training and evolutionary search.

Registered searches ``spos`` (real-valued ShuffleNetV2 space, constraint on
FLOPs) and ``spos_binary`` (binary 1x1 convs, constraint on OPs = FLOPs +
BOPs / 64); the spaces and networks live in :mod:`zoo.models.spos`.

1. Supernet training (paper §3.2-3.3): every batch trains one path: one of 7
   equal cost bins of the band ``[290/330, 360/330] x limit`` is drawn uniformly,
   then an architecture inside it by rejection sampling (at most 500 tries, else an
   unconstrained path), as the official Supernet/train.py does (bins of 10M in
   290-360M FLOPs for a 330M limit). One traced train step serves every path (the
   path lives in the choice layers' variables, assigned before each step). SGD,
   momentum 0.9, LR 0.5 at batch 1024 (scaled linearly to the batch size) decayed
   linearly to 0, weight decay 4e-5 on conv / dense kernels only, label smoothing
   0.1; weights whose gradient is exactly zero (blocks not on the path) are not
   updated that step, so momentum and decay do not move them (official code).
2. Evolutionary search (§3.4, :func:`zoo.search.engine.evolutionary_search`):
   candidates with cost <= limit; a candidate's score is the supernet path's top-1
   on held-out training images (the last ``val_images`` of the training split,
   never trained on) after BN recalibration on training batches.
3. The random baseline: the median score of ``random_baseline`` random
   architectures under the same limit, scored the same way.

Steps 1-3 are the one-shot flow every weight-sharing search shares,
:func:`zoo.search.oneshot.run_one_shot` (with :class:`zoo.search.oneshot.PathOptimizer`
for the path-only updates); this module holds SPOS's space, path sampler and settings.
A killed SPOS search resumes: the supernet's epochs (``supernet_log.json``), the
search's generations and the random baseline are kept in the run directory.

Costs are those of the candidate's stand-alone Keras graph at the search's
input size (``zoo.costs.model_costs``: float MACs = FLOPs, or OPs). They add up
over layers, so each (layer, block, scale) term is profiled once on a one-block
Keras model and a candidate's cost is their sum plus the stem / tail term;
``tests/test_spos.py`` checks the sum against the profile of the whole model.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from zoo import data as zdata
from zoo.costs import model_costs
from zoo.errors import InvalidInputError, ZooError
from zoo.models import spos as S
from zoo.search import SearchConfig, SearchResult, oneshot, register_search
from zoo.search.engine import SearchSpace, sample_within

# SPOS official Supernet/train.py: FLOPs band 290M-360M around the 330M search limit, in
# 7 bins of 10M, one drawn uniformly per path
BAND = (290.0 / 330.0, 360.0 / 330.0)
BINS = 7
# The paper's limit (330M FLOPs, official Search/search.py) and what our count gives the
# released searched network (S.DEFAULT_ARCH) at 224x224, 1000 classes: the default limit
# is 330M there and scales with the searched network's cost at other sizes and widths.
PAPER_LIMIT = 330e6
SEARCHED_COST = 327_857_920.0  # tests/test_spos.py profiles it
SAMPLE_TRIES = 500
MAX_SAMPLE = len(S.SCALES) - 1  # official: at most 500 rejection tries per training path
DEFAULTS = {
    "supernet_epochs": 120,  # 150k iterations at batch 1024 on ImageNet (~120 epochs)
    "recalibration_batches": 200,  # official search: 200 train-mode batches
    "lr": 0.5,  # SGD at batch 1024 (official Supernet/train.py), scaled to the batch size
    "momentum": 0.9,
    "weight_decay": 4e-5,
    "label_smoothing": 0.1,
    "optimizer": "sgd",  # "adam": Adam (lr default 2e-3), the zoo's short-run choice
    "width": 1.0,
    "layers": S.NUM_LAYERS,  # choice layers: the paper's 20, or 5 / 10 / 15 for small inputs
    "val_images": 10000,  # held out of the training split to score candidates
    "traced": True,  # one traced train step for every path; false: eager steps
}


# ----------------------------------------------------------------------------- the space


class SPOSSpace(SearchSpace):
    """``layers`` block genes (4 options) then ``layers`` channel-scale genes (8 options)."""

    def __init__(self, width: float = 1.0, binary: bool = False, input_shape=(224, 224, 3),
                 num_classes: int = 1000, layers: int = S.NUM_LAYERS):
        self.width, self.binary = float(width), bool(binary)
        self.input_shape, self.num_classes = tuple(input_shape), int(num_classes)
        self.specs = S.layer_specs(self.width, layers)
        self.layers = n = len(self.specs)
        self.choices = (len(S.BLOCKS),) * n + (len(S.SCALES),) * n
        self.metric = "ops" if binary else "float_macs"
        sizes, (h, w) = [], S.stem_size(self.input_shape[:2])
        for spec in self.specs:
            sizes.append((h, w))
            if spec.stride == 2:
                h, w = (h + 1) // 2, (w + 1) // 2
        self.sizes = sizes
        self._terms: Dict[Tuple, Any] = {}
        self._fixed: Optional[float] = None

    @property
    def model(self) -> str:
        return "spos_binary" if self.binary else "spos"

    def encode(self, candidate) -> str:
        return S.format_arch(candidate[:self.layers], candidate[self.layers:], self.width)

    def decode(self, arch: str):
        blocks, scales, width = S.parse_arch(arch)
        if len(blocks) != self.layers:
            raise InvalidInputError(f"Architecture {arch!r} has {len(blocks)} choice layers, this "
                                    f"space {self.layers}.")
        if (width or 1.0) != self.width:
            raise InvalidInputError(f"Architecture {arch!r} has width {width or 1.0:g}, this "
                                    f"space {self.width:g}.")
        return tuple(blocks) + tuple(scales)

    def build(self, candidate, **kwargs):
        """The stand-alone Keras model of a candidate at the space's input shape."""
        return S.build_spos(self.encode(candidate), binary=self.binary,
                            input_shape=self.input_shape, num_classes=self.num_classes, **kwargs)

    # -- costs: per (layer, block, scale) terms from one-block Keras graphs -----------------
    def _profile(self, spec: "S.LayerSpec", h: int, w: int, block: int, scale: int) -> float:
        inputs = tf.keras.Input((h, w, spec.inp))
        outputs = S.standalone_block(inputs, spec, block, scale, self.binary, True)
        return float(model_costs(tf.keras.Model(inputs, outputs))[self.metric])

    def term(self, layer: int, block: int, scale: int) -> float:
        """Cost of block ``block`` at scale ``scale`` in layer ``layer``.

        A block's MACs are a polynomial of degree <= 2 in its mid channels (Xception's
        mid -> mid 1x1 conv is the square term), so three profiled widths give every
        other one exactly (rounded to 1/64, the resolution of OPs = FLOPs + BOPs / 64).
        """
        spec = self.specs[layer]
        h, w = self.sizes[layer]
        key = (spec.inp, spec.oup, spec.stride, h, w, block)
        if key not in self._terms:
            mids = [spec.mid(s) for s in (0, 3, MAX_SAMPLE)]
            if len(set(mids)) == 3:
                self._terms[key] = ("poly", mids,
                                    [self._profile(spec, h, w, block, s) for s in (0, 3, MAX_SAMPLE)])
            else:  # tiny widths: some scales share a channel count, profile each one
                self._terms[key] = ("table", None,
                                    [self._profile(spec, h, w, block, s) for s in range(len(S.SCALES))])
        kind, mids, costs = self._terms[key]
        if kind == "table":
            return costs[scale]
        x = spec.mid(scale)
        value = sum(c * np.prod([(x - m) / (mi - m) for m in mids if m != mi])
                    for mi, c in zip(mids, costs))
        return round(float(value) * 64.0) / 64.0

    def fixed_cost(self) -> float:
        """Stem + last conv + classifier: a whole model's cost minus its block terms."""
        if self._fixed is None:
            candidate = (0,) * (2 * self.layers)  # Shuffle3x3 at scale 0.2 everywhere
            whole = float(model_costs(self.build(candidate))[self.metric])
            self._fixed = whole - self._blocks_cost(candidate)
        return self._fixed

    def _blocks_cost(self, candidate) -> float:
        n = self.layers
        return float(sum(self.term(i, candidate[i], candidate[n + i]) for i in range(n)))

    def cost(self, candidate) -> float:
        return self.fixed_cost() + self._blocks_cost(candidate)

    def cost_range(self) -> Tuple[float, float]:
        """The cheapest and the most expensive architecture of the space."""
        n = self.layers
        low = high = self.fixed_cost()
        for i in range(n):
            terms = [self.term(i, b, s) for b in range(len(S.BLOCKS)) for s in range(len(S.SCALES))]
            low, high = low + min(terms), high + max(terms)
        return low, high


# ----------------------------------------------------------------------------- the search


def make_path_sampler(space: SPOSSpace, low: float, high: float, seed: int, bins: int = BINS):
    """Candidates in ``[low, high]``: one of ``bins`` equal cost bins uniformly, then a uniform
    candidate inside it (rejection, <= 500 tries, else any candidate), as the official code."""
    rng = np.random.default_rng([int(seed), 1904])
    edges = np.linspace(float(low), float(high), int(bins) + 1)

    def sample():
        index = int(rng.integers(len(edges) - 1))
        try:
            return sample_within(space, float(edges[index + 1]), rng, SAMPLE_TRIES,
                                 min_cost=float(edges[index]))
        except ZooError:
            return space.random(rng)

    return sample


def default_max_cost(space: SPOSSpace) -> float:
    """The paper's 330M relative to its searched network: that network's cost in ``space``
    x 330M / SEARCHED_COST (exactly 330M FLOPs at 224x224, 1000 classes, width 1.0). In a
    shallower space the plain ShuffleNetV2 (Shuffle3x3 at scale 1.0 everywhere) stands in."""
    layers = space.layers
    if layers == S.NUM_LAYERS:
        default = S.DEFAULT_BLOCKS + S.DEFAULT_SCALES
    else:
        default = (0,) * layers + (S.DEFAULT_SCALE_INDEX,) * layers
    return space.cost(default) * PAPER_LIMIT / SEARCHED_COST


def run_spos(config: SearchConfig, binary: bool = False) -> SearchResult:
    method = "spos_binary" if binary else "spos"
    oneshot.check_settings(config, sorted(set(DEFAULTS) | {"band"}), label=method)
    tf.keras.utils.set_random_seed(config.seed)

    spec = zdata.get_dataset(config.dataset)
    from zoo.api import get_entry

    input_shape = zdata.input_shape_for(spec, get_entry(method), config.image_size)

    def setting(key, kind=float):
        return oneshot.setting(config, key, DEFAULTS[key], kind)

    width, layers = setting("width"), setting("layers", int)
    space = SPOSSpace(width, binary, input_shape, spec.num_classes, layers)
    max_cost = float(default_max_cost(space) if config.max_ops is None else config.max_ops)
    band = config.extra.get("band", BAND)
    low, high = float(band[0]) * max_cost, float(band[1]) * max_cost
    cheapest, dearest = space.cost_range()
    if max_cost < cheapest:
        raise InvalidInputError(
            f"--max-ops {max_cost:.4g} is below the cheapest {method} architecture at width "
            f"{width:g} and input {input_shape[:2]} ({cheapest:.4g}); its range is "
            f"{cheapest:.4g} .. {dearest:.4g}.")
    print(f"{method}: {space.metric} of the space {cheapest:.4g} .. {dearest:.4g}, limit "
          f"{max_cost:.4g}, supernet paths in [{low:.4g}, {high:.4g}]", file=sys.stderr)

    supernet = S.build_supernet(width=width, binary=binary, input_shape=input_shape,
                                num_classes=spec.num_classes, layers=layers)
    optimizer = setting("optimizer", str)
    lr = oneshot.setting(config, "lr", DEFAULTS["lr"] * int(config.batch_size) / 1024
                         if optimizer == "sgd" else 2e-3)

    def set_path(candidate):
        S.set_path(supernet, candidate[:layers], candidate[layers:])

    def make_optimizer(total_steps):
        return oneshot.PathOptimizer(supernet.trainable_variables, optimizer, lr, total_steps,
                                     setting("momentum"), setting("weight_decay"))

    def result_extra(plan: oneshot.OneShot, facts: Dict[str, Any]) -> Dict[str, Any]:
        return {"metric": space.metric, "model": space.model, "width": width, "layers": layers,
                "input_shape": facts["input_shape"], "supernet_epochs": facts["supernet_epochs"],
                "supernet_seconds": round(facts["supernet_seconds"], 1),
                "search_seconds": round(facts["search_seconds"], 1),
                "evaluated": facts["evaluated"], "train_images": facts["train_images"],
                "score_images": facts["score_images"],
                "recalibration_batches": facts["recalibration_batches"], "band": [low, high]}

    return oneshot.run_one_shot(config, oneshot.OneShot(
        method=method, model=space.model, space=space, supernet=supernet, set_path=set_path,
        make_optimizer=make_optimizer, spec=spec, input_shape=input_shape, max_cost=max_cost,
        cost_label="OPs" if binary else "FLOPs (MACs)",
        default_epochs=DEFAULTS["supernet_epochs"],
        default_recalibration=DEFAULTS["recalibration_batches"],
        label_smoothing=setting("label_smoothing"),
        sample_path=make_path_sampler(space, low, high, config.seed),
        run_name=f"{method}-search", val_images=setting("val_images", int),
        resumable={"width": width, "layers": layers}, progress="epochs",
        traced=setting("traced", bool), score_label="supernet top-1 (%), held-out",
        result_extra=result_extra, result_indent=1))


@register_search("spos", model="spos", supernet="spos_supernet",
                 paper="arXiv 1904.00420 (Single Path One-Shot NAS, ECCV 2020)",
                 description="SPOS: ShuffleNetV2 block + channel search under a FLOPs limit")
def search_spos(config: SearchConfig) -> SearchResult:
    """SPOS: ShuffleNetV2 block + channel search under a FLOPs limit."""
    return run_spos(config, binary=False)


@register_search("spos_binary", model="spos_binary", supernet="spos_binary_supernet",
                 paper="arXiv 1904.00420 (SPOS) with binary 1x1 convs",
                 description="SPOS with binary 1x1 convs (RSign / RPReLU) under an OPs limit")
def search_spos_binary(config: SearchConfig) -> SearchResult:
    """SPOS with binary 1x1 convs under an OPs limit."""
    return run_spos(config, binary=True)
