"""Recipes, optimizers and the fit loop."""
from zoo.training.optimizers import OPTIMIZERS, StageSchedule, get_optimizer, register_optimizer  # noqa: F401
from zoo.training.recipes import RECIPES, Recipe, Stage, get_recipe, register_recipe  # noqa: F401
from zoo.training.loop import evaluate_model, load_for_evaluation, train, transfer_weights  # noqa: F401
from zoo.training import bop  # noqa: F401,E402  (registers the `bop` optimizer and the Bop recipes)
