"""``zoo train`` and ``zoo evaluate``."""
from __future__ import annotations

import sys

import click

from zoo.cli._common import (
    command_line,
    POSITIVE, POSITIVE_FLOAT, SEED,
    zoo_command,
    format_option, image_size as image_size_value, image_size_option, parse_settings,
    print_results, print_ssl_results,
)
from zoo.settings import EVAL_BATCH_SIZE


@zoo_command()
@click.argument("name")
@click.option("--dataset", default=None,
              help="Dataset name (zoo list --kind datasets) or folder:PATH (default: fashion_mnist).")
@click.option("--recipe", default=None, help="Recipe name; default: the model's own.")
@click.option("--epochs", type=POSITIVE, default=None, help="Epochs per stage (default: the recipe's).")
@click.option("--batch-size", type=POSITIVE, default=None, help="Batch size (default: the recipe's).")
@click.option("--lr", "learning_rate", type=POSITIVE_FLOAT, default=None, help="Peak learning rate.")
@click.option("--output", "-o", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: runs/NAME-DATASET-TIME).")
@click.option("--seed", type=SEED, default=None, help="Random seed (default: 0).")
@image_size_option("Model input size (default: per dataset).")
@click.option("--limit", type=POSITIVE, default=None, help="Use only the first N training images.")
@click.option("--eval-limit", type=POSITIVE, default=None, help="Use only the first N test images.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe stage setting, e.g. --set label_smoothing=0.")
@click.option("--teacher", default=None,
              help="Teacher for distillation recipes: a `zoo train` run directory, NAME:WEIGHTS.h5 "
                   "or a saved Keras model.")
@click.option("--arch", default=None,
              help="Architecture string of a searchable entry (from `zoo search`), e.g. for spos.")
@click.option("--augment", default=None,
              help="Batch augmentation mixing images and labels (zoo list --kind augmentations): "
                   "mixup, cutmix, attentive_cutmix.")
@click.option("--augment-arg", "augment_args", multiple=True, metavar="KEY=VALUE",
              help="An argument of --augment, e.g. --augment-arg prob=1.0 or extractor=NAME.TAG.")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker", "tpu"]),
              default="default", show_default=True,
              help="tf.distribute strategy: mirrored (this machine's GPUs), multiworker (one process "
                   "per machine, cluster in TF_CONFIG), tpu (TPU_NAME). --batch-size stays global.")
@click.option("--resume", type=click.Path(file_okay=False), default=None,
              help="Continue the interrupted run in this directory from its last checkpoint.")
@format_option
def train(name, dataset, recipe, epochs, batch_size, learning_rate, output, seed, image_size,
          input_size_alias, limit, eval_limit, settings, teacher, arch, augment, augment_args, strategy, resume, fmt):
    """Train model NAME on a dataset with a recipe."""
    from zoo.training.loop import TrainConfig, train as run_training

    command = command_line("train")
    results = run_training(TrainConfig(
        name, dataset=dataset, recipe=recipe, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, output=output, seed=seed,
        image_size=image_size_value(image_size, input_size_alias),
        limit=limit, eval_limit=eval_limit, stage_overrides=parse_settings(settings),
        command=command, teacher=teacher,
        augment=augment, augment_args=parse_settings(augment_args, "--augment-arg"),
        model_overrides={"arch": arch} if arch is not None else None,
        strategy=strategy, resume=resume))
    print_results(results, fmt)


@zoo_command()
@click.argument("name")
@click.option("--weights", default=None,
              help="A published tag (e.g. fashion_mnist), a weights file (.h5) or a `zoo train` run directory.")
@click.option("--dataset", default=None, help="Dataset (default: the weights' own, else fashion_mnist).")
@click.option("--batch-size", type=POSITIVE, default=EVAL_BATCH_SIZE, show_default=True)
@image_size_option("Model input size (default: as trained).")
@click.option("--eval-limit", type=POSITIVE, default=None, help="Evaluate only the first N test images.")
@click.option("--limit", "limit_alias", type=POSITIVE, default=None, hidden=True)  # the old name
@click.option("--linear-probe", is_flag=True,
              help="A `zoo pretrain` backbone (--weights DIR): linear classifier on frozen features.")
@click.option("--knn", is_flag=True,
              help="A `zoo pretrain` backbone (--weights DIR): weighted kNN (k=200, t=0.1) accuracy.")
@format_option
def evaluate(name, weights, dataset, batch_size, image_size, input_size_alias, eval_limit, limit_alias,
             linear_probe, knn, fmt):
    """Top-1 / top-5 accuracy and loss of model NAME on a dataset's test split."""
    limit = eval_limit if eval_limit is not None else limit_alias
    from zoo.runs import load_for_evaluation
    from zoo.training.evaluate import evaluate_model

    if linear_probe or knn:  # a self-supervised backbone (zoo/ssl/probe.py)
        from zoo.ssl.probe import evaluate_pretrained

        print_ssl_results(evaluate_pretrained(name, weights, dataset, knn=knn, linear=linear_probe,
                                              limit=limit), fmt)
        return

    net, spec, input_shape = load_for_evaluation(
        name, weights, dataset, image_size_value(image_size, input_size_alias))
    results = evaluate_model(net, spec, input_shape, batch_size=batch_size, limit=limit,
                             verbose=1 if sys.stderr.isatty() else 0)
    results.update({"model": net.name, "dataset": spec.name, "weights": str(weights)})
    print_results(results, fmt)
