"""``zoo pretrain``: self-supervised pre-training (MoCo v2, SimCLR, BYOL, optionally Un-Mix).

Added to the ``zoo`` group by zoo/cli/__init__.py. ``zoo evaluate NAME --weights DIR --knn --linear-probe`` measures the
result.
"""
from __future__ import annotations


import click

from zoo.cli._common import command_line, POSITIVE, POSITIVE_FLOAT, SEED, zoo_command, format_option, image_size as image_size_value, image_size_option, parse_settings, print_ssl_results


@zoo_command("pretrain")
@click.argument("name")
@click.option("--ssl", "method", default="moco", show_default=True,
              help="Self-supervised method (zoo list --kind ssl): moco (MoCo v2), simclr or byol.")
@click.option("--unmix", is_flag=True, help="Add Un-Mix's image-mixture terms to the loss.")
@click.option("--unmix-prob", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Un-Mix: probability of a global mixup (else a CutMix box) per batch.")
@click.option("--dataset", default="fashion_mnist", show_default=True)
@click.option("--epochs", type=POSITIVE, default=10, show_default=True)
@click.option("--batch-size", type=POSITIVE, default=256, show_default=True)
@click.option("--lr", "learning_rate", type=POSITIVE_FLOAT, default=None,
              help="Peak learning rate (default: SGD 0.06 x batch/512, Adam 1e-3); cosine decay.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True)
@click.option("--weight-decay", type=click.FloatRange(0), default=5e-4, show_default=True)
@click.option("--output", "-o", type=click.Path(file_okay=False), default=None,
              help="Output directory (default: runs/NAME-METHOD-DATASET-TIME).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@image_size_option("Model input size (default: per dataset).")
@click.option("--limit", type=POSITIVE, default=None, help="Use only the first N training images.")
@click.option("--eval-limit", type=POSITIVE, default=None, help="Final kNN on the first N test images only.")
@click.option("--knn-every", type=click.IntRange(0), default=1, show_default=True,
              help="kNN monitor every N epochs (0: never) on --monitor-limit test images.")
@click.option("--monitor-limit", type=POSITIVE, default=1000, show_default=True)
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Method setting, e.g. --set temperature=0.2 --set queue_size=4096 --set bn_splits=8.")
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
              help="Backbone builder argument, e.g. --model-arg filters=32 for binarynet.")
@format_option
def pretrain(name, method, unmix, unmix_prob, dataset, epochs, batch_size, learning_rate, optimizer,
             weight_decay, output, seed, image_size, input_size_alias, limit, eval_limit, knn_every, monitor_limit,
             settings, model_args, fmt):
    """Self-supervised pre-training of model NAME's backbone (include_top=False)."""
    from zoo.ssl.trainer import pretrain as run_pretrain

    command = command_line("pretrain")
    results = run_pretrain(
        name, ssl=method, unmix=unmix, unmix_prob=unmix_prob, dataset=dataset, epochs=epochs,
        batch_size=batch_size, learning_rate=learning_rate, optimizer=optimizer,
        weight_decay=weight_decay, output=output, seed=seed, image_size=image_size_value(image_size, input_size_alias), limit=limit,
        eval_limit=eval_limit, knn_every=knn_every, monitor_limit=monitor_limit,
        method_args=parse_settings(settings), model_overrides=parse_settings(model_args, "--model-arg"),
        command=command)
    print_ssl_results(results, fmt)
