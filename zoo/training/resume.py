"""``zoo train --resume``: where an interrupted run continues, with its own settings."""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf

from zoo import data as zdata
from zoo import runs
from zoo.api import get_entry
from zoo.errors import InvalidInputError, ZooError
from zoo.training.callbacks import EpochSummary
from zoo.training.recipes import Recipe, Stage, get_recipe
from zoo.training.validation import check_stage, resolve_recipe


def state_directory(run_dir: Path, stage: Stage) -> Path:
    return Path(run_dir) / "checkpoints" / "state" / stage.name


def checkpointed_epochs(run_dir: Path, stage: Stage) -> Tuple[int, Optional[str]]:
    """Epochs of ``stage`` saved in ``run_dir`` and the checkpoint's path ((0, None): none)."""
    path = tf.train.latest_checkpoint(str(state_directory(run_dir, stage)))
    if not path:
        return 0, None
    try:
        return int(path.rsplit("-", 1)[1]), path
    except (IndexError, ValueError):
        return 0, None


def resumable_run(resume, output) -> Tuple[Path, Dict[str, Any]]:
    """The run directory ``--resume`` names and its config.json."""
    folder = Path(resume).expanduser()
    if output is not None and Path(output).expanduser().resolve() != folder.resolve():
        raise InvalidInputError(f"--resume {folder} writes into that run's directory; drop --output {output}.")
    config_file = folder / runs.CONFIG
    if not config_file.is_file():
        raise InvalidInputError(f"--resume {folder}: no config.json there; pass the directory of a "
                                f"`zoo train` run (its --output).")
    try:
        config = json.loads(config_file.read_text())
        config["model"], config["recipe"]["stages"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ZooError(f"--resume: cannot read the run configuration {config_file} ({error}).") from error
    if (folder / runs.RESULTS).is_file():
        raise InvalidInputError(f"The run in {folder} has finished (results.json exists): nothing to resume.")
    return folder, config


def recipe_from_config(config: Dict[str, Any]) -> Recipe:
    """The resolved recipe a run's config.json recorded, as it was trained."""
    saved = config["recipe"]
    fields = {f.name for f in dataclasses.fields(Stage)}
    stages = []
    for values in saved["stages"]:
        values = {key: value for key, value in values.items() if key in fields}
        values["milestones"] = tuple(values.get("milestones") or ())
        stages.append(check_stage(Stage(**values), saved["name"], "config.json"))
    return Recipe(name=saved["name"], description=saved.get("description", ""), stages=stages)


def resume_settings(entry, config: Dict[str, Any], folder: Path, given: Dict[str, Any]) -> Dict[str, Any]:
    """The settings of the run in ``folder``. Options given again must agree with
    them: a resumed run continues the same training, it cannot change it."""
    if get_entry(config["model"]).name != entry.name:
        raise InvalidInputError(f"{folder} holds a run of {config['model']}, not {entry.name}.")
    recipe = recipe_from_config(config)
    changes = []

    def differs(option, value, saved):
        if value is not None and value != saved:
            changes.append(f"{option} {value} (the run has {saved})")

    if given["dataset"] is not None:
        differs("--dataset", zdata.get_dataset(given["dataset"]).name, config["dataset"])
    differs("--seed", given["seed"], config.get("seed"))
    differs("--limit", given["limit"], config.get("limit"))
    differs("--eval-limit", given["eval_limit"], config.get("eval_limit"))
    differs("--image-size", given["image_size"], config["input_shape"][0])
    differs("--teacher", given["teacher"], config.get("teacher"))
    if given["model_overrides"]:
        differs("model settings", given["model_overrides"], config.get("model_overrides") or {})
    if given["recipe"] is not None:
        differs("--recipe", get_recipe(given["recipe"]).name, recipe.name)
    again = resolve_recipe(recipe, epochs=given["epochs"], batch_size=given["batch_size"],
                           learning_rate=given["learning_rate"], stage_overrides=given["stage_overrides"])
    for before, after in zip(recipe.stages, again.stages):
        for field in dataclasses.fields(Stage):
            old, new = getattr(before, field.name), getattr(after, field.name)
            if json.dumps(old, default=str) != json.dumps(new, default=str):
                changes.append(f"{field.name}={new} in stage '{before.name}' (the run has {old})")
    saved_augment = config.get("augment")
    if given.get("augment") is not None:
        differs("--augment", given["augment"], (saved_augment or {}).get("name"))
    if changes:
        raise InvalidInputError(
            f"--resume {folder} continues that run with its own settings (config.json), but this "
            f"command changes {'; '.join(changes)}. Drop those options, or start a new run.")
    return {
        "dataset": config["dataset"], "recipe": recipe, "seed": config.get("seed", 0),
        "limit": config.get("limit"), "eval_limit": config.get("eval_limit"),
        "input_shape": tuple(config["input_shape"]), "teacher": config.get("teacher"),
        "model_overrides": config.get("model_overrides") or {},
        "augment": (saved_augment or {}).get("name"), "augment_args": (saved_augment or {}).get("args"),
    }


def resume_point(folder: Path, recipe: Recipe) -> Tuple[int, int]:
    """``(stage index, epochs of it done)`` where a run continues, from its checkpoints."""
    start = (0, 0)
    for index, stage in enumerate(recipe.stages):
        done, _ = checkpointed_epochs(folder, stage)
        if done == 0:
            break
        start = (index, min(done, stage.epochs))
        if done < stage.epochs:
            break
        if index + 1 < len(recipe.stages):
            start = (index + 1, 0)
    return start


def trim_summary(path: Path, epochs_done: int) -> None:
    """Keeps summary.csv's complete rows of the epochs that have a checkpoint, each once."""
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or EpochSummary.FIELDS
        rows, seen = [], set()
        for row in reader:
            if None in row.values() or None in row:  # a line cut short by the kill
                continue
            try:
                epoch = int(row["epoch"])
            except (TypeError, ValueError):
                continue
            if epoch <= epochs_done and epoch not in seen:
                seen.add(epoch)
                rows.append(row)
    runs.write_csv_atomically(path, fields, rows)
