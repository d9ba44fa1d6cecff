"""MetaPruning (ICCV 2019, arXiv 1903.10258): PruningNet training + evolutionary search.

Two registered methods, ``metapruning_mobilenet_v1`` and ``metapruning_mobilenet_v2``
(one per network; the version is part of the name so that each method names
the one entry that builds its result). Step 1 trains the PruningNet
(``pruningnet_mobilenet_v1/v2``) with stochastic structure sampling: every step a
new uniformly random width ratio for every gene. Step 2 runs the shared
evolutionary search under a FLOPs limit; each candidate is scored with the
PruningNet's generated weights after BN recalibration, no fine-tuning. Step 3,
training the pruned network from scratch, is
``zoo train metapruning_mobilenet_v1 --arch STRING``.

Settings (``--set KEY=VALUE``): ``width`` (base width of the PruningNet and
the pruned net, default 1.0 for V1 and 1.4 for V2, the papers' unpruned nets),
``lr`` (SGD momentum 0.9, default 0.25, linear to 0: the official PruningNet
training), ``label_smoothing`` (default 0.1). The official code's weight decay
(4e-5 on V1's generators) is not applied.
"""
from __future__ import annotations

from typing import Sequence, Tuple

from zoo.errors import InvalidInputError
from zoo.models import metapruning as mp
from zoo.models._arch import split_width
from zoo.search import SearchConfig, SearchResult, oneshot, register_search
from zoo.search.engine import SearchSpace

# official search scripts: FLOPs <= 330M, against 569M (V1 1.0x) / 585M (V2 1.4x) unpruned
DEFAULT_FLOPS_FRACTION = {"v1": 330 / 569, "v2": 330 / 585}
# the papers' unpruned networks: MobileNetV1 1.0x, MobileNetV2 1.4x (paper Table 2 / official
# code). V2 also needs it here: at 0.5x its PruningNet did not train on Fashion-MNIST (NaN)
DEFAULT_WIDTH = {"v1": 1.0, "v2": 1.4}
DEFAULT_SUPERNET_EPOCHS = 64  # official PruningNet training (MobileNetV1/V2): 64 epochs
DEFAULT_RECALIBRATION = 20  # batches (the official code: 100 batches of 1000 images)
SETTINGS = ("width", "lr", "label_smoothing")


class MetaPruningSpace(SearchSpace):
    """One gene per prunable width: the index of its ratio in
    :data:`zoo.models.metapruning.RATIO_PERCENTS` (31 choices). Cost: the float
    MACs ("FLOPs") of the pruned network at the search's input size, i.e.
    conv/dense kernel sizes times output pixels over its Keras graph, as
    :func:`zoo.costs.model_costs` counts them; computed from the shared network
    spec (:func:`zoo.models.metapruning.conv_flops`, checked against
    ``model_costs`` of the built candidate in the tests) because building a graph
    per rejection-sampled candidate would take seconds each."""

    def __init__(self, version: str, width: float = 1.0, input_shape=(224, 224, 3),
                 num_classes: int = 1000):
        self.version = version
        self.width = float(width)
        self.spec = mp.network_spec(version, width)
        self.input_shape = tuple(input_shape)
        self.num_classes = int(num_classes)
        self.choices = (len(mp.RATIO_PERCENTS),) * self.spec.num_genes

    def percents(self, candidate) -> Tuple[int, ...]:
        return tuple(mp.RATIO_PERCENTS[int(g)] for g in candidate)

    def cost(self, candidate) -> float:
        return float(mp.conv_flops(self.spec, self.percents(candidate), self.input_shape,
                                   self.num_classes))

    def full_cost(self) -> float:
        return self.cost((len(mp.RATIO_PERCENTS) - 1,) * self.spec.num_genes)

    def encode(self, candidate) -> str:
        return mp.encode_arch(self.percents(candidate), self.width)

    def decode(self, arch: str):
        body, _ = split_width(arch, self.width)
        percents = mp.parse_arch(body, self.spec)
        return tuple(mp.RATIO_PERCENTS.index(p) for p in percents)


def _run(version: str, config: SearchConfig) -> SearchResult:
    from zoo import data as zdata
    from zoo.api import get_entry, load
    from zoo.training.optimizers import StageSchedule, get_optimizer

    oneshot.check_settings(config, SETTINGS)
    width = oneshot.setting(config, "width", DEFAULT_WIDTH[version])
    lr = oneshot.setting(config, "lr", 0.25)  # official PruningNet training: SGD 0.25, linear to 0
    smoothing = oneshot.setting(config, "label_smoothing", 0.1)  # official training's smoothing
    method = f"metapruning_mobilenet_{version}"
    supernet_name = f"pruningnet_mobilenet_{version}"
    spec = zdata.get_dataset(config.dataset)
    input_shape = zdata.input_shape_for(spec, get_entry(supernet_name), config.image_size)
    space = MetaPruningSpace(version, width, input_shape, spec.num_classes)
    full = space.full_cost()
    max_cost = (float(config.max_ops) if config.max_ops is not None
                else DEFAULT_FLOPS_FRACTION[version] * full)
    lowest = space.cost((0,) * len(space.choices))
    if max_cost < lowest:
        raise InvalidInputError(
            f"--max-ops {max_cost:.4g} is below the smallest {method} network at width {width} "
            f"and input {tuple(input_shape)} ({lowest:.4g} FLOPs, every width at 10%); raise it.")
    supernet = load(supernet_name, width=width, input_shape=input_shape,
                    num_classes=spec.num_classes)

    def set_path(candidate: Sequence[int]):
        mp.set_architecture(supernet, space.percents(candidate))

    def make_optimizer(total_steps):
        return get_optimizer("sgd", StageSchedule(lr, total_steps, "linear"), momentum=0.9)

    return oneshot.run_one_shot(config, oneshot.OneShot(
        method=method, model=method, space=space, supernet=supernet, set_path=set_path,
        make_optimizer=make_optimizer, spec=spec, input_shape=input_shape, max_cost=max_cost,
        cost_label="FLOPs", default_epochs=DEFAULT_SUPERNET_EPOCHS,
        default_recalibration=DEFAULT_RECALIBRATION, label_smoothing=smoothing,
        extra={"width": width, "unpruned_flops": full}))


@register_search("metapruning_mobilenet_v1", model="metapruning_mobilenet_v1",
                 supernet="pruningnet_mobilenet_v1", paper="arXiv 1903.10258",
                 aliases=("metapruning", "metapruning_v1"),
                 description="MetaPruning of MobileNetV1: PruningNet with stochastic structure "
                             "sampling, then evolutionary search of 13 widths under a FLOPs limit.")
def run_v1(config: SearchConfig) -> SearchResult:
    """MetaPruning of MobileNetV1 (13 width genes)."""
    return _run("v1", config)


@register_search("metapruning_mobilenet_v2", model="metapruning_mobilenet_v2",
                 supernet="pruningnet_mobilenet_v2", paper="arXiv 1903.10258",
                 aliases=("metapruning_v2",),
                 description="MetaPruning of MobileNetV2: PruningNet with stochastic structure "
                             "sampling, then evolutionary search of 24 widths under a FLOPs limit.")
def run_v2(config: SearchConfig) -> SearchResult:
    """MetaPruning of MobileNetV2 (24 width genes)."""
    return _run("v2", config)
