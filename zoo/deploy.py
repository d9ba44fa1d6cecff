"""Deployment with Larq Compute Engine (LCE): conversion, op census, latency.

``convert`` turns a Keras model into an LCE flatbuffer (binary convs become
``LceBconv2d``, bit-packed 1-bit weights). ``benchmark`` reports what a model
costs on paper (``zoo.costs``) next to what the converted model really runs:
the MACs of its binary (``LceBconv2d``) and float (``CONV_2D``,
``DEPTHWISE_CONV_2D``, ``FULLY_CONNECTED``) ops, the flatbuffer size, and the
latency of the LCE interpreter against the same network run in float TFLite.

Zero padding of small feature maps. LCE 0.16 emulates the zero padding of a
binary conv (Larq's ``pad_values=0``) by one-padding and a correction term, and
its optimized kernel gets that correction wrong whenever the input feature map
is smaller than the (dilated) kernel along a padded side (a 3x3 conv on a 2x2 or 1x1 map:
Bi-Real Net's last stages at 28x28 or 32x32 inputs). Its reference kernel is
right. ``convert`` therefore rewrites exactly those convs, before conversion, to
the equivalent one-padded conv minus a constant map (the kernel's sum over the
padded taps), which LCE runs natively; the binary conv stays binary and the
weights are unchanged, so weights trained with zero padding keep their accuracy.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import larq as lq
import numpy as np
import tensorflow as tf

from zoo.errors import InvalidInputError, ZooError

# Ops of a converted model that carry multiply-accumulates (TFLite builtin names).
FLOAT_MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV")
BINARY_MAC_OPS = ("LceBconv2d",)


def _lce():
    try:
        import larq_compute_engine as lce
    except ImportError as error:  # pragma: no cover - the [deploy] extra is part of the install
        raise ZooError(
            "Larq Compute Engine is not installed: pip install -e .[deploy] "
            f"(larq-compute-engine) to convert models ({error}).") from None
    return lce


# ----------------------------------------------------------------------------- the rewrite


def _same_padding(size: int, kernel: int, stride: int, dilation: int):
    """TensorFlow's 'same' padding (before, after) of one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _precision(quantizer) -> Optional[int]:
    return None if quantizer is None else getattr(quantizer, "precision", None)


def needs_padding_rewrite(layer) -> bool:
    """Whether LCE 0.16's optimized kernel mis-computes this zero-padded binary conv:
    a Larq ``QuantConv2D`` with 1-bit input and kernel, 'same' zero padding, and an input
    smaller than the (dilated) kernel along an axis that is padded."""
    if type(layer) is not lq.layers.QuantConv2D:
        return False
    if layer.padding != "same" or float(layer.pad_values) != 0.0:
        return False
    if _precision(layer.input_quantizer) != 1 or _precision(layer.kernel_quantizer) != 1:
        return False
    if layer.groups != 1:
        return False
    shape = layer.input_shape
    for axis in (0, 1):
        size, kernel = shape[1 + axis], layer.kernel_size[axis]
        stride, dilation = layer.strides[axis], layer.dilation_rate[axis]
        if size is None:
            return False
        span = (kernel - 1) * dilation + 1  # the dilated kernel's extent
        if size < span and sum(_same_padding(size, kernel, stride, dilation)) > 0:
            return True
    return False


class OnePaddedBinaryConv2D(lq.layers.QuantConv2D):
    """A zero-padded binary conv computed as the one-padded conv minus a constant map.

    With 1-bit inputs in {-1, +1}, one padding adds exactly ``sum(W_q)`` over the padded
    taps of every output pixel; ``padding_correction`` holds that map (1, H', W', C') and is
    subtracted, so the output equals Larq's ``pad_values=0`` conv exactly. Only used on the
    way to the converter (``lce_compatible``), never saved.
    """

    def __init__(self, *args, **kwargs):
        kwargs["pad_values"] = 1.0
        super().__init__(*args, **kwargs)
        self.padding_correction = None

    def call(self, inputs):
        outputs = super().call(inputs)
        if self.padding_correction is None:
            return outputs
        if np.prod(self.padding_correction.shape[1:3]) == 1:  # one pixel: a per-channel bias
            return outputs - tf.constant(self.padding_correction.reshape(-1), dtype=outputs.dtype)
        # Subtracted on a flattened view: LCE 0.16 would otherwise fuse the constant into the
        # bconv's per-channel output bias, which must be 1-D (the interpreter then refuses it).
        shape = tf.shape(outputs)
        flat = tf.reshape(outputs, [shape[0], -1])
        correction = tf.constant(self.padding_correction.reshape(1, -1), dtype=outputs.dtype)
        return tf.reshape(flat - correction, shape)


def padding_correction(layer) -> np.ndarray:
    """``one_padded(x) - zero_padded(x)`` of a binary conv: the quantized kernel summed over
    the padded taps of each output pixel, shape (1, H', W', filters)."""
    kernel = tf.constant(layer.get_weights()[0], tf.float32)  # the latent (stored) kernel
    quantized = layer.kernel_quantizer(kernel) if layer.kernel_quantizer is not None else kernel
    _, height, width, channels = layer.input_shape
    ones = tf.ones((1, height, width, channels), tf.float32)
    inside = tf.nn.conv2d(ones, quantized, strides=[1, *layer.strides, 1], padding="SAME",
                          dilations=[1, *layer.dilation_rate, 1])
    full = tf.reduce_sum(quantized, axis=(0, 1, 2))
    return (full - inside).numpy()


def lce_compatible(model):
    """``model``, or an equivalent clone with the convs LCE mis-handles rewritten (see the
    module docstring). Returns ``(model, number_of_rewritten_layers)``."""
    targets = {layer.name for layer in model.layers if needs_padding_rewrite(layer)}
    if not targets:
        return model, 0

    def clone(layer):
        config = layer.get_config()
        if layer.name in targets:
            return OnePaddedBinaryConv2D.from_config(config)
        return layer.__class__.from_config(config)

    rewritten = tf.keras.models.clone_model(model, clone_function=clone)
    rewritten.set_weights(model.get_weights())
    for layer in rewritten.layers:
        if layer.name in targets:
            layer.padding_correction = padding_correction(layer)
    return rewritten, len(targets)


# ----------------------------------------------------------------------------- conversion


def convert(model, rewrite: bool = True) -> bytes:
    """The LCE flatbuffer of a Keras model (float32 input and output)."""
    lce = _lce()
    if rewrite:
        model, _ = lce_compatible(model)
    return lce.convert_keras_model(model)


def convert_float(model) -> bytes:
    """The same network as a plain float32 TFLite flatbuffer (binarization in float ops)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    return converter.convert()


def interpreter(flatbuffer: bytes, num_threads: int = 1):
    """LCE's interpreter (it also runs every TFLite builtin op)."""
    _lce()
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    return Interpreter(flatbuffer, num_threads=num_threads)


def predict(flatbuffer: bytes, x: np.ndarray, num_threads: int = 1) -> np.ndarray:
    """Outputs of a converted model on a batch (run one example at a time)."""
    return interpreter(flatbuffer, num_threads).predict(np.asarray(x, np.float32))


def check_output(output, force: bool = False) -> Path:
    """Fail before any work if ``output`` cannot be written (missing, read-only or special
    folder) or is a file the user already has (without ``force``)."""
    output = Path(output)
    folder = output.parent
    if output.is_dir():
        raise InvalidInputError(f"--output {output} is a folder: give a file name (model.tflite).")
    if not folder.is_dir():
        raise InvalidInputError(f"Output folder {folder} does not exist: create it first.")
    if output.exists() and not force:
        raise InvalidInputError(f"--output {output} already exists: pass --force to overwrite it, "
                                f"or choose another file name.")
    try:  # a real write, not os.access: root passes that check even in /proc
        with tempfile.NamedTemporaryFile(prefix=f".{output.name}.", suffix=".probe", dir=folder):
            pass
    except OSError as error:
        raise InvalidInputError(f"Output folder {folder} is not writable ({error.strerror or error}): "
                                f"pick another --output.") from None
    return output


def write_flatbuffer(flatbuffer: bytes, output, force: bool = False) -> None:
    """Write atomically (a partial file never appears under ``output``), with the
    permissions the user's umask gives a new file."""
    output = check_output(output, force=force)
    folder = output.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(flatbuffer)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from others
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- op census


def _op_name(code) -> str:
    from tensorflow.lite.python import schema_py_generated as schema

    if code.CustomCode():
        return code.CustomCode().decode()
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return names.get(builtin, str(builtin))


def _custom_options(op) -> Dict[str, Any]:
    from flatbuffers import flexbuffers

    raw = op.CustomOptionsAsNumpy()
    if isinstance(raw, int) or len(raw) == 0:
        return {}
    return dict(flexbuffers.Loads(raw.tobytes()))


def flatbuffer_ops(flatbuffer: bytes) -> List[Dict[str, Any]]:
    """Every op of a (LCE or TFLite) flatbuffer's main graph with its MACs per example.

    MACs: ``LceBconv2d`` and ``CONV_2D``: output pixels x output channels x kernel taps x
    input channels per group; ``DEPTHWISE_CONV_2D``: outputs x taps; ``FULLY_CONNECTED``:
    outputs x inputs. Other ops count 0."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    graph = model.Subgraphs(0)

    def shape(index):
        return [int(d) for d in graph.Tensors(index).ShapeAsNumpy()] if index >= 0 else []

    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        name = _op_name(codes[op.OpcodeIndex()])
        inputs = [int(t) for t in op.InputsAsNumpy()] if op.InputsLength() else []
        outputs = [int(t) for t in op.OutputsAsNumpy()] if op.OutputsLength() else []
        out = shape(outputs[0]) if outputs else []
        batch = out[0] if out else 1
        macs = 0
        if name == "LceBconv2d":
            options = _custom_options(op)
            cout, kh, kw, packed = shape(inputs[1])
            cin_per_group = min(int(options["channels_in"]), 32 * packed)
            macs = int(np.prod(out[1:3])) * cout * kh * kw * cin_per_group
        elif name == "CONV_2D":
            cout, kh, kw, cin = shape(inputs[1])
            macs = int(np.prod(out[1:3])) * cout * kh * kw * cin
        elif name == "DEPTHWISE_CONV_2D":
            _, kh, kw, _ = shape(inputs[1])
            macs = int(np.prod(out[1:])) * kh * kw
        elif name == "FULLY_CONNECTED":
            units, fan_in = shape(inputs[1])
            macs = int(np.prod(out)) // max(batch, 1) * fan_in
        elif name in ("BATCH_MATMUL", "TRANSPOSE_CONV"):
            macs = -1  # not expected in the zoo's models; flagged rather than guessed
        ops.append({"op": name, "macs": macs, "output_shape": out})
    return ops


def op_census(flatbuffer: bytes) -> Dict[str, Any]:
    """Binary and float MACs a converted model runs, and how many of each op it has."""
    ops = flatbuffer_ops(flatbuffer)
    counts: Dict[str, int] = {}
    for op in ops:
        counts[op["op"]] = counts.get(op["op"], 0) + 1
    binary = sum(op["macs"] for op in ops if op["op"] in BINARY_MAC_OPS)
    floats = sum(op["macs"] for op in ops if op["op"] in FLOAT_MAC_OPS)
    total = binary + floats
    return {
        "binary_macs": int(binary),
        "float_macs": int(floats),
        "binary_fraction": (binary / total) if total else 0.0,
        "ops": float(floats + binary / 64.0),
        "op_counts": dict(sorted(counts.items())),
    }


# ----------------------------------------------------------------------------- latency


def latency_ms(flatbuffer: bytes, input_shape: Sequence[int], runs: int = 20, warmup: int = 3,
               num_threads: int = 1, seed: int = 0) -> Dict[str, float]:
    """Median / min wall time (ms) of one single-image inference in the LCE interpreter."""
    runner = interpreter(flatbuffer, num_threads)
    x = np.random.default_rng(seed).standard_normal((1, *input_shape)).astype(np.float32)
    for _ in range(warmup):
        runner.predict(x)
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        runner.predict(x)
        times.append(1000.0 * (time.perf_counter() - start))
    return {"median": statistics.median(times), "min": min(times)}


# ----------------------------------------------------------------------------- model + report


def build(name: str, weights=None, input_size: Optional[int] = None, num_classes: Optional[int] = None):
    """The Keras model to deploy: a registered entry, optionally with weights (a published
    tag, a weights file or a ``zoo train`` run directory) and a square input size."""
    from zoo import api as zoo
    from zoo.hub.spec import get_spec, is_tag, split_tag
    from zoo.runs import load_for_evaluation

    if input_size is not None and int(input_size) < 1:
        raise InvalidInputError(f"--image-size must be positive, got {input_size}.")
    base, tag = split_tag(name)
    entry = zoo.get_entry(base)
    if entry.extra.get("supernet"):
        raise InvalidInputError(
            f"{entry.name} is a supernet (all candidate architectures at once), not one network: "
            f"search it with `zoo search`, train the architecture it finds (`zoo train MODEL "
            f"--arch ARCH`) and convert that run.")
    if weights is None and tag is not None:
        weights = tag
    if weights is None:
        size = int(input_size) if input_size else None
        shape = (size, size, 3) if size else tuple(entry.input_size)
        return zoo.load(entry.name, input_shape=shape,
                        num_classes=1000 if num_classes is None else num_classes)
    if is_tag(entry, weights):
        shape = None
        if input_size:
            channels = get_spec(entry, str(weights).strip().lower()).input_shape[-1]
            shape = (int(input_size), int(input_size), int(channels))
        return zoo.load(entry.name, weights=weights, input_shape=shape)
    net, _, _ = load_for_evaluation(entry.name, weights, None, input_size)
    return net


def benchmark(model, runs: int = 20, num_threads: int = 1, float_latency: bool = True,
              name: Optional[str] = None, weights=None) -> Dict[str, Any]:
    """Costs on paper, the converted model's op census and size, and both latencies."""
    from zoo.costs import model_costs

    costs = model_costs(model)
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    safe, rewritten = lce_compatible(model)
    start = time.perf_counter()
    flatbuffer = convert(safe, rewrite=False)
    convert_s = time.perf_counter() - start
    census = op_census(flatbuffer)
    lce_ms = latency_ms(flatbuffer, input_shape, runs=runs, num_threads=num_threads)
    report: Dict[str, Any] = {
        "model": name or model.name,
        "weights": None if weights is None else str(weights),
        "input_shape": list(input_shape),
        **{k: costs[k] for k in ("params", "binary_params", "real_params", "binary_macs",
                                 "float_macs", "ops")},
        "converted": {**census, "padding_rewrites": rewritten},
        "flatbuffer_bytes": len(flatbuffer),
        "convert_seconds": round(convert_s, 2),
        "lce_latency_ms": round(lce_ms["median"], 3),
        "num_threads": num_threads,
        "runs": runs,
    }
    if float_latency:
        float_fb = convert_float(model)
        float_ms = latency_ms(float_fb, input_shape, runs=runs, num_threads=num_threads)
        report["float_flatbuffer_bytes"] = len(float_fb)
        report["float_latency_ms"] = round(float_ms["median"], 3)
        report["speedup"] = round(float_ms["median"] / lce_ms["median"], 2)
    return report
