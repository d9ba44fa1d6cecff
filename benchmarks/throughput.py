"""Training and inference throughput (images/s): zoo's birealnet18 vs larq-zoo's BiRealNet.

Both models run in the same process, on the same batches, with the same optimizer and
loss, interleaved round by round (the order alternates), so a loaded machine slows both
alike; the result is the ratio ours / larq-zoo per execution mode:

- ``fit``:      Keras ``model.fit`` on a tf.data pipeline (what ``zoo train`` does)
- ``function``: a hand-written ``tf.function`` train step / forward pass
- ``xla``:      the same with ``jit_compile=True`` (XLA)

Usage::

    nice -n 5 .venv/bin/python benchmarks/throughput.py                     # all modes
    .venv/bin/python benchmarks/throughput.py --modes function,xla --batch-size 64 --image-size 32
    .venv/bin/python benchmarks/throughput.py --output benchmarks/results/throughput.json

Progress goes to stderr; a table (and ``--output`` JSON) to stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import zoo  # noqa: E402  (Keras 2 before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

MODES = ("fit", "function", "xla")


def log(message):
    print(message, file=sys.stderr, flush=True)


def make_models(image_size: int, num_classes: int):
    import larq_zoo as lqz

    shape = (image_size, image_size, 3)
    ours = zoo.load("birealnet18", input_shape=shape, num_classes=num_classes)
    theirs = lqz.literature.BiRealNet(weights=None, input_shape=shape, num_classes=num_classes)
    assert ours.count_params() == theirs.count_params(), "the two networks must be the same size"
    return {"zoo": ours, "larq_zoo": theirs}


def make_batches(image_size: int, batch_size: int, steps: int, pipeline: bool):
    """Fashion-MNIST training batches through zoo's pipeline, materialised once so that both
    models see the same tensors (``pipeline=True`` feeds ``fit`` from tf.data instead)."""
    from zoo import data as zdata

    spec = zdata.get_dataset("fashion_mnist")
    ds = zdata.make_dataset(spec, "train", (image_size, image_size, 3), batch_size, training=True,
                            seed=0, limit=batch_size * steps)
    batches = [(x, y) for x, y in ds if int(x.shape[0]) == batch_size]
    if pipeline:
        return batches, ds
    return batches, tf.data.Dataset.from_tensor_slices(
        (tf.concat([b[0] for b in batches], 0), tf.concat([b[1] for b in batches], 0))
    ).batch(batch_size).cache().prefetch(tf.data.AUTOTUNE)


def optimizer():
    # zoo's default Bi-Real recipe optimizer (Adam, author's PyTorch code); legacy for Larq.
    return tf.keras.optimizers.legacy.Adam(1e-3)


class Runner:
    """Train / infer steps of one model in one mode."""

    def __init__(self, model, mode: str, dataset):
        self.model, self.mode, self.dataset = model, mode, dataset
        self.loss = tf.keras.losses.SparseCategoricalCrossentropy()
        self.opt = optimizer()
        if mode == "fit":
            model.compile(optimizer=self.opt, loss=self.loss)
        else:
            jit = mode == "xla"

            @tf.function(jit_compile=jit)
            def train_step(x, y):
                with tf.GradientTape() as tape:
                    loss = self.loss(y, model(x, training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                self.opt.apply_gradients(zip(grads, model.trainable_variables))
                return loss

            @tf.function(jit_compile=jit)
            def infer_step(x):
                return model(x, training=False)

            self.train_step, self.infer_step = train_step, infer_step

    def train(self, batches):
        if self.mode == "fit":
            history = self.model.fit(self.dataset.take(len(batches)), epochs=1, verbose=0)
            return float(history.history["loss"][-1])
        loss = None
        for x, y in batches:
            loss = self.train_step(x, y)
        return float(loss)

    def infer(self, batches):
        if self.mode == "fit":
            out = self.model.predict(self.dataset.take(len(batches)).map(lambda x, y: x), verbose=0)
            return float(np.sum(out))
        out = None
        for x, _ in batches:
            out = self.infer_step(x)
        return float(tf.reduce_sum(out))


def measure(runners, batches, batch_size, rounds: int, kind: str):
    """Images/s per model: median over ``rounds``, models interleaved, order alternating."""
    names = list(runners)
    for name in names:  # warm-up: tracing / XLA compilation, not timed
        getattr(runners[name], kind)(batches[:2])
    rates = {name: [] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            getattr(runners[name], kind)(batches)
            rates[name].append(len(batches) * batch_size / (time.perf_counter() - start))
        log(f"  {kind} round {r + 1}/{rounds}: " + ", ".join(
            f"{n} {rates[n][-1]:.0f} img/s" for n in names))
    return {name: statistics.median(v) for name, v in rates.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default=",".join(MODES), help="Comma-separated: fit, function, xla.")
    parser.add_argument("--batch-size", type=int, default=128)  # zoo's Fashion-MNIST runs (README)
    parser.add_argument("--image-size", type=int, default=28)   # Fashion-MNIST's native size
    parser.add_argument("--steps", type=int, default=6, help="Batches per timed round.")
    parser.add_argument("--rounds", type=int, default=3, help="Timed rounds per model.")
    parser.add_argument("--pipeline", action="store_true",
                        help="fit reads zoo's live tf.data pipeline instead of cached tensors.")
    parser.add_argument("--output", default=None, help="Also write the results as JSON here.")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")

    tf.keras.utils.set_random_seed(0)
    batches, dataset = make_batches(args.image_size, args.batch_size, args.steps, args.pipeline)
    log(f"{len(batches)} batches of {args.batch_size} Fashion-MNIST images at {args.image_size}px; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    results = []
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for mode in modes:
        tf.keras.backend.clear_session()
        tf.keras.utils.set_random_seed(0)
        runners = {name: Runner(model, mode, dataset)
                   for name, model in make_models(args.image_size, 10).items()}
        for kind in ("train", "infer"):
            log(f"[{mode}] {kind}")
            rates = measure(runners, batches, args.batch_size, args.rounds, kind)
            results.append({"mode": mode, "kind": kind, "zoo_img_s": round(rates["zoo"], 1),
                            "larq_zoo_img_s": round(rates["larq_zoo"], 1),
                            "ratio": round(rates["zoo"] / rates["larq_zoo"], 3)})
    report = {
        "batch_size": args.batch_size, "image_size": args.image_size, "steps": args.steps,
        "rounds": args.rounds, "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
        "wall_s": round(time.perf_counter() - wall_start, 1),
        "cpu_s": round(time.process_time() - cpu_start, 1),
        "tensorflow": tf.__version__, "results": results,
    }
    header = f"{'mode':9s} {'kind':6s} {'zoo img/s':>10s} {'larq-zoo img/s':>15s} {'ratio':>6s}"
    print(header)
    print("-" * len(header))
    for row in results:
        print(f"{row['mode']:9s} {row['kind']:6s} {row['zoo_img_s']:10.1f} "
              f"{row['larq_zoo_img_s']:15.1f} {row['ratio']:6.2f}x")
    print(f"(wall {report['wall_s']} s, CPU {report['cpu_s']} s, load average {report['load_average']:.1f})")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
