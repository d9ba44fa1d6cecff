"""The ``zoo`` command line: the group, and one module per group of commands.

Data (tables, JSON) goes to stdout; progress and logs go to stderr. A bad input
prints one line on stderr and exits with status 2, without a traceback. Command
modules import only what lies below them; nothing imports ``zoo.cli`` back.
"""
from __future__ import annotations

import click

from zoo.cli import catalog, deploy, imports, search, ssl, training, weights
from zoo.cli._common import ZooGroup


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bnn-zoo", prog_name="zoo")
def cli():
    """Binary neural networks for Keras, built on Larq."""


for command in (catalog.list_command, catalog.info, training.train, training.evaluate,
                weights.download, weights.cache, weights.publish, imports.import_command,
                weights.predict, search.search,
                deploy.convert_command, deploy.benchmark_command, ssl.pretrain):
    cli.add_command(command)


def main(argv=None):
    cli.main(args=argv, prog_name="zoo")


if __name__ == "__main__":
    main()
