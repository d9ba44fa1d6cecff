"""Training: recipes (all of them), optimizers, Bop, losses, callbacks, resume, evaluation,
distillation, tf.distribute, and the fit loop ``train(TrainConfig)``."""
from zoo.training.optimizers import OPTIMIZERS, StageSchedule, get_optimizer, register_optimizer  # noqa: F401
from zoo.training.recipes import RECIPES, Recipe, Stage, get_recipe, register_recipe  # noqa: F401
from zoo.training import bop  # noqa: F401,E402  (registers the `bop` optimizer and the Bop recipes)
from zoo.training.evaluate import evaluate_model  # noqa: F401
from zoo.training.loop import TrainConfig, train, transfer_weights  # noqa: F401
