"""Test-split evaluation of a classifier: top-1 / top-5 accuracy and loss."""
from __future__ import annotations

import contextlib
import sys
from typing import Dict

from zoo import data as zdata
from zoo.settings import EVAL_BATCH_SIZE
from zoo.training import distributed as zdist
from zoo.training.losses import SparseCrossentropy, classification_metrics


def evaluate_model(model, spec, input_shape, batch_size: int = EVAL_BATCH_SIZE, limit=None,
                   verbose: int = 0, strategy=None) -> Dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean loss on the test split, deterministically
    (over the replicas of ``strategy`` when given: the model must come from its scope)."""
    total = zdata.num_examples(spec, "test")
    count = min(limit, total) if limit else total
    if strategy is not None:
        batch_size = zdist.eval_batch_size(count, batch_size, strategy)
    ds = zdata.make_dataset(spec, "test", input_shape, batch_size, training=False, limit=limit)
    if strategy is not None:
        ds = zdist.distribute_dataset(ds, strategy)
    with model.distribute_strategy.scope():  # metrics live where the model's variables do
        model.compile(loss=SparseCrossentropy(), metrics=classification_metrics(spec.num_classes))
    with contextlib.redirect_stdout(sys.stderr):
        values = model.evaluate(ds, verbose=verbose, return_dict=True)
    return {"top1": 100.0 * values["accuracy"], "top5": 100.0 * values["top5"],
            "loss": float(values["loss"]), "examples": int(count)}
