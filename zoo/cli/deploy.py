"""``zoo convert`` and ``zoo benchmark``: Larq Compute Engine flatbuffers and their costs.

Added to the ``zoo`` group by zoo/cli/__init__.py. Data goes to stdout, progress to stderr; a ZooError is one ``Error:``
line on stderr and exit status 2 (ZooCommand).
"""
from __future__ import annotations

import json

import click

from zoo.cli._common import zoo_command, format_option, image_size as image_size_value, image_size_option, table

WEIGHTS_HELP = ("A published tag (e.g. fashion_mnist), a weights file (.h5) or a `zoo train` run "
                "directory (default: random weights).")
SIZE_HELP = ("Square input size in pixels (default: the weights' own, else the paper's, 224 "
             "for ImageNet models).")


@zoo_command("convert")
@click.argument("name")
@click.option("--weights", default=None, help=WEIGHTS_HELP)
@image_size_option(SIZE_HELP)
@click.option("--output", "-o", type=click.Path(), required=True,
              help="The .tflite file to write (written atomically).")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@format_option
def convert_command(name, weights, image_size, input_size_alias, output, force, fmt):
    """Convert model NAME to a Larq Compute Engine flatbuffer (.tflite)."""
    from zoo import deploy

    deploy.check_output(output, force=force)  # before minutes of work
    model = deploy.build(name, weights, image_size_value(image_size, input_size_alias))
    safe, rewritten = deploy.lce_compatible(model)
    click.echo(f"converting {model.name} at input {tuple(model.input_shape[1:])}"
               f"{f' ({rewritten} zero-padded binary convs rewritten)' if rewritten else ''} ...",
               err=True)
    flatbuffer = deploy.convert(safe, rewrite=False)
    deploy.write_flatbuffer(flatbuffer, output, force=force)
    census = deploy.op_census(flatbuffer)
    if fmt == "json":
        click.echo(json.dumps({"model": model.name, "input_shape": list(model.input_shape[1:]),
                               "output": str(output), "bytes": len(flatbuffer),
                               "binary_convs": census["op_counts"].get("LceBconv2d", 0),
                               "binary_fraction": census["binary_fraction"],
                               "padding_rewrites": rewritten}, indent=2))
        return
    click.echo(f"wrote {output} ({len(flatbuffer) / 2**20:.2f} MiB, "
               f"{census['op_counts'].get('LceBconv2d', 0)} binary convs, "
               f"{100 * census['binary_fraction']:.1f}% of MACs binary)")


def _fmt_count(value) -> str:
    value = float(value)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def benchmark_rows(report):
    converted = report["converted"]
    rows = [
        ("model", report["model"] + (f".{report['weights']}" if report.get("weights") else "")),
        ("input shape", "x".join(str(d) for d in report["input_shape"])),
        ("params (binary / real)", f"{_fmt_count(report['params'])} "
                                   f"({_fmt_count(report['binary_params'])} / {_fmt_count(report['real_params'])})"),
        ("binary MACs (Keras)", _fmt_count(report["binary_macs"])),
        ("float MACs (Keras)", _fmt_count(report["float_macs"])),
        ("OPs = FLOPs + BOPs/64", _fmt_count(report["ops"])),
        ("binary MACs (converted)", f"{_fmt_count(converted['binary_macs'])} "
                                    f"({100 * converted['binary_fraction']:.1f}% of MACs)"),
        ("float MACs (converted)", _fmt_count(converted["float_macs"])),
        ("padding rewrites", str(converted["padding_rewrites"])),
        ("LCE flatbuffer", f"{report['flatbuffer_bytes'] / 2**20:.2f} MiB"),
        ("LCE latency", f"{report['lce_latency_ms']:.2f} ms"),
    ]
    if "float_latency_ms" in report:
        rows += [
            ("float TFLite flatbuffer", f"{report['float_flatbuffer_bytes'] / 2**20:.2f} MiB"),
            ("float TFLite latency", f"{report['float_latency_ms']:.2f} ms"),
            ("speed-up", f"{report['speedup']:.2f}x"),
        ]
    rows.append(("timing", f"median of {report['runs']} single-image runs, "
                           f"{report['num_threads']} thread(s)"))
    return rows


@zoo_command("benchmark")
@click.argument("name")
@click.option("--weights", default=None, help=WEIGHTS_HELP)
@image_size_option(SIZE_HELP)
@click.option("--runs", type=click.IntRange(1), default=20, show_default=True,
              help="Timed single-image inferences per runtime.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
              help="Interpreter threads.")
@click.option("--no-float", is_flag=True, help="Skip the float TFLite conversion and its latency.")
@format_option
def benchmark_command(name, weights, image_size, input_size_alias, runs, threads, no_float, fmt):
    """Costs of model NAME on paper and converted with LCE: params, MACs, OPs, size, latency."""
    from zoo import deploy

    model = deploy.build(name, weights, image_size_value(image_size, input_size_alias))
    click.echo(f"benchmarking {model.name} at input {tuple(model.input_shape[1:])} ...", err=True)
    report = deploy.benchmark(model, runs=runs, num_threads=threads, float_latency=not no_float,
                              name=model.name, weights=weights)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(table(benchmark_rows(report), ["quantity", "value"]))
