"""How many MACs of each zoo entry run binary once converted with Larq Compute Engine.

Default (fast): counted from the Keras model at the given input with Larq's profile,
using what tests/test_models.py::test_lce_conversion_agrees_with_keras checks for every
architecture on a real conversion: binary convs become ``LceBconv2d`` (all their MACs
binary), while LCE 0.16 runs binary dense layers (``QuantDense``) as float
``FULLY_CONNECTED`` ops. ``--convert`` converts each model and reads the flatbuffer's
ops instead (minutes per model at 224x224).

Usage::

    .venv/bin/python benchmarks/lce_coverage.py [PATTERN] [--input-size 224] [--convert]
        [--output benchmarks/results/lce_coverage.md]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import zoo  # noqa: E402  (Keras 2 before TensorFlow)
import larq as lq  # noqa: E402
import tensorflow as tf  # noqa: E402
from zoo.memory import discarded_models  # noqa: E402


def counted(model):
    from zoo import deploy
    from zoo.costs import model_costs

    costs = model_costs(model)
    dense = sum(op.n for layer in lq.models.ModelProfile(model).layer_profiles
                if isinstance(layer._layer, lq.layers.QuantDense)
                for op in getattr(layer, "op_profiles", []) if op.precision == 1)
    rewrites = sum(deploy.needs_padding_rewrite(layer) for layer in model.layers)
    binary = costs["binary_macs"] - dense
    total = costs["binary_macs"] + costs["float_macs"]
    return {"keras_binary": costs["binary_macs"], "lce_binary": binary, "total": total,
            "fraction_keras": costs["binary_macs"] / total if total else 0.0,
            "fraction_lce": binary / total if total else 0.0, "rewrites": rewrites}


def converted(model):
    from zoo import deploy
    from zoo.costs import model_costs

    costs = model_costs(model)
    safe, rewrites = deploy.lce_compatible(model)
    census = deploy.op_census(deploy.convert(safe, rewrite=False))
    total = census["binary_macs"] + census["float_macs"]
    return {"keras_binary": costs["binary_macs"], "lce_binary": census["binary_macs"],
            "total": total, "fraction_keras": costs["binary_macs"] / max(1, costs["binary_macs"] + costs["float_macs"]),
            "fraction_lce": census["binary_fraction"], "rewrites": rewrites}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Binary MAC coverage of LCE-converted zoo entries.")
    parser.add_argument("pattern", nargs="?", default="*")
    parser.add_argument("--input-size", type=int, default=224)  # the papers' ImageNet input
    parser.add_argument("--convert", action="store_true", help="Convert and read the flatbuffer.")
    parser.add_argument("--output", type=Path, default=None, help="Also write the markdown table here.")
    args = parser.parse_args(argv)
    lines = [f"| model | MACs at {args.input_size}x{args.input_size} | binary in Keras | "
             f"binary in LCE ({'converted' if args.convert else 'counted'}) | padding rewrites |",
             "|---|---|---|---|---|"]
    for name in zoo.list_models(args.pattern):
        size = max(args.input_size, zoo.get_entry(name).min_input_size)
        tf.keras.backend.clear_session()
        print(f"{name} at {size} ...", file=sys.stderr, flush=True)
        try:
            with discarded_models():  # every entry in one process
                model = zoo.load(name, input_shape=(size, size, 3), num_classes=1000)
                row = (converted if args.convert else counted)(model)
                del model
        except Exception as error:  # a table of every entry: one failure must not stop it
            lines.append(f"| `{name}` | error: {str(error).splitlines()[0][:80]} | | | |")
            continue
        lines.append(f"| `{name}` | {row['total'] / 1e9:.3f}G | {100 * row['fraction_keras']:.1f}% | "
                     f"{100 * row['fraction_lce']:.1f}% | {row['rewrites']} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
