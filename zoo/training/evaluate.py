"""Test-split evaluation of a classifier: top-1 / top-5 accuracy and loss."""
from __future__ import annotations

import contextlib
import sys
from typing import Dict

from zoo import data as zdata
from zoo.metrics import health_warnings
from zoo.settings import EVAL_BATCH_SIZE
from zoo.training import distributed as zdist
from zoo.training.losses import SparseCrossentropy, classification_metrics


def evaluate_model(model, spec, input_shape, batch_size: int = EVAL_BATCH_SIZE, limit=None,
                   verbose: int = 0, strategy=None) -> Dict[str, float]:
    """Top-1 / top-5 accuracy (%), mean loss and the number of classes predicted on the
    test split (``warnings`` when the loss is NaN/inf or one class is predicted), deterministically
    (over the replicas of ``strategy`` when given: the model must come from its scope)."""
    total = zdata.num_examples(spec, "test")
    count = min(limit, total) if limit else total
    if strategy is not None:
        batch_size = zdist.eval_batch_size(count, batch_size, strategy)
    ds = zdata.make_dataset(spec, "test", input_shape, batch_size, training=False, limit=limit)
    if strategy is not None:
        ds = zdist.distribute_dataset(ds, strategy)
    with model.distribute_strategy.scope():  # metrics live where the model's variables do
        model.compile(loss=SparseCrossentropy(),
                      metrics=classification_metrics(spec.num_classes, predicted_classes=True))
    with contextlib.redirect_stdout(sys.stderr), zdata.named_image_errors(spec):
        values = model.evaluate(ds, verbose=verbose, return_dict=True)
    results = {"top1": 100.0 * values["accuracy"], "top5": 100.0 * values["top5"],
               "loss": float(values["loss"]), "examples": int(count),
               "predicted_classes": int(values["predicted_classes"])}
    warnings = health_warnings(results)
    if warnings:
        results["warnings"] = warnings
        for warning in warnings:
            print(f"Warning: {warning}.", file=sys.stderr)
    return results
