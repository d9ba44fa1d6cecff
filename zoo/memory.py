"""Freeing what TensorFlow keeps of a Keras model after the model is gone.

``tf.custom_gradient`` (every larq quantizer) registers one gradient function per call
while Keras traces a graph, under the name ``CustomGradient-<n>``, and TensorFlow never
unregisters it: each one keeps its layer's kernel alive for the life of the process.
A process that builds many models (the zoo's cost table, a search, a benchmark loop, the
test suite) grows by their weights: +1.6 GB per Bi-Real-152 build, measured.

:func:`discarded_models` drops the entries registered inside its block once the block is
done; gradients of graphs traced inside the block are built by then (Keras traces a
training step with its gradient in one go). Use it around code whose models are thrown
away, not around building a model that is trained later outside the block's graphs.
"""
import contextlib
import gc
from typing import Collection, Iterator

_PREFIX = "CustomGradient-"


def _registry() -> dict:
    from tensorflow.python.framework import ops  # no public way to unregister a gradient

    return ops._gradient_registry._registry  # noqa: SLF001


def forget_custom_gradients(keep: Collection[str] = ()) -> int:
    """Drops every ``tf.custom_gradient`` registration but those named in ``keep``;
    returns how many were dropped (garbage is collected when any were)."""
    registry = _registry()
    stale = [name for name in registry if name.startswith(_PREFIX) and name not in keep]
    for name in stale:
        del registry[name]
    if stale:
        gc.collect()
    return len(stale)


@contextlib.contextmanager
def discarded_models() -> Iterator[None]:
    """The models built inside the block are thrown away after it: their gradient
    registrations go with them (those made before the block stay)."""
    before = frozenset(_registry())
    try:
        yield
    finally:
        forget_custom_gradients(keep=before)
