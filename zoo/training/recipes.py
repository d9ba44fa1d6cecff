"""Training recipes as data: one or more stages, each a model variant, an
optimizer, a learning-rate schedule and a loss. Papers' values are the
defaults; ``Recipe.resolve`` applies a user's overrides."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

from zoo.errors import InvalidInputError
from zoo.papers import BIREAL, BOP, METAPRUNING, REACTNET, SPOS, Paper
from zoo.registry import Registry


@dataclasses.dataclass
class Stage:
    """One training phase."""

    name: str
    epochs: int
    learning_rate: float
    optimizer: str = "adam"  # a name in zoo.training.optimizers.OPTIMIZERS
    optimizer_args: Dict[str, Any] = dataclasses.field(default_factory=dict)
    schedule: str = "linear"  # linear (to 0) | cosine | step | constant
    # step: LR x gamma at these fractions of the stage's epochs
    milestones: Tuple[float, ...] = ()
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0  # L2 on conv/dense kernels, as PyTorch's coupled weight_decay
    label_smoothing: float = 0.0
    batch_size: int = 128
    # builder keyword arguments for this stage's model (e.g. real-valued pre-training)
    model_overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)
    # start from the previous stage's weights (all of them; a test checks the transfer)
    init_from_previous: bool = True
    # then draw the binary kernels afresh (ReActNet's released MobileNet step 2, whose
    # strict=False load drops them); False carries them over (the paper, AdamBNN)
    reset_binary_kernels: bool = False
    # after the stage, one epoch of training-mode passes sets every BN layer's statistics to
    # their plain average over it (SPOS Evaluation/train.py, BN momentum 1/iteration at LR 0)
    bn_statistics_pass: bool = False
    # photometric augmentation of the training images (zoo.data.PHOTOMETRIC: none | lighting |
    # color_jitter), added by the ImageNet-style pipeline only (not by Fashion-MNIST's or CIFAR's)
    photometric: str = "none"
    # train against a frozen teacher's outputs (ReActNet's distributional loss)
    distill: bool = False
    label_weight: float = 0.0  # weight of the label loss next to the distributional loss


@dataclasses.dataclass
class Recipe:
    name: str
    description: str
    stages: List[Stage]
    paper: Optional[Paper] = None
    aliases: Tuple[str, ...] = ()
    # settings that depend on the model: {model name: {stage name: {setting: value}}}
    per_model: Dict[str, Dict[str, Dict[str, Any]]] = dataclasses.field(default_factory=dict)

    def for_model(self, model: str) -> "Recipe":
        """A copy with ``model``'s own stage settings (e.g. Bi-Real-34's) applied."""
        own = self.per_model.get(model, {})
        stages = [dataclasses.replace(stage, **own.get(stage.name, {})) for stage in self.stages]
        return dataclasses.replace(self, stages=stages, per_model={})

    def resolve(self, epochs: Optional[int] = None, batch_size: Optional[int] = None,
                learning_rate: Optional[float] = None, stage_overrides: Optional[Dict[str, Any]] = None
                ) -> "Recipe":
        """A copy with the user's overrides applied to every stage."""
        stages = []
        for stage in self.stages:
            changes: Dict[str, Any] = {}
            if epochs is not None:
                if epochs < 1:
                    raise InvalidInputError(f"epochs must be at least 1, got {epochs}.")
                changes["epochs"] = int(epochs)
            if batch_size is not None:
                if batch_size < 1:
                    raise InvalidInputError(f"batch size must be positive, got {batch_size}.")
                changes["batch_size"] = int(batch_size)
            if learning_rate is not None:
                changes["learning_rate"] = float(learning_rate)
            for key, value in (stage_overrides or {}).items():
                if not hasattr(stage, key):
                    fields = ", ".join(f.name for f in dataclasses.fields(Stage))
                    raise InvalidInputError(f"Unknown recipe setting {key!r}; settings are: {fields}.")
                changes[key] = value
            stages.append(dataclasses.replace(stage, **changes))
        return dataclasses.replace(self, stages=stages)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "paper": None if self.paper is None else dataclasses.asdict(self.paper),
            "stages": [dataclasses.asdict(s) for s in self.stages],
            **({"per_model": self.per_model} if self.per_model else {}),
        }


RECIPES: Registry[Recipe] = Registry("recipe")


def register_recipe(recipe: Recipe) -> Recipe:
    return RECIPES.register(recipe.name, recipe, recipe.aliases)


def get_recipe(name: str) -> Recipe:
    return RECIPES.get(name)


register_recipe(Recipe(
    name="birealnet_adam",
    description="Bi-Real Net from scratch, the author's PyTorch recipe: Adam, LR linearly "
                "decayed to 0, label smoothing 0.1, no weight decay.",
    paper=BIREAL,
    stages=[Stage(
        name="binary",
        epochs=256,  # official PyTorch README: 256 epochs
        learning_rate=1e-3,  # official PyTorch run.sh: 1e-3 at batch 512 (18/34 layers)
        optimizer="adam",
        schedule="linear",  # LambdaLR 1 - epoch / 256
        weight_decay=0.0,  # conv weights without decay in the PyTorch code
        label_smoothing=0.1,
        batch_size=512,
        photometric="lighting",  # train.py: Lighting(0.1)
    )],
    # BiReal_50/train.py: LR 5e-4 at batch 256
    per_model={name: {"binary": {"learning_rate": 5e-4, "batch_size": 256}}
               for name in ("birealnet50", "birealnet101", "birealnet152")},
))

# Bi-Real Net's real-valued pre-training (ECCV README): 1) ReLU from scratch with ResNet's
# hyper-parameters, 2) leaky-clip (slope 0.1) fine-tuning, 3) clip(-1, x, 1) fine-tuning.
_RESNET_SGD = dict(optimizer="sgd", optimizer_args={"momentum": 0.9}, schedule="step",
                   weight_decay=1e-4, batch_size=256)
# The fine-tuning phases' lengths and LRs are not stated in the release: ours, 10 epochs each
# at ResNet's last LR (0.001), constant.
_FINE_TUNE = dict(_RESNET_SGD, epochs=10, learning_rate=1e-3, schedule="constant")

register_recipe(Recipe(
    name="birealnet_two_step",
    description="Bi-Real Net's paper recipe (ECCV README): pre-train the real-valued network "
                "in three phases (ReLU from scratch, leaky-clip, then clip(-1, x, 1) fine-tuning), "
                "then train the binary network initialised from it with the release's weight "
                "gradient (SGD, momentum 0.9, no weight decay); Bi-Real-34 has its own settings.",
    paper=BIREAL,
    aliases=("birealnet",),
    stages=[
        Stage(
            name="real_relu",
            # ResNet's hyper-parameters (ECCV README step 1): 90 epochs, LR 0.1 x0.1 at 30/60
            epochs=90,
            learning_rate=0.1,
            milestones=(1 / 3, 2 / 3),
            model_overrides={"activation": "relu", "binary_weights": False},
            **_RESNET_SGD,
        ),
        Stage(name="real_leaky_clip",  # ECCV README step 2: leaky-clip, slope 0.1
              model_overrides={"activation": "leaky_clip", "binary_weights": False}, **_FINE_TUNE),
        Stage(name="real_clip",  # ECCV README step 3: clip(-1, x, 1)
              model_overrides={"activation": "clip", "binary_weights": False}, **_FINE_TUNE),
        Stage(
            name="binary",
            epochs=20,  # ECCV README / Caffe solver: 20 epochs
            learning_rate=0.01,  # ECCV README: LR 0.01 for Bi-Real-18
            optimizer="sgd",
            optimizer_args={"momentum": 0.9},
            schedule="step",
            milestones=(0.5, 0.75),  # x0.1 at epochs 10 and 15 of 20
            weight_decay=0.0,
            batch_size=128,
            # the released HardBinaryConv's gradient (alpha detached), which LR 0.01 was tuned on
            model_overrides={"weight_gradient": "clip"},
        ),
    ],
    # ECCV README: Bi-Real-34 trains 40 epochs at batch 1024, LR 0.08 x0.1 at 20 and 30 (its Caffe
    # solver file says base_lr 0.01; we follow the README). Bi-Real-50/101/152 have no SGD
    # recipe in the release (only the Adam one): they take Bi-Real-18's settings.
    per_model={"birealnet34": {"binary": {"epochs": 40, "batch_size": 1024, "learning_rate": 0.08}}},
))

register_recipe(Recipe(
    name="larq_zoo_adam",
    description="larq-zoo's recipe for its literature models: Adam 5e-3 linearly decayed to 0.",
    paper=None,
    aliases=("default",),
    stages=[Stage(
        name="binary",
        epochs=300,  # larq-zoo TrainBiRealNet: 300 epochs at batch 512
        learning_rate=5e-3,
        optimizer="adam",
        schedule="linear",
        batch_size=512,
    )],
))

register_recipe(Recipe(
    name="resnet_adam",
    description="Real-valued ResNet (teachers): Adam, LR linearly decayed to 0, weight decay 1e-4.",
    stages=[Stage(name="real", epochs=90, learning_rate=1e-3, optimizer="adam", schedule="linear",
                  weight_decay=1e-4, batch_size=256)],
))

_REACTNET_STEP = dict(
    epochs=128,  # official run.sh: 128 epochs per step (the paper: 600k iterations at batch 256)
    learning_rate=1.25e-3,  # official run.sh, MobileNet variant at batch 256
    optimizer="adam",
    schedule="linear",  # LambdaLR 1 - epoch / epochs
    batch_size=256,
    distill=True,  # only the distributional loss, no label loss (official train.py)
    photometric="lighting",  # official train.py: Lighting(0.1)
)
register_recipe(Recipe(
    name="reactnet_two_step",
    description="ReActNet's two steps with the distributional loss from a real-valued teacher: "
                "binary activations + real weights (weight decay 1e-5), then binary weights too "
                "(weight decay 0), initialised from step 1 (all weights, as the paper and AdamBNN; "
                "--set reset_binary_kernels=true starts the binary kernels afresh as the released "
                "MobileNet code does); Adam, LR linearly decayed to 0.",
    paper=REACTNET,
    aliases=("reactnet",),
    stages=[
        Stage(name="step1", weight_decay=1e-5, model_overrides={"binary_weights": False},
              **_REACTNET_STEP),
        Stage(name="step2", weight_decay=0.0, **_REACTNET_STEP),
    ],
))

# bmes (zoo/models/bmes.py, arXiv 2005.06305). The paper's training schedule is not verified
# (no code): ReActNet's two steps (Adam 1.25e-3 at batch 256, linear decay, 128 epochs per
# step; binary activations + real weights, then binary weights) with plain cross-entropy, so
# no teacher is needed.
register_recipe(Recipe(
    name="bmes_two_step",
    description="Searched binary MobileNet from scratch: ReActNet's two steps (real weights, then "
                "binary weights initialised from them) with cross-entropy; Adam, linear decay.",
    paper=REACTNET,
    stages=[Stage(name="step1", epochs=128, learning_rate=1.25e-3, optimizer="adam",
                  schedule="linear", weight_decay=1e-5, batch_size=256,
                  model_overrides={"binary_weights": False}),
            Stage(name="step2", epochs=128, learning_rate=1.25e-3, optimizer="adam",
                  schedule="linear", weight_decay=0.0, batch_size=256)],
))

# SPOS's retraining of the searched network (official src/Evaluation/template/train.py)
register_recipe(Recipe(
    name="spos_sgd",
    description="SPOS's retraining of a searched network from scratch: SGD momentum 0.9, LR 0.5 "
                "linearly decayed to 0 over 300k iterations at batch 1024 (~240 epochs), weight "
                "decay 4e-5, label smoothing 0.1, colour jitter 0.4, then one epoch that "
                "recomputes the BN statistics.",
    paper=SPOS,
    stages=[Stage(name="retrain", epochs=240,  # --total-iters 300000 x 1024 / 1.28M images
                  learning_rate=0.5, optimizer="sgd", optimizer_args={"momentum": 0.9},
                  schedule="linear",  # LambdaLR 1 - step / total_iters
                  weight_decay=4e-5, label_smoothing=0.1, batch_size=1024,
                  bn_statistics_pass=True,  # the final bn_process epoch
                  photometric="color_jitter")],  # ColorJitter(0.4, 0.4, 0.4)
))

# MetaPruning's searched MobileNets (zoo/models/metapruning.py, arXiv 1903.10258)
register_recipe(Recipe(
    name="metapruning_mobilenet",
    description="MetaPruning's retraining of a searched MobileNet from scratch: SGD momentum 0.9, "
                "LR 0.5 linearly decayed to 0, weight decay 4e-5, batch 1024, 256 epochs.",
    paper=METAPRUNING,
    stages=[Stage(name="pruned", epochs=256, learning_rate=0.5, optimizer="sgd",  # official README
                  optimizer_args={"momentum": 0.9}, schedule="linear", weight_decay=4e-5,
                  label_smoothing=0.1, batch_size=1024,
                  photometric="lighting")],  # training/train.py: Lighting(0.1)
))


# ---------------------------------------------------------------------------------------
# Bop's recipes (arXiv 1906.02107; the optimizer is zoo/training/bop.py). Bop needs latent-free kernels: model_overrides switch the builders
# to NoOp(precision=1) kernels without a clip constraint. No weight decay: an L2 term on
# +-1 weights would push every weight to flip (add_weight_decay touches binary kernels too).

register_recipe(Recipe(
    name="binarynet_bop",
    description="BinaryNet on CIFAR-10 with Bop, the paper's best run (§5.2): 500 epochs, batch 50, "
                "threshold 1e-8, gamma 1e-4 x0.1 every 100 epochs, Adam 0.01 (constant) for the "
                "real-valued parameters.",
    paper=BOP,
    stages=[Stage(
        name="bop",
        epochs=500,  # §5.2: 500 epochs
        learning_rate=0.01,  # §5.2 / code bop_sec52: Adam(0.01), no LR schedule
        optimizer="bop",
        optimizer_args={"threshold": 1e-8, "gamma": 1e-4, "gamma_schedule": "step",
                        "gamma_decay": 0.1, "gamma_decay_every_epochs": 100},  # §5.2
        schedule="constant",
        batch_size=50,  # §5.2: batch 50
        model_overrides={"binary_weights": "latent_free"},
    )],
))

# §5.3 ImageNet settings shared by all three networks: batch 1024, threshold 1e-8,
# gamma linear 1e-4 -> 1e-6, Adam LR linear 2.5e-3 -> 5e-6, decayed over all steps.
def _imagenet_bop(**fields):
    return Stage(
        name="bop",
        learning_rate=2.5e-3,
        optimizer="bop",
        optimizer_args={"threshold": 1e-8, "gamma": 1e-4, "gamma_schedule": "linear",
                        "gamma_end": 1e-6, "lr_end": 5e-6},
        schedule="linear",
        batch_size=1024,
        model_overrides={"binary_weights": "latent_free"},
        **fields,
    )


register_recipe(Recipe(
    name="birealnet_bop",
    description="Bi-Real Net-18 on ImageNet with Bop (§5.3): 300 epochs, batch 1024, threshold 1e-8, "
                "gamma linear 1e-4 -> 1e-6, Adam linear 2.5e-3 -> 5e-6; latent-free binary kernels "
                "without the magnitude-aware scale.",
    paper=BOP,
    stages=[_imagenet_bop(epochs=300)],  # §5.3: 300 epochs -> 56.6%
))

register_recipe(Recipe(
    name="xnornet_bop",
    description="XNOR-Net on ImageNet with Bop (§5.3): 100 epochs, batch 1024, threshold 1e-8, "
                "gamma linear 1e-4 -> 1e-6, Adam linear 2.5e-3 -> 5e-6; latent-free binary kernels, "
                "L2 5e-7 only on the real first conv and last dense (set by the model).",
    paper=BOP,
    stages=[_imagenet_bop(epochs=100)],  # §5.3: 100 epochs -> 45.9%
))
