"""Training recipes as data: one or more stages, each a model variant, an
optimizer, a learning-rate schedule and a loss. Papers' values are the
defaults; ``Recipe.resolve`` applies a user's overrides."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

from zoo.errors import InvalidInputError
from zoo.registry import Paper, Registry


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
        }


RECIPES: Registry[Recipe] = Registry("recipe")


def register_recipe(recipe: Recipe) -> Recipe:
    return RECIPES.register(recipe.name, recipe, recipe.aliases)


def get_recipe(name: str) -> Recipe:
    return RECIPES.get(name)


BIREAL = Paper("1808.00278", "Bi-Real Net", "ECCV 2018")

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
    )],
))

register_recipe(Recipe(
    name="birealnet_two_step",
    description="Bi-Real Net's paper recipe: pre-train the real-valued network with clip(-1, x, 1) "
                "activations and real weights, then train the binary network initialised from it "
                "(SGD, momentum 0.9, no weight decay).",
    paper=BIREAL,
    aliases=("birealnet",),
    stages=[
        Stage(
            name="real_clip",
            # Standard ResNet hyper-parameters for the real-valued pre-training (ECCV §4.1).
            epochs=90,
            learning_rate=0.1,
            optimizer="sgd",
            optimizer_args={"momentum": 0.9},
            schedule="step",
            milestones=(1 / 3, 2 / 3),
            weight_decay=1e-4,
            batch_size=256,
            model_overrides={"activation": "clip", "binary_weights": False},
        ),
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
        ),
    ],
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

REACTNET = Paper("2003.03488", "ReActNet", "ECCV 2020")
_REACTNET_STEP = dict(
    epochs=128,  # official run.sh: 128 epochs per step (the paper: 600k iterations at batch 256)
    learning_rate=1.25e-3,  # official run.sh, MobileNet variant at batch 256
    optimizer="adam",
    schedule="linear",  # LambdaLR 1 - epoch / epochs
    batch_size=256,
    distill=True,  # only the distributional loss, no label loss (official train.py)
)
register_recipe(Recipe(
    name="reactnet_two_step",
    description="ReActNet's two steps with the distributional loss from a real-valued teacher: "
                "binary activations + real weights (weight decay 1e-5), then binary weights too "
                "(weight decay 0), initialised from step 1; Adam, LR linearly decayed to 0.",
    paper=REACTNET,
    aliases=("reactnet",),
    stages=[
        Stage(name="step1", weight_decay=1e-5, model_overrides={"binary_weights": False},
              **_REACTNET_STEP),
        Stage(name="step2", weight_decay=0.0, **_REACTNET_STEP),
    ],
))
