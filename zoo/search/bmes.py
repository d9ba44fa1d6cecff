"""Binary MobileNet group-conv search (CVPR 2020, arXiv 2005.06305): supernet + evolution.

Step 1 trains ``bmes_supernet`` with a new uniformly random group count for
every searched 3x3 conv at every step (the paper's "random group combinations
at each conv layer"); step 2 runs the shared evolutionary search
(:mod:`zoo.search.engine`) under an OPs limit, scoring each candidate with the
supernet's weights after BN recalibration; step 3, retraining the searched
network from scratch, is ``zoo train bmes --arch STRING``.

The one-shot flow (data, supernet training, scoring, baseline, result) is
:func:`zoo.search.oneshot.run_one_shot`, shared with SPOS and MetaPruning.

Settings (``zoo search bmes --set KEY=VALUE``): ``width`` (network width,
default 1.0 = ReActNet-A's), ``lr`` (Adam, default 1.25e-3, ReActNet's code
for its binary MobileNet; the paper's is not known).
"""
from __future__ import annotations

from typing import Tuple

from zoo.errors import InvalidInputError
from zoo.memory import discarded_models
from zoo.models import bmes as bm
from zoo.models._arch import split_width
from zoo.search import SearchConfig, SearchResult, oneshot, register_search
from zoo.search.engine import SearchSpace

# ----------------------------------------------------------------------------- the space


class BmesSpace(SearchSpace):
    """One gene per block: the index of its 3x3 conv's group count in
    :func:`zoo.models.bmes.group_choices`. Cost: OPs (FLOPs + BOPs / 64) of the
    stand-alone ``bmes`` network at the search's input size.

    Every layer but the searched 3x3 convs is the same for all candidates, so
    the OPs are measured once with :func:`zoo.costs.model_costs` on the Keras
    graph of the all-depthwise network, and a candidate's OPs are that plus,
    per searched conv, ``(pixels * 9 * C * C / g - pixels * 9 * C) / 64``
    (``tests/test_bmes.py`` checks the sum against ``model_costs`` of the
    candidate's own graph)."""

    def __init__(self, width: float = 1.0, input_shape=(224, 224, 3), num_classes: int = 1000):
        from zoo.costs import model_costs

        self.width = float(width)
        self.channels = bm.layer_channels(width)
        self.options = [bm.group_choices(c) for c in self.channels]
        self.choices = tuple(len(o) for o in self.options)
        depthwise = tuple(len(o) - 1 for o in self.options)
        import tensorflow as tf

        with discarded_models():
            model = bm.bmes(arch=self.encode(depthwise), width=width,
                            input_shape=tuple(input_shape), num_classes=num_classes)
            self.pixels = []
            for index in range(bm.NUM_BLOCKS):
                shape = model.get_layer(f"block{index + 1}_conv3x3").output_shape
                self.pixels.append(int(shape[1]) * int(shape[2]))
            self.base_ops = model_costs(model)["ops"] - sum(
                self.layer_bops(i, self.channels[i]) for i in range(bm.NUM_BLOCKS)) / 64.0
            del model
        tf.keras.backend.clear_session()

    def layer_bops(self, index: int, groups: int) -> int:
        c = self.channels[index]
        return self.pixels[index] * 9 * c * (c // groups)

    def groups(self, candidate) -> Tuple[int, ...]:
        return tuple(o[int(g)] for o, g in zip(self.options, candidate))

    def cost(self, candidate) -> float:
        groups = self.groups(candidate)
        return self.base_ops + sum(self.layer_bops(i, g) for i, g in enumerate(groups)) / 64.0

    def encode(self, candidate) -> str:
        return bm.encode_arch(self.groups(candidate), self.width)

    def decode(self, arch: str):
        body, _ = split_width(arch, self.width)
        groups = bm.parse_arch(body, self.width)
        return tuple(o.index(g) for o, g in zip(self.options, groups))


# ----------------------------------------------------------------------------- the method

BMES_SETTINGS = ("width", "lr")
DEFAULT_SUPERNET_EPOCHS = 10  # the paper's supernet schedule is not known; a short default
DEFAULT_RECALIBRATION = 20  # batches (SPOS's code recalibrates on 20k images; 20 x 128 here)


def default_max_ops(space: BmesSpace) -> float:
    """Halfway between the cheapest (all depthwise) and dearest (all full) candidate."""
    cheapest = space.cost(tuple(n - 1 for n in space.choices))
    dearest = space.cost((0,) * len(space.choices))
    return cheapest + 0.5 * (dearest - cheapest)


@register_search("bmes", model="bmes", supernet="bmes_supernet", paper="arXiv 2005.06305",
                 description="Binary MobileNet: evolutionary search of the group count of each "
                             "binary 3x3 conv under an OPs limit (one-shot supernet).")
def run(config: SearchConfig) -> SearchResult:
    """Binary MobileNet group-conv search: supernet training + evolution under an OPs limit."""
    from zoo import data as zdata
    from zoo.api import get_entry, load
    from zoo.training.optimizers import StageSchedule, get_optimizer

    oneshot.check_settings(config, BMES_SETTINGS)
    width = oneshot.setting(config, "width", 1.0)
    lr = oneshot.setting(config, "lr", 1.25e-3)  # ReActNet's official MobileNet run.sh (Adam)
    spec = zdata.get_dataset(config.dataset)
    input_shape = zdata.input_shape_for(spec, get_entry("bmes_supernet"), config.image_size)
    space = BmesSpace(width, input_shape, spec.num_classes)
    max_cost = float(config.max_ops) if config.max_ops is not None else default_max_ops(space)
    lowest = space.cost(tuple(n - 1 for n in space.choices))
    if max_cost < lowest:
        raise InvalidInputError(
            f"--max-ops {max_cost:.4g} is below the cheapest bmes network at width {width} and "
            f"input {tuple(input_shape)} ({lowest:.4g} OPs, all depthwise); raise it.")
    supernet = load("bmes_supernet", width=width, input_shape=input_shape,
                    num_classes=spec.num_classes)
    layers = bm.choice_layers(supernet)

    def set_path(candidate):
        for layer, gene in zip(layers, candidate):
            layer.choice.assign(int(gene))

    def make_optimizer(total_steps):
        return get_optimizer("adam", StageSchedule(lr, total_steps, "linear"))

    return oneshot.run_one_shot(config, oneshot.OneShot(
        method="bmes", model="bmes", space=space, supernet=supernet, set_path=set_path,
        make_optimizer=make_optimizer, spec=spec, input_shape=input_shape, max_cost=max_cost,
        cost_label="OPs", default_epochs=DEFAULT_SUPERNET_EPOCHS,
        default_recalibration=DEFAULT_RECALIBRATION, extra={"width": width}))
