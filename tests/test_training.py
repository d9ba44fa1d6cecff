"""Training: LR schedules, recipe overrides, stage-to-stage weight transfer and
short real runs on Fashion-MNIST (a few hundred images)."""
import csv
import json
import sys

import numpy as np
import pytest
from conftest import needs_fmnist

import zoo  # noqa: F401  (before TensorFlow: Keras 2)
import tensorflow as tf  # noqa: E402

from zoo import InvalidInputError, UnknownNameError, ZooError  # noqa: E402
from zoo.runs import load_for_evaluation  # noqa: E402
from zoo.training import (  # noqa: E402
    RECIPES, StageSchedule, evaluate_model, get_recipe, train, transfer_weights,
)

SMALL = dict(epochs=1, batch_size=32, limit=256, eval_limit=200, image_size=28)


def _lr(schedule, step):
    return float(schedule(tf.constant(step)))


# ----------------------------------------------------------------------------- schedules


def test_linear_schedule_decays_to_zero():
    schedule = StageSchedule(0.4, 100, "linear")
    assert _lr(schedule, 0) == pytest.approx(0.4)
    assert _lr(schedule, 25) == pytest.approx(0.3)
    assert _lr(schedule, 50) == pytest.approx(0.2)
    assert _lr(schedule, 99) == pytest.approx(0.004, rel=1e-4)
    assert _lr(schedule, 100) == 0.0
    assert _lr(schedule, 150) == 0.0  # clipped, never negative


def test_cosine_schedule():
    schedule = StageSchedule(0.4, 100, "cosine")
    assert _lr(schedule, 0) == pytest.approx(0.4)
    assert _lr(schedule, 50) == pytest.approx(0.2, rel=1e-5)
    assert _lr(schedule, 25) == pytest.approx(0.4 * 0.5 * (1 + np.cos(np.pi / 4)), rel=1e-5)
    assert _lr(schedule, 100) == pytest.approx(0.0, abs=1e-7)


def test_step_schedule():
    schedule = StageSchedule(0.5, 30, "step", milestones=[10, 20], gamma=0.1)
    assert _lr(schedule, 0) == pytest.approx(0.5)
    assert _lr(schedule, 9) == pytest.approx(0.5)
    assert _lr(schedule, 10) == pytest.approx(0.05)
    assert _lr(schedule, 19) == pytest.approx(0.05)
    assert _lr(schedule, 20) == pytest.approx(0.005)
    assert _lr(schedule, 25) == pytest.approx(0.005)
    # no milestones: constant
    assert _lr(StageSchedule(0.5, 30, "step"), 29) == pytest.approx(0.5)


def test_constant_schedule_and_warmup():
    assert _lr(StageSchedule(0.2, 10, "constant"), 7) == pytest.approx(0.2)
    warm = StageSchedule(1.0, 100, "constant", warmup_steps=10)
    assert _lr(warm, 0) == pytest.approx(0.1)
    assert _lr(warm, 4) == pytest.approx(0.5)
    assert _lr(warm, 9) == pytest.approx(1.0)
    assert _lr(warm, 60) == pytest.approx(1.0)
    linear_warm = StageSchedule(1.0, 100, "linear", warmup_steps=10)
    assert _lr(linear_warm, 4) == pytest.approx(0.5 * 0.96)
    assert _lr(linear_warm, 50) == pytest.approx(0.5)


def test_schedule_config_and_bad_kind():
    schedule = StageSchedule(0.1, 50, "step", milestones=[10, 20], gamma=0.5, warmup_steps=3)
    clone = StageSchedule.from_config(schedule.get_config())
    for step in (0, 2, 15, 30):
        assert _lr(clone, step) == _lr(schedule, step)
    with pytest.raises(ValueError, match="Unknown schedule"):
        StageSchedule(0.1, 10, "exponential")


# ----------------------------------------------------------------------------- recipes


def test_recipe_resolve_overrides_every_stage():
    recipe = get_recipe("birealnet_two_step")
    assert [s.name for s in recipe.stages] == ["real_relu", "real_leaky_clip", "real_clip", "binary"]
    resolved = recipe.resolve(epochs=2, batch_size=16, learning_rate=0.25,
                              stage_overrides={"label_smoothing": 0.2})
    for stage in resolved.stages:
        assert stage.epochs == 2 and stage.batch_size == 16
        assert stage.learning_rate == 0.25 and stage.label_smoothing == 0.2
    # the other settings and the registered recipe stay as they were
    assert resolved.stages[0].model_overrides == {"activation": "relu", "binary_weights": False}
    assert resolved.stages[3].optimizer == "sgd"
    assert [s.epochs for s in recipe.stages] == [90, 10, 10, 20]
    assert get_recipe("birealnet_two_step").stages[0].learning_rate == 0.1
    # nothing given: unchanged
    assert recipe.resolve().stages == recipe.stages


def test_birealnet_two_step_is_the_release_schedule():
    """ECCV README: ReLU from scratch, then leaky-clip, then clip fine-tuning, then the binary
    SGD stage with the released weight gradient; Bi-Real-34 trains 40 epochs at batch 1024, LR 0.08."""
    recipe = get_recipe("birealnet_two_step")
    assert [s.model_overrides.get("activation") for s in recipe.stages] == [
        "relu", "leaky_clip", "clip", None]
    assert [s.model_overrides.get("binary_weights", True) for s in recipe.stages] == [
        False, False, False, True]
    assert recipe.stages[3].model_overrides == {"weight_gradient": "clip"}
    binary18 = recipe.for_model("birealnet18").stages[3]
    assert (binary18.epochs, binary18.batch_size, binary18.learning_rate) == (20, 128, 0.01)
    binary34 = recipe.for_model("birealnet34").stages[3]
    assert (binary34.epochs, binary34.batch_size, binary34.learning_rate) == (40, 1024, 0.08)
    assert binary34.milestones == (0.5, 0.75)  # x0.1 at epochs 20 and 30 of 40
    assert recipe.for_model("birealnet34").stages[:3] == recipe.stages[:3]
    # the Adam recipe: BiReal_50/train.py's LR 5e-4 at batch 256, 18/34 keep 1e-3 at 512
    adam = get_recipe("birealnet_adam")
    assert (adam.for_model("birealnet50").stages[0].learning_rate,
            adam.for_model("birealnet50").stages[0].batch_size) == (5e-4, 256)
    assert (adam.for_model("birealnet34").stages[0].learning_rate,
            adam.for_model("birealnet34").stages[0].batch_size) == (1e-3, 512)


def test_release_weight_gradient_is_the_clip_gradient_without_alpha():
    """birealnet_two_step's binary kernels: forward alpha * sign(w) (alpha = per-output-channel
    mean |w|), backward 1{|w| < 1} * g, as the released HardBinaryConv; Larq's
    magnitude_aware_sign (the Adam recipe) multiplies the gradient by alpha."""
    import larq as lq

    w = tf.constant([[0.5, -2.0], [-0.25, 0.02], [1.5, -0.9]])  # (in 3, out 2)
    g = tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    alpha = np.mean(np.abs(w.numpy()), axis=0)  # [0.75, 0.973...]
    expected_forward = alpha * np.where(w.numpy() >= 0, 1.0, -1.0)
    expected_grad = g.numpy() * (np.abs(w.numpy()) < 1)
    from zoo.layers import ClipGradientMagnitudeSign

    for quantizer, scale in ((ClipGradientMagnitudeSign(), 1.0),
                             (lq.quantizers.MagnitudeAwareSign(), alpha)):
        with tf.GradientTape() as tape:
            tape.watch(w)
            out = quantizer(w)
        np.testing.assert_allclose(out.numpy(), expected_forward, rtol=1e-6)
        np.testing.assert_allclose(tape.gradient(out, w, output_gradients=g).numpy(),
                                   expected_grad * scale, rtol=1e-6)
    # the binary stage builds it, and the relu/leaky-clip/clip phases transfer into it
    shape = dict(input_shape=(32, 32, 3), num_classes=10)
    binary = zoo.load("birealnet18", weight_gradient="clip", **shape)
    quantizers = {type(l.kernel_quantizer).__name__ for l in binary.layers
                  if isinstance(l, lq.layers.QuantConv2D)}
    assert quantizers == {"ClipGradientMagnitudeSign"}
    relu = zoo.load("birealnet18", activation="relu", binary_weights=False, **shape)
    assert transfer_weights(relu, binary) == len(binary.weights)


def test_spos_sgd_is_the_released_retraining():
    (stage,) = get_recipe("spos_sgd").stages  # src/Evaluation/template/train.py
    assert (stage.optimizer, stage.learning_rate, stage.batch_size) == ("sgd", 0.5, 1024)
    assert stage.optimizer_args == {"momentum": 0.9} and stage.schedule == "linear"
    assert stage.epochs == round(300_000 * 1024 / 1_281_167)  # 300k iterations
    assert (stage.weight_decay, stage.label_smoothing) == (4e-5, 0.1)
    assert stage.bn_statistics_pass and stage.photometric == "color_jitter"
    assert zoo.get_entry("spos").default_recipe == "spos_sgd"
    # the releases' PCA lighting 0.1: Bi-Real's Adam code, ReActNet, MetaPruning
    for name in ("birealnet_adam", "reactnet_two_step", "metapruning_mobilenet"):
        assert {s.photometric for s in get_recipe(name).stages} == {"lighting"}, name
    assert {s.photometric for s in get_recipe("birealnet_two_step").stages} == {"none"}  # Caffe


def test_recipe_resolve_rejects_bad_overrides():
    recipe = get_recipe("birealnet_adam")
    with pytest.raises(InvalidInputError, match="nonsense"):
        recipe.resolve(stage_overrides={"nonsense": 1})
    with pytest.raises(InvalidInputError, match="epochs"):
        recipe.resolve(epochs=0)
    with pytest.raises(InvalidInputError):
        recipe.resolve(batch_size=0)


def test_recipe_names():
    assert "birealnet_adam" in RECIPES.names() and "birealnet_two_step" in RECIPES.names()
    assert get_recipe("birealnet").name == "birealnet_two_step"
    with pytest.raises(UnknownNameError):
        get_recipe("birealnet_two_stpe")
    assert zoo.get_entry("birealnet18").default_recipe in RECIPES


# ----------------------------------------------------------------------------- weight transfer


def test_transfer_weights_from_real_clip_to_binary():
    shape = dict(input_shape=(32, 32, 3), num_classes=10)
    real = zoo.load("birealnet18", activation="clip", binary_weights=False, **shape)
    binary = zoo.load("birealnet18", **shape)
    assert len(real.weights) == len(binary.weights)
    before = [np.array_equal(a, b) for a, b in zip(real.get_weights(), binary.get_weights())]
    assert not all(before)  # independently initialised

    count = transfer_weights(real, binary)
    assert count == len(binary.weights) > 0
    for source, target in zip(real.weights, binary.weights):
        assert np.array_equal(source.numpy(), target.numpy()), target.name
    # same weights, other quantizers: the outputs differ
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    assert not np.allclose(real(x, training=False), binary(x, training=False))

    other = zoo.load("birealnet34", **shape)
    with pytest.raises(ZooError, match="Cannot initialise"):
        transfer_weights(binary, other)
    with pytest.raises(ZooError):
        transfer_weights(other, binary)


# ----------------------------------------------------------------------------- progress lines


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_log_throttles_and_estimates_time_left():
    import io

    from zoo.training.callbacks import ProgressLog

    clock, stream = _Clock(), io.StringIO()
    progress = ProgressLog("net", steps=100, interval=60, clock=clock, stream=stream)
    progress.set_params({"epochs": 3, "steps": 100})
    progress.on_epoch_begin(1)
    clock.now += 30
    progress.on_train_batch_end(9, {"loss": 1.5, "accuracy": 0.25})  # 30 s < 60 s: silent
    assert stream.getvalue() == ""
    clock.now += 45  # 75 s for 25 steps: 3 s a step, 75 steps left
    progress.on_train_batch_end(24, {"loss": 0.75, "accuracy": 0.5, "top5": 0.9})
    assert stream.getvalue() == ("[net] epoch 2/3: step 25/100 (25%), loss 0.7500, "
                                 "accuracy 0.5000, 1:15 spent, ~3:45 left\n")
    clock.now += 59  # under a minute since the last line
    progress.on_train_batch_end(40, {"loss": 0.5})
    assert stream.getvalue().count("\n") == 1
    clock.now += 3600  # hours
    progress.on_train_batch_end(49, {"loss": 0.5})
    assert stream.getvalue().splitlines()[-1] == \
        "[net] epoch 2/3: step 50/100 (50%), loss 0.5000, 1:02:14 spent, ~1:02:14 left"
    progress.on_epoch_begin(2)  # a new epoch restarts the clock
    clock.now += 60
    progress.on_train_batch_end(99, {})
    assert stream.getvalue().splitlines()[-1] == "[net] epoch 3/3: step 100/100 (100%), 1:00 spent, ~0:00 left"


def test_fit_verbosity_follows_stderr_unless_given(monkeypatch):
    from zoo.training.callbacks import fit_verbosity, progress_callbacks

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert fit_verbosity() == 1 and progress_callbacks("net", 10, fit_verbosity()) == []
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # a log file: epoch lines + ProgressLog
    assert fit_verbosity() == 2 and [type(c).__name__ for c in progress_callbacks("net", 10, 2)] == ["ProgressLog"]
    assert fit_verbosity(0) == 0 and progress_callbacks("net", 10, 0) == []


@needs_fmnist
def test_train_logs_progress_within_an_epoch(tmp_path, monkeypatch, capsys):
    from zoo.training import callbacks

    monkeypatch.setattr(callbacks, "PROGRESS_INTERVAL_S", 0.0)  # a line after every step
    train("binarynet", "fashion_mnist", output=tmp_path / "run", verbose=2, epochs=1,
          batch_size=32, limit=64, eval_limit=50)
    lines = [line for line in capsys.readouterr().err.splitlines() if "step " in line]
    assert [line.split(":")[1].split("(")[0].strip() for line in lines] == ["step 1/2", "step 2/2"]
    assert lines[0].startswith("[binarynet] epoch 1/1: step 1/2 (50%), loss ")


# ----------------------------------------------------------------------------- real runs


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "bireal"
    results = train("birealnet18", "fashion_mnist", output=output, verbose=0, **SMALL)
    return output, results


@needs_fmnist
def test_train_writes_the_run_directory(one_epoch_run):
    output, results = one_epoch_run
    for name in ("config.json", "summary.csv", "checkpoints/epoch001.h5", "weights.h5",
                 "results.json", "curves.png"):
        assert (output / name).is_file() and (output / name).stat().st_size > 0, name
    assert list((output / "logs").rglob("events.out.tfevents*"))
    assert not (output / ".write_test").exists()

    config = json.loads((output / "config.json").read_text())
    assert config["model"] == "birealnet18" and config["dataset"] == "fashion_mnist"
    assert config["input_shape"] == [28, 28, 3] and config["num_classes"] == 10
    assert config["train_examples"] == 256 and config["limit"] == 256
    assert config["recipe"]["name"] == "birealnet_adam"
    [stage] = config["recipe"]["stages"]
    assert stage["epochs"] == 1 and stage["batch_size"] == 32
    assert {"tensorflow", "larq", "keras"} <= set(config["versions"])

    [row] = _rows(output / "summary.csv")
    assert row["epoch"] == "1" and row["stage"] == "binary" and row["stage_epoch"] == "1"
    for key in ("loss", "accuracy", "val_train_loss", "val_accuracy", "val_top5"):
        assert np.isfinite(float(row[key])), key
    assert 0 <= float(row["val_accuracy"]) <= 100
    # linear schedule over 8 steps: after the epoch the LR has reached 0
    assert float(row["lr"]) == pytest.approx(0.0, abs=1e-9)

    saved = json.loads((output / "results.json").read_text())
    assert saved["top1"] == results["top1"] and saved["examples"] == 200
    assert saved["epochs"] == 1 and saved["input_shape"] == [28, 28, 3]
    assert 0 <= saved["top1"] <= saved["top5"] <= 100
    assert saved["top1"] * 2 == pytest.approx(round(saved["top1"] * 2))  # k/200 images
    # the last checkpoint is the final weights
    assert (output / "checkpoints/epoch001.h5").read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"


@needs_fmnist
def test_evaluate_reproduces_results(one_epoch_run):
    output, _ = one_epoch_run
    saved = json.loads((output / "results.json").read_text())
    # a weights file next to its config.json; aliases work (the run directory: test_cli.py)
    net, spec, input_shape = load_for_evaluation("birealnet", output / "weights.h5", "fmnist")
    assert tuple(input_shape) == (28, 28, 3) and spec.name == "fashion_mnist"
    # 1000-class params minus the classifier difference: 11,699,112 - 513 * 1000 + 513 * 10
    assert net.count_params() == 11_699_112 - 513 * 990
    results = evaluate_model(net, spec, input_shape, limit=200)
    assert results["top1"] == saved["top1"]
    assert results["top5"] == saved["top5"]
    assert results["loss"] == pytest.approx(saved["loss"], rel=1e-5)
    assert results["examples"] == 200


@needs_fmnist
def test_second_train_into_same_dir_refuses(one_epoch_run):
    output, _ = one_epoch_run
    config = (output / "config.json").read_text()
    with pytest.raises(ZooError, match="already holds a training run"):
        train("birealnet18", "fashion_mnist", output=output, verbose=0, **SMALL)
    assert (output / "config.json").read_text() == config


def test_unwritable_output_raises(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ZooError, match="Cannot write to output directory"):
        train("birealnet18", "fashion_mnist", output=blocker / "run", verbose=0, **SMALL)
    with pytest.raises(ZooError, match="Cannot write"):
        train("birealnet18", "fashion_mnist", output=blocker, verbose=0, **SMALL)


def test_train_rejects_bad_arguments_before_writing(tmp_path):
    with pytest.raises(UnknownNameError):
        train("nosuchmodel", output=tmp_path / "a", verbose=0, **SMALL)
    with pytest.raises(UnknownNameError):
        train("birealnet18", recipe="nosuchrecipe", output=tmp_path / "b", verbose=0, **SMALL)
    with pytest.raises(InvalidInputError):
        train("birealnet18", output=tmp_path / "c", stage_overrides={"bogus": 1}, verbose=0,
              **SMALL)
    assert not any(tmp_path.iterdir())


@needs_fmnist
def test_two_stage_recipe(tmp_path):
    output = tmp_path / "two"
    results = train("birealnet18", "fashion_mnist", recipe="birealnet_two_step", output=output,
                    verbose=0, **{**SMALL, "limit": 64, "eval_limit": 50})
    rows = _rows(output / "summary.csv")
    assert [(r["epoch"], r["stage"], r["stage_epoch"]) for r in rows] == [
        ("1", "real_relu", "1"), ("2", "real_leaky_clip", "1"), ("3", "real_clip", "1"),
        ("4", "binary", "1")]
    for name in ("real_relu_weights.h5", "real_clip_weights.h5", "binary_weights.h5", "weights.h5",
                 "checkpoints/real_clip_epoch001.h5", "checkpoints/binary_epoch001.h5",
                 "results.json", "curves.png"):
        assert (output / name).is_file(), name
    assert sorted(p.name for p in (output / "logs").iterdir()) == [
        "binary", "real_clip", "real_leaky_clip", "real_relu"]
    assert results["epochs"] == 4
    config = json.loads((output / "config.json").read_text())
    assert [s["name"] for s in config["recipe"]["stages"]] == [
        "real_relu", "real_leaky_clip", "real_clip", "binary"]
    assert all(s["epochs"] == 1 and s["batch_size"] == 32 for s in config["recipe"]["stages"])

    # stage 2 started from stage 1's weights and trained on: the files differ, but hold
    # the same tensors; the final weights are the binary stage's
    import h5py

    def arrays(name):  # Keras' HDF5 layout: layers in model order, then their weights
        with h5py.File(output / name, "r") as handle:
            return [handle[layer][weight][()]
                    for layer in handle.attrs["layer_names"]
                    for weight in handle[layer].attrs["weight_names"]]

    real, binary, final = (arrays(n) for n in ("real_clip_weights.h5", "binary_weights.h5",
                                                "weights.h5"))
    assert len(real) == len(binary) == len(final) > 50
    assert [a.shape for a in real] == [a.shape for a in binary]
    assert any(not np.array_equal(a, b) for a, b in zip(real, binary))
    assert all(np.array_equal(a, b) for a, b in zip(binary, final))


def test_train_takes_one_config_record(tmp_path):
    """`train(TrainConfig)` and `train(name, ...)` build the same record; keyword changes
    apply to a given record; positional ones are refused (they would be ambiguous)."""
    from zoo.training import TrainConfig

    with pytest.raises(UnknownNameError, match="nosuchmodel"):
        train(TrainConfig("birealnet18", output=tmp_path / "run"), model="nosuchmodel")
    with pytest.raises(UnknownNameError, match="nosuchmodel"):
        train("nosuchmodel", "fashion_mnist", output=tmp_path / "run")
    with pytest.raises(TypeError, match="keywords only"):
        train(TrainConfig("birealnet18"), "fashion_mnist")
    assert not (tmp_path / "run").exists()


@needs_fmnist
def test_bn_statistics_pass_changes_only_the_bn_statistics(tmp_path):
    """spos_sgd's final pass (a stage setting): after the last epoch, one epoch of
    training-mode batches resets every BN's moving statistics; nothing else moves."""
    import h5py

    output = tmp_path / "bn"
    train("birealnet18", "fashion_mnist", recipe="birealnet_adam", output=output, verbose=0,
          stage_overrides={"bn_statistics_pass": True}, **{**SMALL, "limit": 64, "eval_limit": 50})

    def named(name):
        with h5py.File(output / name, "r") as handle:
            return {f"{layer}/{weight}": handle[layer][weight][()]
                    for layer in handle.attrs["layer_names"]
                    for weight in handle[layer].attrs["weight_names"]}

    last_epoch, final = named("checkpoints/epoch001.h5"), named("weights.h5")
    assert last_epoch.keys() == final.keys()
    statistics = [k for k in final if "moving_" in k]
    assert statistics and all(not np.allclose(last_epoch[k], final[k]) for k in statistics)
    assert all(np.array_equal(last_epoch[k], final[k]) for k in final if "moving_" not in k)


def test_readme_recipe_table_lists_every_recipe_with_its_source():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("### Recipes"):text.index("### Datasets")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    for name in RECIPES.names():
        row = next((r for r in rows if f"`{name}`" in r), None)
        assert row is not None, name
        assert len([c for c in row.split(" | ") if c.strip()]) >= 4, name  # source, settings, differences
