"""``zoo list`` and ``zoo info``: what the registries hold."""
from __future__ import annotations

import json

import click

from zoo.cli._common import zoo_command, format_option, table
from zoo.registry import LIST_KINDS


@zoo_command("list", tensorflow=False)
@click.argument("pattern", default="*")
@click.option("--kind", type=click.Choice(list(LIST_KINDS.values())),
              default="models", show_default=True, help="What to list.")
@click.option("--pretrained", is_flag=True, help="Only models with published weights.")
@format_option
def list_command(pattern, kind, pretrained, fmt):
    """List registered models (or recipes, datasets, optimizers) matching PATTERN."""
    if kind == "models":  # from the static index: no TensorFlow, no model files (zoo/index.py)
        from zoo.index import list_records

        records = list_records(pattern, pretrained=pretrained)
        rows = [(r["name"], ",".join(r["aliases"]), r["family"], r["paper"],
                 "" if r["imagenet_top1"] is None else f"{r['imagenet_top1']:.1f}",
                 ",".join(r["weights"])) for r in records]
        headers = ("name", "aliases", "family", "paper", "imagenet top-1 (reported)", "weights")
    else:
        from zoo.settings import ensure_legacy_keras

        ensure_legacy_keras()  # the other registries fill as their (TensorFlow) modules load
        from zoo.augment import AUGMENTATIONS
        from zoo.data import DATASETS
        from zoo.training import OPTIMIZERS, RECIPES
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
        click.echo(table(rows, headers))


@zoo_command()
@click.argument("name")
@format_option
def info(name, fmt):
    """Paper, reported accuracy, params (binary / real) and OPs of a model."""
    from zoo import api as zoo

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
    if costs is None:
        lines.append(f"  costs:            {record['costs_note']}")
    else:
        lines += [
            f"  input size:       {'x'.join(map(str, costs['input_shape']))} (costs computed here)",
            f"  params:           {costs['params']:,} ({costs['binary_params']:,} binary, "
            f"{costs['real_params']:,} real)",
            f"  binary MACs:      {costs['binary_macs']:,} ({costs['binary_macs'] / 1e9:.2f}e9 BOPs)",
            f"  float MACs:       {costs['float_macs']:,} ({costs['float_macs'] / 1e8:.2f}e8 FLOPs)",
            f"  OPs:              {costs['ops'] / 1e8:.3f}e8 (FLOPs + BOPs/64)",
            f"  model size:       {costs['model_size_bytes'] / 2**20:.2f} MiB (1-bit binary weights)",
        ]
        if "release_flops" in costs:
            lines.append(f"  FLOPs (release):  {costs['release_flops'] / 1e6:.1f}M (the official "
                         f"FLOPs script's count, the paper's numbers)")
    lines += [
        f"  default recipe:   {record['default_recipe']}",
        f"  weights:          {', '.join(record['weights']) or '-'}",
    ]
    click.echo("\n".join(lines))
