"""``zoo search METHOD``: supernet training + evolutionary architecture search.

Generic over the search registry (:mod:`zoo.search`); prints the best
architecture string (retrain it with ``zoo train MODEL --arch STRING``), its
score and cost, and the median score of random architectures under the same limit.
"""
from __future__ import annotations

import json

import click

from zoo.cli._common import POSITIVE, zoo_command, format_option, image_size as image_size_value, image_size_option, parse_settings


@zoo_command()
@click.argument("method")
@click.option("--dataset", default="fashion_mnist", show_default=True,
              help="Dataset name (zoo list --kind datasets) or folder:PATH.")
@click.option("--supernet-epochs", type=int, default=None,
              help="Supernet training epochs (default: the method's paper value).")
@click.option("--max-ops", type=float, default=None,
              help="Cost limit: OPs for binary spaces, FLOPs (MACs) for real ones, at the "
                   "search's input size (default: the method's).")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Run directory (supernet weights, search_log.json, plots); an existing one "
                   "resumes.")
@click.option("--population", type=int, default=50, show_default=True)
@click.option("--generations", type=int, default=20, show_default=True)
@click.option("--top-k", type=int, default=10, show_default=True)
@click.option("--mutations", type=int, default=None,
              help="Mutations per generation (default: 25, or half the population if smaller).")
@click.option("--crossovers", type=int, default=None,
              help="Crossovers per generation (default: 25, or half the population if smaller).")
@click.option("--mutation-prob", type=float, default=0.1, show_default=True)
@click.option("--limit", type=POSITIVE, default=None, help="Use only the first N training images.")
@click.option("--eval-limit", type=POSITIVE, default=None,
              help="Score candidates on only N held-out images.")
@click.option("--batch-size", type=POSITIVE, default=128, show_default=True)
@image_size_option("Model input size (default: per dataset).")
@click.option("--recalibration-batches", type=int, default=None,
              help="Training batches that re-estimate BN statistics before scoring a candidate.")
@click.option("--random-baseline", type=int, default=20, show_default=True,
              help="Random architectures under the same limit scored for the median baseline.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Method setting, e.g. --set width=0.25 --set optimizer=adam.")
@format_option
def search(method, dataset, supernet_epochs, max_ops, output, population, generations, top_k,
           mutations, crossovers, mutation_prob, limit, eval_limit, batch_size, image_size, input_size_alias,
           recalibration_batches, random_baseline, seed, settings, fmt):
    """Train METHOD's supernet, search it under a cost limit, print the best architecture."""
    from zoo.errors import InvalidInputError
    from zoo.search import SearchConfig, get_search

    chosen = get_search(method)
    half = population // 2
    mutations = min(25, half) if mutations is None else mutations
    crossovers = min(25, population - half) if crossovers is None else crossovers
    for name, value in (("population", population), ("generations", generations),
                        ("top-k", top_k), ("batch-size", batch_size),
                        ("random-baseline", random_baseline)):
        if value < 1:
            raise InvalidInputError(f"--{name} must be positive, got {value}.")
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
