"""What every ``zoo`` command shares: error handling, output formats, ``KEY=VALUE``
settings, tables, SIGTERM handling and the options spelled the same everywhere.

Data (tables, JSON) goes to stdout; progress and logs go to stderr. A bad input
prints one line on stderr and exits with status 2, without a traceback.
"""
from __future__ import annotations

import json
import shlex
import sys

import click

from zoo.errors import InvalidInputError, ZooError
from zoo.settings import MAX_IMAGE_SIZE, MAX_SEED

FORMATS = click.Choice(["table", "json"])
POSITIVE = click.IntRange(min=1)  # counts and sizes: --limit, --epochs, --batch-size, --top, ...
SEED = click.IntRange(0, MAX_SEED)
POSITIVE_FLOAT = click.FloatRange(0, min_open=True)  # learning rates
IMAGE_SIZE = click.IntRange(1, MAX_IMAGE_SIZE)  # pixels per side


class ZooCommand(click.Command):
    """Turns the zoo's errors, and bad option values, into one clear line on stderr (exit
    status 2). ``tensorflow=False``: a command that imports TensorFlow only where it needs
    it (``zoo list``), so it answers in a fraction of a second."""

    def __init__(self, *args, tensorflow: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.tensorflow = tensorflow

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            if ctx.resilient_parsing:
                raise
            error.ctx = None  # one `Error:` line, without the usage block above it
            raise

    def invoke(self, ctx):
        from zoo.settings import ensure_legacy_keras

        # TensorFlow's C++ start-up chatter kept off stderr (not for --help)
        ensure_legacy_keras(import_now=self.tensorflow)
        try:
            return super().invoke(ctx)
        except ZooError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt as interrupt:  # Ctrl-C: say what was kept and how to go on
            click.echo(f"\n{interrupt or 'Interrupted.'}", err=True)
            ctx.exit(130)


class ZooGroup(click.Group):
    command_class = ZooCommand


def zoo_command(*args, **kwargs):
    """``click.command`` with the zoo's error handling (:class:`ZooCommand`)."""
    return click.command(*args, cls=ZooCommand, **kwargs)


def format_option(function):
    """``--format table|json``."""
    return click.option("--format", "fmt", type=FORMATS, default="table", show_default=True,
                        help="Output format.")(function)


def image_size_option(help_text: str):
    """``--image-size N`` (and the hidden old spelling ``--input-size``, kept as an alias)."""

    def decorator(function):
        function = click.option("--input-size", "input_size_alias", type=IMAGE_SIZE, default=None,
                                hidden=True)(function)
        return click.option("--image-size", type=IMAGE_SIZE, default=None, help=help_text)(function)

    return decorator


def image_size(image_size, input_size_alias):
    """The value of :func:`image_size_option` (``--image-size`` wins over its alias)."""
    return image_size if image_size is not None else input_size_alias


def command_line(command: str) -> str:
    """``zoo COMMAND ARGS`` as typed, for config.json and the manifest; the same when the
    command runs as a script (``python train.py NAME ...``: no group before it)."""
    standalone = click.get_current_context().parent is None
    return f"zoo {command} " + " ".join(shlex.quote(a) for a in sys.argv[1 if standalone else 2:])


def parse_settings(settings, option="--set"):
    """``key=value`` pairs; values are JSON when they parse (numbers, lists, true)."""
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


def table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so that ``finally`` blocks remove partial files (for
    commands that write files and then return; a training run keeps the default, since
    Keras' fit loop does not let the exception through promptly; --resume covers it)."""
    import signal

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def print_results(results, fmt):
    """Test metrics of ``zoo train`` / ``zoo evaluate``."""
    if fmt == "json":
        click.echo(json.dumps(results, indent=2))
    else:
        click.echo(f"top-1 {results['top1']:.2f}%  top-5 {results['top5']:.2f}%  "
                   f"loss {results['loss']:.4f}  ({results['examples']} test images)")


def print_ssl_results(results, fmt):
    """kNN / linear-probe metrics of ``zoo pretrain`` / ``zoo evaluate --knn``."""
    if fmt == "json":
        click.echo(json.dumps(results, indent=2, default=str))
        return
    parts = []
    if "knn_top1" in results:
        parts.append(f"kNN top-1 {results['knn_top1']:.2f}% (k={results['knn_k']}, t={results['knn_t']})")
    if "linear_top1" in results:
        parts.append(f"linear probe top-1 {results['linear_top1']:.2f}%")
    click.echo("  ".join(parts) + f"  ({results['examples']} test images, "
               f"{results['train_examples']} train images)")
