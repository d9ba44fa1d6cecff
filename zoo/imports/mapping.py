"""Moving a release's tensors into a Keras model: one release tensor per model weight.

A layout (one module per paper, :mod:`zoo.imports.reactnet` ...) lists :class:`Rule` s:
release name -> Keras weight (``"layer.attribute"``, e.g. ``"block1_conv3x3.kernel"`` or
``"block1_conv3x3.input_quantizer.bias"``) and how the tensor is laid out. :func:`match`
checks a release's names and shapes against a model: every model weight is set by
exactly one tensor and every tensor is used (BatchNorm's ``num_batches_tracked`` aside);
the first difference is one error naming the key and both shapes. :func:`transfer` then
sets the weights.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

from zoo.errors import WeightsError

# BatchNorm2d's tensors -> Keras BatchNormalization's weights (PyTorch's eps is 1e-5: the
# builders the layouts target use it)
BN_TENSORS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
              ("running_var", "moving_variance"))
IGNORED_SUFFIXES = (".num_batches_tracked",)  # a BN step counter: no inference weight


def _hwio(array: np.ndarray, turn: bool) -> np.ndarray:
    return _turned(np.transpose(array, (2, 3, 1, 0)), turn)  # OIHW -> HWIO


def _turned(kernel: np.ndarray, turn: bool) -> np.ndarray:
    return kernel[::-1, ::-1] if turn else kernel


def _oihw(shape) -> Tuple[int, ...]:
    h, w, i, o = shape
    return (o, i, h, w)


# kind -> (release shape for a Keras shape, release array -> Keras array)
KINDS = {
    # nn.Conv2d / a 4-D binary kernel [out, in, kh, kw]
    "conv": (_oihw, lambda a, shape, turn: _hwio(a, turn)),
    # the official ReActNet-A binary kernel, stored flat as [out*in*kh*kw, 1]
    "flat_conv": (lambda s: (int(np.prod(s)), 1),
                  lambda a, shape, turn: _hwio(a.reshape(_oihw(shape)), turn)),
    # the same on a BGR-input release: the model reads RGB, so the input channels turn
    "conv_bgr": (_oihw, lambda a, shape, turn: _hwio(a[:, ::-1], turn)),
    # a depthwise nn.Conv2d [C, 1, kh, kw] -> DepthwiseConv2D [kh, kw, C, 1]
    "depthwise": (lambda s: (s[2], 1, s[0], s[1]),
                  lambda a, shape, turn: _turned(np.transpose(a, (2, 3, 0, 1)), turn)),
    # nn.Linear [out, in] -> Dense [in, out]
    "dense": (lambda s: (s[1], s[0]), lambda a, shape, turn: a.T),
    # a per-channel vector: BN, PReLU's slope, a Linear bias
    "vector": (tuple, lambda a, shape, turn: a),
    # ReActNet's LearnableBias [1, C, 1, 1]
    "bias4d": (lambda s: (1, s[0], 1, 1), lambda a, shape, turn: a.reshape(shape)),
}


@dataclasses.dataclass(frozen=True)
class Rule:
    """One release tensor (``key``) into one Keras weight (``target``) of a ``kind``;
    kind ``"bn"`` stands for BatchNorm2d's four tensors under the prefix ``key``."""

    key: str
    target: str
    kind: str

    def expand(self) -> List["Rule"]:
        if self.kind == "bn":
            return [Rule(f"{self.key}.{t}", f"{self.target}.{k}", "vector") for t, k in BN_TENSORS]
        if self.kind not in KINDS:
            raise ValueError(f"unknown tensor kind {self.kind!r} in a layout rule")
        return [self]


def expand(rules: Iterable[Rule]) -> List[Rule]:
    return [single for rule in rules for single in rule.expand()]


def _variable(model, target: str):
    layer_name, *attributes = target.split(".")
    try:
        value = model.get_layer(layer_name)
    except ValueError:
        raise WeightsError(f"{model.name} has no layer {layer_name} (layout rule {target}).") from None
    for attribute in attributes:
        value = getattr(value, attribute, None)
        if value is None:
            raise WeightsError(f"{model.name}: {target} does not exist (layout rule).")
    return value


def match(model, rules: Sequence[Rule], shapes: Mapping[str, Sequence[int]],
          source: str = "the checkpoint") -> List[Tuple[Rule, object]]:
    """Check that ``shapes`` (release name -> shape) fill ``model`` through ``rules``;
    returns ``[(rule, variable)]``. Raises one :class:`WeightsError` at the first
    missing or misshapen tensor, for tensors left over, or weights no rule sets."""
    rules = expand(rules)
    expected = {rule.key for rule in rules}
    unused = [k for k in shapes if k not in expected and not k.endswith(IGNORED_SUFFIXES)]
    plan, seen = [], set()
    for rule in rules:
        variable = _variable(model, rule.target)
        keras_shape = tuple(int(d) for d in variable.shape)
        want = tuple(int(d) for d in KINDS[rule.kind][0](keras_shape))
        if rule.key not in shapes:
            other = (f"; its first tensor this layout does not know is {unused[0]!r} "
                     f"{list(shapes[unused[0]])}" if unused else "")
            raise WeightsError(
                f"{source} is not a {model.name} checkpoint of this layout: it has no tensor "
                f"{rule.key!r} (shape {list(want)} for {rule.target}){other}. Check the model "
                f"name and --source.")
        got = tuple(int(d) for d in shapes[rule.key])
        if got != want:
            raise WeightsError(
                f"{source} does not fit {model.name}: tensor {rule.key!r} has shape {list(got)}, "
                f"the model's {rule.target} needs {list(want)}. Check the model name and --source.")
        ref = variable.ref()
        if ref in seen:
            raise WeightsError(f"layout error: {rule.target} is set twice.")
        seen.add(ref)
        plan.append((rule, variable))
    unset = [w.name for w in model.weights if w.ref() not in seen]
    if unset:
        raise WeightsError(f"layout error: no release tensor sets {model.name}'s {unset[0]} "
                           f"({len(unset)} weight(s) unset).")
    if unused:
        raise WeightsError(
            f"{source} has {len(unused)} tensor(s) that {model.name} does not use, first "
            f"{unused[0]!r} {list(shapes[unused[0]])}: it is another architecture or layout. "
            f"Check the model name and --source.")
    return plan


def transfer(model, rules: Sequence[Rule], state: Mapping[str, np.ndarray], turn: bool = False,
             source: str = "the checkpoint") -> int:
    """Set every weight of ``model`` from ``state`` through ``rules`` (checked by
    :func:`match` first); ``turn``: kernels turned by 180 degrees for
    ``padding="symmetric"`` models. Returns the number of tensors moved."""
    plan = match(model, rules, {k: np.shape(v) for k, v in state.items()}, source)
    for rule, variable in plan:
        shape = tuple(int(d) for d in variable.shape)
        value = KINDS[rule.kind][1](np.asarray(state[rule.key], dtype=np.float32), shape, turn)
        variable.assign(np.ascontiguousarray(value, dtype=variable.dtype.as_numpy_dtype))
    return len(plan)


def shapes_of(state: Mapping[str, np.ndarray]) -> Dict[str, Tuple[int, ...]]:
    return {k: tuple(np.shape(v)) for k, v in state.items()}
