"""The checked fields of a training run (:class:`~zoo.training.loop.TrainConfig`) and of a
recipe stage (:class:`~zoo.training.recipes.Stage`): one schema each (zoo.schema), used by
``zoo train --set``, the Python API and ``--resume`` alike, before any folder is created.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

from zoo.data import PHOTOMETRIC
from zoo.errors import InvalidInputError
from zoo.schema import Field, Schema, check_call_arguments
from zoo.settings import MAX_IMAGE_SIZE, MAX_SEED
from zoo.training.optimizers import OPTIMIZERS, SCHEDULES
from zoo.training.recipes import Recipe, Stage

POSITIVE_INT = dict(kind="int", low=1)


def stage_schema() -> Schema:
    """The fields of a recipe stage (optimizer names from the registry)."""
    return Schema("a recipe stage", [
        Field("name", "str"),
        Field("epochs", **POSITIVE_INT),
        Field("learning_rate", "float", low=0, low_open=True),
        Field("optimizer", "str", choices=tuple(OPTIMIZERS.names())),
        Field("optimizer_args", "dict"),
        Field("schedule", "str", choices=SCHEDULES),
        Field("milestones", "floats", low=0, high=1),
        Field("gamma", "float", low=0, low_open=True),
        Field("warmup_epochs", "float", low=0),
        Field("weight_decay", "float", low=0),
        Field("label_smoothing", "float", low=0, high=0.99),
        Field("batch_size", **POSITIVE_INT),
        Field("model_overrides", "dict"),
        Field("init_from_previous", "bool"),
        Field("reset_binary_kernels", "bool"),
        Field("bn_statistics_pass", "bool"),
        Field("photometric", "str", choices=tuple(PHOTOMETRIC)),
        Field("distill", "bool"),
        Field("label_weight", "float", low=0),
    ], aliases={"lr": "learning_rate"})  # `zoo search --set lr=` spells it so too


TRAIN_SCHEMA = Schema("a training run", [
    Field("model", "str"),
    Field("dataset", "str", optional=True),
    Field("recipe", "str", optional=True),
    Field("epochs", optional=True, **POSITIVE_INT),
    Field("batch_size", optional=True, **POSITIVE_INT),
    Field("learning_rate", "float", low=0, low_open=True, optional=True),
    Field("output", "any", optional=True),
    Field("seed", "int", low=0, high=MAX_SEED, optional=True),
    Field("image_size", "int", low=1, high=MAX_IMAGE_SIZE, optional=True),
    Field("limit", optional=True, **POSITIVE_INT),
    Field("eval_limit", optional=True, **POSITIVE_INT),
    Field("stage_overrides", "dict", optional=True),
    Field("model_overrides", "dict", optional=True),
    Field("verbose", "int", low=0, high=2, optional=True),
    Field("command", "str", optional=True),
    Field("teacher", "any", optional=True),
    Field("augment", "str", optional=True),
    Field("augment_args", "dict", optional=True),
    Field("strategy", "str", optional=True),
    Field("resume", "any", optional=True),
])

# how each TrainConfig field is spelled on the command line, for messages
_OPTIONS = {"learning_rate": "--lr", "image_size": "--image-size", "eval_limit": "--eval-limit",
            "batch_size": "--batch-size", "stage_overrides": "--set", "augment_args": "--augment-arg"}


def check_train_config(config):
    """``config`` (a TrainConfig) with every field checked and converted."""
    values = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        option = _OPTIONS.get(field.name, f"--{field.name.replace('_', '-')}")
        values[field.name] = TRAIN_SCHEMA.fields[field.name].check(value, f"{option} {value}")
    return dataclasses.replace(config, **values)


def check_stage_overrides(overrides: Optional[Dict[str, Any]], option: str = "--set") -> Dict[str, Any]:
    """``--set KEY=VALUE`` settings of a recipe stage, checked and converted."""
    return stage_schema().check(overrides or {}, option + " {key}={value}")


def check_stage(stage: Stage, recipe: str, option: str = "--set") -> Stage:
    """A stage as it will train: every field in range, ``optimizer_args`` that its optimizer
    takes (of the right type), milestones for a step schedule."""
    where = f"recipe {recipe!r}, stage {stage.name!r}: {{key}}={{value}} ({option})"
    values = stage_schema().check(dataclasses.asdict(stage), where)
    values["milestones"] = tuple(values["milestones"])
    values["optimizer_args"] = check_call_arguments(
        f"{option} optimizer_args: optimizer {values['optimizer']!r} of stage {stage.name!r}",
        OPTIMIZERS.get(values["optimizer"]), values["optimizer_args"],
        skip=("learning_rate", "total_steps", "steps_per_epoch"))
    if values["warmup_epochs"] > values["epochs"]:
        raise InvalidInputError(
            f"{option} warmup_epochs={values['warmup_epochs']:g}: stage {stage.name!r} has only "
            f"{values['epochs']} epochs; give at most that.")
    return Stage(**values)


def resolve_recipe(recipe: Recipe, epochs=None, batch_size=None, learning_rate=None,
                   stage_overrides=None) -> Recipe:
    """``recipe.resolve(...)`` with the overrides and every resulting stage checked."""
    overrides = check_stage_overrides(stage_overrides)
    resolved = recipe.resolve(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                              stage_overrides=overrides)
    return dataclasses.replace(resolved, stages=[check_stage(s, recipe.name) for s in resolved.stages])
