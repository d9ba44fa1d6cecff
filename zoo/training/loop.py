"""Fit a registered model on a dataset with a recipe: ``train(TrainConfig)``.

What a run writes is the run-directory contract of :mod:`zoo.runs`; resuming is
:mod:`zoo.training.resume`; the callbacks, losses and evaluation live beside this file.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf

from zoo import data as zdata
from zoo import layers as zl
from zoo.api import get_entry, load
from zoo.settings import EVAL_BATCH_SIZE
from zoo.errors import InvalidInputError, ZooError
from zoo.runs import (
    CONFIG, RESULTS, SUMMARY, WEIGHTS, default_output, hardware, no_partial_run,
    prepare_output_dir, save_weights_atomically, versions, write_json_atomically,
)
from zoo.training import distributed as zdist
from zoo.training.callbacks import (
    EpochSummary, NonFiniteLossGuard, SaveWeights, TrainingState, fit_verbosity, progress_callbacks,
)
from zoo.training.evaluate import evaluate_model
from zoo.training.losses import SparseCrossentropy, add_weight_decay, classification_metrics
from zoo.training.optimizers import StageSchedule, get_optimizer
from zoo.training.recipes import Recipe, Stage, get_recipe
from zoo.training.validation import check_train_config, resolve_recipe
from zoo.training.resume import (
    checkpointed_epochs, resumable_run, resume_point, resume_settings, state_directory, trim_summary,
)


@dataclasses.dataclass
class TrainConfig:
    """Everything ``zoo train`` is asked for: one record from the command line to the fit
    loop (``None``: the recipe's, dataset's or model's default).

    Every stage of the recipe runs in turn, each initialised from the previous one.
    ``limit`` / ``eval_limit`` cut the splits (for smoke tests). ``teacher`` (a run
    directory, NAME:WEIGHTS or a saved model) is required by stages with
    ``distill=True`` (ReActNet's distributional loss). ``strategy``: default, mirrored,
    multiworker or tpu (zoo.training.distributed); ``batch_size`` stays the global
    batch. ``resume``: a run directory whose run was interrupted; training continues
    from its last checkpoint with its own settings.
    """

    model: str
    dataset: Optional[str] = None
    recipe: Optional[str] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    learning_rate: Optional[float] = None
    output: Optional[os.PathLike] = None
    seed: Optional[int] = None
    image_size: Optional[int] = None
    limit: Optional[int] = None
    eval_limit: Optional[int] = None
    stage_overrides: Optional[Dict[str, Any]] = None
    model_overrides: Optional[Dict[str, Any]] = None
    verbose: Optional[int] = None
    command: Optional[str] = None
    teacher: Optional[str] = None
    augment: Optional[str] = None
    augment_args: Optional[Dict[str, Any]] = None
    strategy: Optional[str] = None
    resume: Optional[os.PathLike] = None


@dataclasses.dataclass
class _Plan:
    """A run resolved from its TrainConfig (or, resuming, from its config.json)."""

    entry: Any
    spec: Any
    recipe: Recipe
    input_shape: Tuple[int, ...]
    output: Path
    seed: int
    limit: Optional[int]
    eval_limit: Optional[int]
    teacher: Optional[str]
    model_overrides: Dict[str, Any]
    augment: Optional[str]
    augment_args: Optional[Dict[str, Any]]
    saved_config: Optional[Dict[str, Any]] = None


def transfer_weights(source, target) -> int:
    """Copy every weight of ``source`` into ``target`` (same architecture, other
    quantizers); raises unless all of them match one to one. Returns the count."""
    src, dst = source.weights, target.weights
    if len(src) != len(dst) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(src, dst)):
        raise ZooError(
            f"Cannot initialise {target.name} from {source.name}: their weights differ "
            f"({len(src)} vs {len(dst)} tensors).")
    target.set_weights(source.get_weights())
    return len(dst)


def _stage_model(name, stage: Stage, input_shape, num_classes, model_overrides):
    overrides = {**stage.model_overrides, **(model_overrides or {})}
    return load(name, input_shape=input_shape, num_classes=num_classes, **overrides)


def _plan(config: TrainConfig) -> _Plan:
    entry = get_entry(config.model)
    zdist.check_strategy_name(config.strategy)
    if config.resume is not None:
        output, saved = resumable_run(config.resume, config.output)
        settings = resume_settings(entry, saved, output, dataclasses.asdict(config))
        return _Plan(entry, zdata.get_dataset(settings["dataset"]), settings["recipe"],
                     settings["input_shape"], output, int(settings["seed"]), settings["limit"],
                     settings["eval_limit"], settings["teacher"], settings["model_overrides"],
                     settings["augment"],
                     settings["augment_args"] if settings["augment"] else config.augment_args,
                     saved)
    spec = zdata.get_dataset(config.dataset or "fashion_mnist")
    recipe = resolve_recipe(
        get_recipe(config.recipe or entry.default_recipe).for_model(entry.name), epochs=config.epochs,
        batch_size=config.batch_size, learning_rate=config.learning_rate,
        stage_overrides=config.stage_overrides)
    input_shape = zdata.input_shape_for(spec, entry, config.image_size)
    if min(input_shape[:2]) < entry.min_input_size:
        raise InvalidInputError(
            f"--image-size {input_shape[0]} is too small for {entry.name}: it needs at least "
            f"{entry.min_input_size}x{entry.min_input_size} pixels.")
    output = Path(config.output) if config.output else default_output(entry.name, spec.name)
    if (output / CONFIG).exists():
        raise ZooError(f"{output} already holds a training run ({CONFIG}); choose another "
                       f"--output, or continue it with --resume {output}.")
    return _Plan(entry, spec, recipe, tuple(input_shape), output,
                 0 if config.seed is None else int(config.seed), config.limit, config.eval_limit,
                 config.teacher, config.model_overrides or {}, config.augment, config.augment_args)


@no_partial_run
def train(config=None, /, *args, **kwargs) -> Dict[str, Any]:
    """Train a model as ``config`` (a :class:`TrainConfig`) asks; returns the final results.

    ``train("birealnet18", "fashion_mnist", epochs=1)`` is
    ``train(TrainConfig("birealnet18", "fashion_mnist", epochs=1))``.
    """
    if not isinstance(config, TrainConfig):
        config = TrainConfig(*((config,) if config is not None else ()), *args, **kwargs)
    elif args:
        raise TypeError("train(TrainConfig(...), ...) takes changes as keywords only.")
    elif kwargs:
        config = dataclasses.replace(config, **kwargs)
    config = check_train_config(config)  # every value in range before anything is created
    plan = _plan(config)
    try:
        with zdata.named_image_errors(plan.spec):
            return _run(config, plan)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted_message(plan)) from None


def _interrupted_message(plan: _Plan) -> str:
    """What Ctrl-C leaves: a run that continues with --resume, or nothing (no_partial_run)."""
    if checkpointed_epochs(plan.output, plan.recipe.stages[0])[1] is None:
        return "Interrupted before the first epoch finished: nothing was kept."
    return (f"Interrupted: `zoo train {plan.entry.name} --resume {plan.output}` continues the run "
            f"from its last finished epoch.")


def _run(config: TrainConfig, plan: _Plan) -> Dict[str, Any]:
    entry, spec, recipe, input_shape, output = (plan.entry, plan.spec, plan.recipe,
                                                plan.input_shape, plan.output)
    dist = zdist.get_strategy(config.strategy)  # multiworker: before TensorFlow runs anything else
    chief = zdist.is_chief(dist)
    for stage in recipe.stages:
        zdist.per_replica_batch(dist, stage.batch_size)
    total_train = zdata.num_examples(spec, "train")  # fails cleanly before anything is written
    verbose = fit_verbosity(config.verbose)

    needs_teacher = any(stage.distill for stage in recipe.stages)
    if needs_teacher and not plan.teacher:
        raise InvalidInputError(
            f"Recipe {recipe.name!r} trains with a distributional loss: pass --teacher (a run "
            f"directory of a trained real-valued model), or --set distill=false for plain cross-entropy.")
    if plan.teacher and not needs_teacher:
        raise InvalidInputError(
            f"--teacher {plan.teacher}: recipe {recipe.name!r} does not distill (no stage has "
            f"distill=true), so the teacher would be ignored; drop --teacher, or add --set distill=true.")
    teacher_model = None
    if plan.teacher and needs_teacher:
        from zoo.training.distill import load_teacher

        with dist.scope():  # the teacher runs on every replica too
            teacher_model = load_teacher(plan.teacher, input_shape, spec.num_classes)
    augmentation = None
    if plan.augment:  # a batch transform: mixed images and soft labels (zoo.augment)
        from zoo.augment import get_augmentation

        augmentation = get_augmentation(plan.augment, spec, input_shape, **(plan.augment_args or {}))

    tf.keras.utils.set_random_seed(plan.seed)
    train_examples = min(plan.limit, total_train) if plan.limit else total_train
    run_record = {
        "model": entry.name, "dataset": spec.name, "input_shape": list(input_shape),
        "num_classes": spec.num_classes, "seed": plan.seed, "limit": plan.limit,
        "eval_limit": plan.eval_limit, "model_overrides": plan.model_overrides,
        "recipe": recipe.to_dict(),
        "teacher": str(plan.teacher) if teacher_model is not None else None,
        "augment": None if augmentation is None else {"name": augmentation.name, "args": augmentation.config()},
        "train_examples": train_examples, "versions": versions(), "hardware": hardware(),
        "command": config.command or " ".join(sys.argv),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    # non-chief workers train the same steps but write to a folder removed at the end
    run_dir = output if chief else Path(tempfile.mkdtemp(prefix="zoo-worker-"))
    if not chief:
        atexit.register(shutil.rmtree, run_dir, True)
    start_stage, start_epoch = _start(plan, run_dir, run_record, chief)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    test_examples = zdata.num_examples(spec, "test")
    eval_batch = zdist.eval_batch_size(
        min(plan.eval_limit, test_examples) if plan.eval_limit else test_examples, EVAL_BATCH_SIZE, dist)

    previous, net, epoch_offset = None, None, 0
    for index, stage in enumerate(recipe.stages):
        if index < start_stage:  # finished before the interruption
            if index == start_stage - 1 and start_epoch == 0 and recipe.stages[start_stage].init_from_previous:
                with dist.scope():
                    previous = _stage_model(entry.name, stage, input_shape, spec.num_classes,
                                            plan.model_overrides)
                tf.train.Checkpoint(model=previous).restore(
                    checkpointed_epochs(output, stage)[1]).expect_partial()
            epoch_offset += stage.epochs
            continue
        net = _fit_stage(plan, dist, index, stage, previous, teacher_model, augmentation,
                         train_examples, eval_batch, epoch_offset, run_dir,
                         start_epoch if index == start_stage else 0, verbose)
        epoch_offset += stage.epochs
        previous = net
    return _finish(plan, net, dist, chief, run_dir, epoch_offset)


def _start(plan: _Plan, run_dir: Path, run_record: Dict[str, Any], chief: bool) -> Tuple[int, int]:
    """Write config.json of a new run, or record the resumption of an old one;
    ``(stage index, epochs of it done)`` where training starts."""
    if plan.saved_config is None:
        prepare_output_dir(run_dir)
        write_json_atomically(run_dir / CONFIG, run_record)
        return 0, 0
    output, recipe = plan.output, plan.recipe
    start_stage, start_epoch = resume_point(output, recipe)
    done = sum(s.epochs for s in recipe.stages[:start_stage]) + start_epoch
    if chief:
        plan.saved_config.setdefault("resumed", []).append(
            {"command": run_record["command"], "at": run_record["started"], "epochs_done": done,
             "hardware": run_record["hardware"]})
        write_json_atomically(output / CONFIG, plan.saved_config)
        trim_summary(output / SUMMARY, done)
    print(f"[{plan.entry.name}] resuming {output}: {done} epoch(s) done, continuing stage "
          f"{start_stage + 1} '{recipe.stages[start_stage].name}' at epoch {start_epoch + 1}",
          file=sys.stderr)
    return start_stage, start_epoch


def _fit_stage(plan: _Plan, dist, index: int, stage: Stage, previous, teacher_model, augmentation,
               train_examples: int, eval_batch: int, epoch_offset: int, run_dir: Path,
               resume_epochs: int, verbose: int):
    """Build, compile and fit one stage of the recipe; returns its trained model."""
    entry, spec, recipe, input_shape = plan.entry, plan.spec, plan.recipe, plan.input_shape
    replicas = dist.num_replicas_in_sync
    steps = math.ceil(train_examples / stage.batch_size)
    with dist.scope():  # model, optimizer and metrics are created on every replica
        net = _stage_model(entry.name, stage, input_shape, spec.num_classes, plan.model_overrides)
        if previous is not None and stage.init_from_previous:
            transfer_weights(previous, net)
            if stage.reset_binary_kernels:
                zl.reset_binary_kernels(net)
        schedule = StageSchedule(
            stage.learning_rate, steps * stage.epochs, stage.schedule,
            milestones=[round(m * steps * stage.epochs) for m in stage.milestones],
            gamma=stage.gamma, warmup_steps=round(stage.warmup_epochs * steps))
        optimizer = get_optimizer(stage.optimizer, schedule, total_steps=steps * stage.epochs,
                                  steps_per_epoch=steps, **stage.optimizer_args)
        add_weight_decay(net, stage.weight_decay)
        trainee = net
        if stage.distill:
            from zoo.training.distill import Distiller

            trainee = Distiller(net, teacher_model, label_weight=stage.label_weight)
        trainee.compile(optimizer=optimizer, loss=SparseCrossentropy(stage.label_smoothing),
                        metrics=classification_metrics(spec.num_classes))
    print(f"[{entry.name}] stage {index + 1}/{len(recipe.stages)} '{stage.name}': "
          f"{stage.epochs} epochs, {stage.optimizer} lr {stage.learning_rate}, "
          f"batch {stage.batch_size}"
          + (f" ({stage.batch_size // replicas} per replica, {zdist.describe(dist)})" if replicas > 1 else "")
          + f", input {input_shape}", file=sys.stderr)
    guard = NonFiniteLossGuard()
    state = TrainingState(net, optimizer, state_directory(run_dir, stage), guard)
    initial_epoch = 0
    if resume_epochs:  # the optimizer's slots load on its first step
        with dist.scope():
            initial_epoch = state.restore(checkpointed_epochs(plan.output, stage)[1])
    train_ds = zdata.make_dataset(spec, "train", input_shape, stage.batch_size, training=True,
                                  seed=plan.seed + index, limit=plan.limit,
                                  photometric=stage.photometric)
    if augmentation is not None:  # soft labels: categorical CE, accuracy vs. their argmax
        from zoo.augment import apply_augmentation, soft_label_training

        train_ds = apply_augmentation(train_ds, augmentation, spec.num_classes, seed=plan.seed + index)
        with dist.scope():  # metrics belong to the strategy that trains
            soft_loss, soft_metrics = soft_label_training(stage.label_smoothing, spec.num_classes)
            trainee.compile(optimizer=optimizer, loss=soft_loss, metrics=soft_metrics)
    val_ds = zdata.make_dataset(spec, "test", input_shape, eval_batch, limit=plan.eval_limit)
    prefix = f"{stage.name}_" if len(recipe.stages) > 1 else ""
    callbacks: List[tf.keras.callbacks.Callback] = [
        guard,  # first: a NaN/inf loss stops the run before anything of that epoch is saved
        SaveWeights(net, str(run_dir / "checkpoints" / (prefix + "epoch{epoch:03d}.h5")), guard),
        tf.keras.callbacks.TensorBoard(str(run_dir / "logs" / stage.name), histogram_freq=0,
                                       profile_batch=0),
        EpochSummary(run_dir / SUMMARY, stage.name, epoch_offset, guard),
        state,  # last: its checkpoint marks the epoch done (--resume trims what came after)
    ]
    callbacks[1:1] = progress_callbacks(entry.name, steps, verbose)
    with contextlib.redirect_stdout(sys.stderr):
        history = trainee.fit(zdist.distribute_dataset(train_ds, dist, stage.batch_size, train_examples),
                              epochs=stage.epochs,
                              validation_data=zdist.distribute_dataset(val_ds, dist),
                              callbacks=callbacks, verbose=verbose, initial_epoch=initial_epoch)
    if not guard.ok or any(not math.isfinite(v) for v in history.history.get("loss", [0.0])):
        raise ZooError(_diverged_message(plan.output, recipe, index, guard.where))
    if stage.bn_statistics_pass:  # one epoch: each BN's statistics = their plain average over it
        zl.recalibrate_batchnorm(net, train_ds, steps)
    if len(recipe.stages) > 1:
        save_weights_atomically(net, run_dir / f"{stage.name}_weights.h5")
    return net


def _finish(plan: _Plan, net, dist, chief: bool, run_dir: Path, epochs: int) -> Dict[str, Any]:
    """Final weights, test metrics, curves.png and results.json (last: the run is done)."""
    entry, spec, output = plan.entry, plan.spec, plan.output
    save_weights_atomically(net, run_dir / WEIGHTS)
    results = evaluate_model(net, spec, plan.input_shape, limit=plan.eval_limit, strategy=dist)
    results.update({"model": entry.name, "dataset": spec.name, "weights": str(output / WEIGHTS),
                    "input_shape": list(plan.input_shape), "epochs": epochs,
                    "finished": datetime.datetime.now().isoformat(timespec="seconds")})
    if not chief:
        shutil.rmtree(run_dir, ignore_errors=True)
        return results
    try:
        from zoo.plots import plot_training_curves

        plot_training_curves(output / SUMMARY, output / "curves.png",
                             title=f"{entry.name} on {spec.name}")
    except Exception as error:  # noqa: BLE001 - a plot must never lose a finished run
        print(f"(could not draw curves.png: {error})", file=sys.stderr)
    write_json_atomically(output / RESULTS, results)
    print(f"[{entry.name}] test top-1 {results['top1']:.2f}%  top-5 {results['top5']:.2f}%  "
          f"loss {results['loss']:.4f}  -> {output}", file=sys.stderr)
    return results


def _diverged_message(output: Path, recipe: Recipe, index: int, where) -> str:
    stage = recipe.stages[index]
    epoch, step = where or (None, None)
    at = f" at epoch {epoch}, step {step}" if epoch else ""
    prefix = f"{stage.name}_" if len(recipe.stages) > 1 else ""
    if epoch and epoch > 1:
        kept = output / "checkpoints" / f"{prefix}epoch{epoch - 1:03d}.h5"
    elif index > 0:
        kept = output / f"{recipe.stages[index - 1].name}_weights.h5"
    else:
        kept = None
    last = f"the last good weights are {kept}" if kept else "no epoch finished, so no weights were kept"
    return (f"Training diverged: the loss became NaN/inf in stage '{stage.name}'{at} and the run "
            f"stopped; {last}. Lower --lr (or check the data) and start a new run.")
