"""``zoo import``: a paper's released PyTorch checkpoint becomes a local weight set.

Added to the ``zoo`` group by zoo/cli/__init__.py. Data goes to stdout, progress to
stderr; a ZooError is one ``Error:`` line on stderr and exit status 2 (ZooCommand).
"""
from __future__ import annotations

import json

import click

from zoo.cli._common import exit_on_sigterm, format_option, zoo_command

SOURCES = ("official", "adambnn", "0.5x", "0.25x")


@zoo_command("import")
@click.argument("name")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--tag", default=None,
              help="Tag of the new weight set (default: the release's, e.g. imagenet).")
@click.option("--source", type=click.Choice(SOURCES), default="official", show_default=True,
              help="Which release (adambnn: ReActNet-A trained by AdamBNN; 0.5x, 0.25x: "
                   "MetaPruning's MobileNetV1 files, into metapruning_mobilenet_v1).")
@format_option
def import_command(name, checkpoint, tag, source, fmt):
    """Import the released PyTorch CHECKPOINT of model NAME (downloaded from the paper's
    repository) as weight set NAME.TAG in $ZOO_HOME/imported: its pickle is never run,
    every tensor must fit the model, and the record keeps the file's sha256."""
    from zoo.imports import import_checkpoint

    exit_on_sigterm()  # an interrupted import removes what it wrote
    spec = import_checkpoint(name, checkpoint, tag=tag, source=source)
    if fmt == "json":
        click.echo(json.dumps({spec.key: spec.to_dict()}, indent=2))
        return
    release = spec.release
    click.echo(f"{spec.key}: {release['title']} ({spec.metrics.get('top1')}% top-1 reported)")
    click.echo(f"  checkpoint {release['file']}  sha256 {release['sha256']}  {release['size']} bytes")
    for wf in spec.files():
        click.echo(f"  {wf.file}  sha256 {wf.sha256}")
    click.echo(f"  load it with zoo.load({spec.model!r}, weights={spec.tag!r})")
