"""The ``zoo`` command line: list, info, train, evaluate.

Data (tables, JSON) goes to stdout; progress and logs go to stderr. A bad
input prints one line on stderr and exits with status 2, without a traceback.
"""
from __future__ import annotations

import json
import shlex
import sys

import click

FORMATS = click.Choice(["table", "json"])


class ZooCommand(click.Command):
    """Turns the zoo's errors into one clear line on stderr (exit status 2)."""

    def invoke(self, ctx):
        from zoo.errors import ZooError

        try:
            return super().invoke(ctx)
        except ZooError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(2)


class ZooGroup(click.Group):
    command_class = ZooCommand


def _parse_settings(settings, option="--set"):
    """``key=value`` pairs; values are JSON when they parse (numbers, lists, true)."""
    from zoo.errors import InvalidInputError

    parsed = {}
    for item in settings:
        if "=" not in item:
            raise InvalidInputError(f"{option} takes key=value, got {item!r}.")
        key, value = item.split("=", 1)
        try:
            parsed[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.strip()] = value
    return parsed


def _table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bnn-zoo", prog_name="zoo")
def cli():
    """Binary neural networks for Keras, built on Larq."""


@cli.command("list")
@click.argument("pattern", default="*")
@click.option("--kind", type=click.Choice(["models", "recipes", "datasets", "optimizers",
                                           "augmentations", "ssl", "searches"]),
              default="models", show_default=True, help="What to list.")
@click.option("--pretrained", is_flag=True, help="Only models with published weights.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def list_command(pattern, kind, pretrained, fmt):
    """List registered models (or recipes, datasets, optimizers) matching PATTERN."""
    import zoo
    from zoo.data import DATASETS
    from zoo.training import OPTIMIZERS, RECIPES

    if kind == "models":
        records = []
        for name in zoo.list_models(pattern, pretrained=pretrained):
            entry = zoo.get_entry(name)
            top1 = entry.reported.get("imagenet2012", {}).get("top1")
            records.append({
                "name": name, "aliases": list(entry.aliases), "family": entry.family,
                "paper": entry.paper.arxiv if entry.paper else "",
                "imagenet_top1": top1, "weights": sorted(entry.weights),
            })
        rows = [(r["name"], ",".join(r["aliases"]), r["family"], r["paper"],
                 "" if r["imagenet_top1"] is None else f"{r['imagenet_top1']:.1f}",
                 ",".join(r["weights"])) for r in records]
        headers = ("name", "aliases", "family", "paper", "imagenet top-1 (reported)", "weights")
    else:
        from zoo.augment import AUGMENTATIONS
        from zoo.ssl import SSL_METHODS

        registry = {"recipes": RECIPES, "datasets": DATASETS, "optimizers": OPTIMIZERS,
                    "augmentations": AUGMENTATIONS, "ssl": SSL_METHODS,
                    "searches": None}[kind]
        if kind == "searches":
            from zoo.search import load_methods

            registry = load_methods()
        records = []
        for name in registry.names(pattern):
            item = registry.get(name)
            description = getattr(item, "description", None) or (getattr(item, "__doc__", "") or "")
            if kind == "datasets":
                description = f"{item.num_classes} classes, tfds {item.tfds_name}"
            records.append({"name": name, "aliases": registry.aliases_of(name),
                            "description": description.strip().split("\n")[0]})
        rows = [(r["name"], ",".join(r["aliases"]), r["description"]) for r in records]
        headers = ("name", "aliases", "description")
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
    else:
        click.echo(_table(rows, headers))


@cli.command()
@click.argument("name")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def info(name, fmt):
    """Paper, reported accuracy, params (binary / real) and OPs of a model."""
    import zoo

    record = zoo.info(name)
    if fmt == "json":
        click.echo(json.dumps(record, indent=2))
        return
    costs = record["costs"]
    paper = record["paper"] or {}
    lines = [
        f"{record['name']}  ({record['description']})",
        f"  aliases:          {', '.join(record['aliases']) or '-'}",
        f"  paper:            {paper.get('title', '-')} {paper.get('venue', '')} "
        f"arXiv:{paper.get('arxiv', '-')}",
    ]
    for dataset, numbers in record["reported"].items():
        top5 = f" / top-5 {numbers['top5']}%" if "top5" in numbers else ""
        lines.append(f"  reported:         {dataset} top-1 {numbers.get('top1')}%{top5}")
    lines += [
        f"  input size:       {'x'.join(map(str, costs['input_shape']))} (costs computed here)",
        f"  params:           {costs['params']:,} ({costs['binary_params']:,} binary, "
        f"{costs['real_params']:,} real)",
        f"  binary MACs:      {costs['binary_macs']:,} ({costs['binary_macs'] / 1e9:.2f}e9 BOPs)",
        f"  float MACs:       {costs['float_macs']:,} ({costs['float_macs'] / 1e8:.2f}e8 FLOPs)",
        f"  OPs:              {costs['ops'] / 1e8:.3f}e8 (FLOPs + BOPs/64)",
        f"  model size:       {costs['model_size_bytes'] / 2**20:.2f} MiB (1-bit binary weights)",
        f"  default recipe:   {record['default_recipe']}",
        f"  weights:          {', '.join(record['weights']) or '-'}",
    ]
    click.echo("\n".join(lines))


@cli.command()
@click.argument("name")
@click.option("--dataset", default=None,
              help="Dataset name (zoo list --kind datasets) or folder:PATH (default: fashion_mnist).")
@click.option("--recipe", default=None, help="Recipe name; default: the model's own.")
@click.option("--epochs", type=int, default=None, help="Epochs per stage (default: the recipe's).")
@click.option("--batch-size", type=int, default=None, help="Batch size (default: the recipe's).")
@click.option("--lr", "learning_rate", type=float, default=None, help="Peak learning rate.")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: runs/NAME-DATASET-TIME).")
@click.option("--seed", type=int, default=None, help="Random seed (default: 0).")
@click.option("--image-size", type=int, default=None, help="Model input size (default: per dataset).")
@click.option("--limit", type=int, default=None, help="Use only the first N training images.")
@click.option("--eval-limit", type=int, default=None, help="Use only the first N test images.")
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
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def train(name, dataset, recipe, epochs, batch_size, learning_rate, output, seed, image_size,
          limit, eval_limit, settings, teacher, arch, augment, augment_args, strategy, resume, fmt):
    """Train model NAME on a dataset with a recipe."""
    from zoo.training import train as run_training

    command = "zoo train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    results = run_training(
        name, dataset=dataset, recipe=recipe, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, output=output, seed=seed, image_size=image_size,
        limit=limit, eval_limit=eval_limit, stage_overrides=_parse_settings(settings),
        command=command, teacher=teacher,
        augment=augment, augment_args=_parse_settings(augment_args, "--augment-arg"),
        model_overrides={"arch": arch} if arch is not None else None,
        strategy=strategy, resume=resume)
    _print_results(results, fmt)


def _print_results(results, fmt):
    if fmt == "json":
        click.echo(json.dumps(results, indent=2))
    else:
        click.echo(f"top-1 {results['top1']:.2f}%  top-5 {results['top5']:.2f}%  "
                   f"loss {results['loss']:.4f}  ({results['examples']} test images)")


@cli.command()
@click.argument("name")
@click.option("--weights", default=None,
              help="A published tag (e.g. fashion_mnist), a weights file (.h5) or a `zoo train` run directory.")
@click.option("--dataset", default=None, help="Dataset (default: the weights' own, else fashion_mnist).")
@click.option("--batch-size", type=int, default=250, show_default=True)
@click.option("--image-size", type=int, default=None, help="Model input size (default: as trained).")
@click.option("--limit", type=int, default=None, help="Evaluate only the first N test images.")
@click.option("--linear-probe", is_flag=True,
              help="A `zoo pretrain` backbone (--weights DIR): linear classifier on frozen features.")
@click.option("--knn", is_flag=True,
              help="A `zoo pretrain` backbone (--weights DIR): weighted kNN (k=200, t=0.1) accuracy.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def evaluate(name, weights, dataset, batch_size, image_size, limit, linear_probe, knn, fmt):
    """Top-1 / top-5 accuracy and loss of model NAME on a dataset's test split."""
    from zoo.training import evaluate_model, load_for_evaluation

    if linear_probe or knn:  # a self-supervised backbone (zoo/ssl/probe.py)
        from zoo.cli_ssl import print_ssl_results
        from zoo.ssl.probe import evaluate_pretrained

        print_ssl_results(evaluate_pretrained(name, weights, dataset, knn=knn, linear=linear_probe,
                                              limit=limit), fmt)
        return

    net, spec, input_shape = load_for_evaluation(name, weights, dataset, image_size)
    results = evaluate_model(net, spec, input_shape, batch_size=batch_size, limit=limit,
                             verbose=1 if sys.stderr.isatty() else 0)
    results.update({"model": net.name, "dataset": spec.name, "weights": str(weights)})
    _print_results(results, fmt)


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so that ``finally`` blocks remove partial files (for
    commands that write files and then return; a training run keeps the default, since
    Keras' fit loop does not let the exception through promptly; --resume covers it)."""
    import signal

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv=None):
    cli.main(args=argv, prog_name="zoo")


from zoo import cli_weights  # noqa: E402,F401  (download, cache, publish, predict)
from zoo import cli_search  # noqa: E402,F401  (search)
from zoo import cli_deploy  # noqa: E402,F401  (convert, benchmark)
from zoo import cli_ssl  # noqa: E402,F401  (pretrain)

if __name__ == "__main__":
    main()
