"""``zoo search METHOD``: supernet training + evolutionary architecture search.

Generic over the search registry (:mod:`zoo.search`); prints the best
architecture string (retrain it with ``zoo train MODEL --arch STRING``), its
score and cost, and the median score of random architectures under the same limit.
"""
from __future__ import annotations

import json

import click

from zoo.cli._common import POSITIVE, SEED, zoo_command, format_option, image_size as image_size_value, image_size_option, parse_settings


@zoo_command()
@click.argument("method")
@click.option("--dataset", default="fashion_mnist", show_default=True,
              help="Dataset name (zoo list --kind datasets) or folder:PATH.")
@click.option("--supernet-epochs", type=click.IntRange(0), default=None,
              help="Supernet training epochs (default: the method's paper value).")
@click.option("--max-ops", type=click.FloatRange(0, min_open=True), default=None,
              help="Cost limit: OPs for binary spaces, FLOPs (MACs) for real ones, at the "
                   "search's input size (default: the method's).")
@click.option("--output", "-o", type=click.Path(file_okay=False), default=None,
              help="Run directory (supernet weights, search_log.json, plots); an existing one "
                   "resumes.")
@click.option("--population", type=POSITIVE, default=50, show_default=True)
@click.option("--generations", type=POSITIVE, default=20, show_default=True)
@click.option("--top-k", type=POSITIVE, default=10, show_default=True)
@click.option("--mutations", type=click.IntRange(0), default=None,
              help="Mutations per generation (default: 25, or half the population if smaller).")
@click.option("--crossovers", type=click.IntRange(0), default=None,
              help="Crossovers per generation (default: 25, or half the population if smaller).")
@click.option("--mutation-prob", type=click.FloatRange(0, 1), default=0.1, show_default=True)
@click.option("--limit", type=POSITIVE, default=None, help="Use only the first N training images.")
@click.option("--eval-limit", type=POSITIVE, default=None,
              help="Score candidates on only N held-out images.")
@click.option("--batch-size", type=POSITIVE, default=128, show_default=True)
@image_size_option("Model input size (default: per dataset).")
@click.option("--recalibration-batches", type=click.IntRange(0), default=None,
              help="Training batches that re-estimate BN statistics before scoring a candidate.")
@click.option("--random-baseline", type=POSITIVE, default=20, show_default=True,
              help="Random architectures under the same limit scored for the median baseline.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Method setting, e.g. --set width=0.25 --set optimizer=adam.")
@format_option
def search(method, dataset, supernet_epochs, max_ops, output, population, generations, top_k,
           mutations, crossovers, mutation_prob, limit, eval_limit, batch_size, image_size, input_size_alias,
           recalibration_batches, random_baseline, seed, settings, fmt):
    """Train METHOD's supernet, search it under a cost limit, print the best architecture."""
    from zoo.search import SearchConfig, get_search

    chosen = get_search(method)
    half = population // 2
    mutations = min(25, half) if mutations is None else mutations
    crossovers = min(25, population - half) if crossovers is None else crossovers
    config = SearchConfig(
        dataset=dataset, output=output, supernet_epochs=supernet_epochs, max_ops=max_ops,
        population=population, generations=generations, top_k=top_k, mutations=mutations,
        crossovers=crossovers, mutation_prob=mutation_prob, batch_size=batch_size,
        image_size=image_size_value(image_size, input_size_alias), limit=limit, eval_limit=eval_limit, seed=seed,
        random_baseline=random_baseline, recalibration_batches=recalibration_batches,
        extra=parse_settings(settings))
    result = chosen.run(config)
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(f"best architecture: {result.arch}")
    click.echo(f"score {result.score:.2f}  cost {result.cost:.4g} (limit {result.max_cost:.4g})")
    click.echo(f"median of {len(result.random_scores)} random architectures under the same "
               f"limit: {result.random_median_score:.2f}")
    click.echo(f"retrain: zoo train {chosen.model} --arch '{result.arch}'")
    click.echo(f"output: {result.output}")
