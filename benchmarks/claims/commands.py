"""From a claim's steps to ``zoo`` command lines: placeholders filled in, budgets
overridden for a smoke run, and each command checked against the real CLI without
running it (click's parser, then the recipe, builder, augmentation, search and SSL
names and settings it would use)."""
from __future__ import annotations

import inspect
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

from benchmarks.claims.rows import Step

# the placeholders; any other brace (e.g. the JSON of --set model_overrides={...}) is text
_PLACEHOLDER = re.compile(r"\{(seed|out|step\[(\w+)\]\[(\w+)\])\}")


def fill(argv: Sequence[str], seed: int, out: str, steps: Optional[Mapping[str, Any]] = None
         ) -> List[str]:
    """``argv`` with ``{seed}``, ``{out}`` and ``{step[NAME][KEY]}`` replaced; without
    ``steps`` (a check), or for a step of a dry run, a value not known yet is a stand-in."""

    def value(match) -> str:
        if match.group(1) == "seed":
            return str(seed)
        if match.group(1) == "out":
            return str(out)
        name, key = match.group(2), match.group(3)
        if steps is None or key not in steps.get(name, {}):
            if steps is not None and name in steps and "dry_run" not in steps[name]:
                raise KeyError(f"step {name!r} printed no {key!r}")
            return f"<{name}.{key}>"
        return str(steps[name][key])

    return [_PLACEHOLDER.sub(value, a) for a in argv]


def override_budget(argv: Sequence[str], changes: Mapping[str, Optional[int]]) -> List[str]:
    """``argv`` with ``--epochs`` / ``--limit`` / ``--eval-limit`` set to ``changes`` (for a
    smoke run): in ``train`` and ``pretrain`` steps, and in ``search`` steps, whose
    ``--supernet-epochs`` takes the epochs (unless 0: a random draw stays untrained)."""
    argv = list(argv)
    if not argv or argv[0] not in ("train", "pretrain", "search"):
        return argv
    for key, value in changes.items():
        if value is None:
            continue
        option = "--" + key.replace("_", "-")
        if argv[0] == "search" and key == "epochs":
            option = "--supernet-epochs"
            if option in argv and argv[argv.index(option) + 1] == "0":
                continue
        if option in argv:
            argv[argv.index(option) + 1] = str(value)
        else:
            argv += [option, str(value)]
    return argv


def _values(argv: Sequence[str], option: str) -> List[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == option]


def check_command(argv: Sequence[str]) -> Dict[str, Any]:
    """Parse ``zoo ARGV`` with the CLI's own click parser (nothing runs) and check the
    names and settings it passes on; returns the parsed parameters. Raises
    ``click.UsageError`` or the zoo's ``InvalidInputError`` / ``UnknownNameError``."""
    import click

    from zoo.cli import cli
    from zoo.cli._common import parse_settings

    group_ctx = cli.make_context("zoo", [argv[0]], resilient_parsing=True)
    command = cli.get_command(group_ctx, argv[0])
    if command is None:
        raise click.UsageError(f"no such zoo command: {argv[0]!r}")
    with command.make_context(argv[0], list(argv[1:]), parent=group_ctx) as ctx:
        params = dict(ctx.params)
    if argv[0] == "train":
        _check_train(params, parse_settings(params["settings"]),
                     parse_settings(params["augment_args"], "--augment-arg"))
    elif argv[0] == "search":
        from zoo.search import get_search

        get_search(params["method"])
    elif argv[0] == "pretrain":
        from zoo.api import get_entry
        from zoo.ssl import get_method

        get_entry(params["name"])
        get_method(params["method"])
    elif argv[0] == "evaluate":
        from zoo.api import get_entry

        get_entry(params["name"])
    return params


def _check_train(params: Dict[str, Any], settings: Dict[str, Any], augment_args) -> None:
    from zoo.api import get_entry
    from zoo.errors import InvalidInputError
    from zoo.training.recipes import get_recipe

    entry = get_entry(params["name"])
    recipe = get_recipe(params["recipe"] or entry.default_recipe).resolve(
        epochs=params["epochs"], batch_size=params["batch_size"],
        learning_rate=params["learning_rate"], stage_overrides=settings)
    overrides = settings.get("model_overrides")
    if overrides is not None:
        if not isinstance(overrides, dict):
            raise InvalidInputError(f"--set model_overrides takes a JSON object, got {overrides!r}.")
        accepted = inspect.signature(entry.builder).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            unknown = sorted(set(overrides) - set(accepted))
            if unknown:
                raise InvalidInputError(f"{entry.name} has no builder switch {unknown}.")
        # the switches' values are checked by the builder itself, on a tiny input
        import tensorflow as tf

        from zoo.memory import discarded_models

        for stage in recipe.stages:
            with discarded_models():
                entry.builder(input_shape=(32, 32, 3), num_classes=10, **stage.model_overrides)
            tf.keras.backend.clear_session()
    if params["augment"]:
        from zoo.augment import AUGMENTATIONS

        AUGMENTATIONS.get(params["augment"])
    if augment_args and not params["augment"]:
        raise InvalidInputError("--augment-arg without --augment.")


def check_step(step: Step) -> Dict[str, Any]:
    """:func:`check_command` of a step with its placeholders filled by stand-ins."""
    return check_command(fill(step.argv, 0, "/tmp/claims-check"))
