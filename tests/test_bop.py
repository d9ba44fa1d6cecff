"""Bop (arXiv 1906.02107): the optimizer entry, its schedules, the paper's recipes,
BinaryNet, XNOR-Net's latent-free switch, and a short end-to-end training run."""
import csv
import json
import math

import numpy as np
import pytest

import zoo
import larq as lq
import tensorflow as tf

from zoo.errors import InvalidInputError
from zoo.training import StageSchedule, get_optimizer, get_recipe
from zoo.training.bop import BopCaseOptimizer, bop_of


@pytest.fixture(autouse=True)
def _fresh(fresh_session):
    """A clean Keras session and seed for every test (conftest.fresh_session)."""


def _binary_variables(model):
    return [w for w in model.weights if lq.optimizers.Bop.is_binary_variable(w)]


def _hyper(optimizer, name, step):
    value = bop_of(optimizer)._get_hyper(name)
    if isinstance(value, tf.keras.optimizers.schedules.LearningRateSchedule):
        value = value(step)
    return float(tf.keras.backend.get_value(value))


# ---------------------------------------------------------------------------- factory

def test_factory_gives_case_optimizer_with_bop_and_legacy_adam():
    opt = get_optimizer("bop", 0.01, total_steps=100, steps_per_epoch=10)
    assert isinstance(opt, lq.optimizers.CaseOptimizer) and isinstance(opt, BopCaseOptimizer)
    assert isinstance(opt.default, tf.keras.optimizers.legacy.Adam)
    assert len(opt.pred_opt_pairs) == 1
    predicate, inner = opt.pred_opt_pairs[0]
    assert predicate is lq.optimizers.Bop.is_binary_variable and isinstance(inner, lq.optimizers.Bop)
    # larq's defaults = the paper's ImageNet / §5.2 values
    assert _hyper(opt, "threshold", 0) == pytest.approx(1e-8)
    assert _hyper(opt, "gamma", 0) == pytest.approx(1e-4)
    assert float(tf.keras.backend.get_value(opt.learning_rate)) == pytest.approx(0.01)
    assert float(tf.keras.backend.get_value(opt.lr)) == pytest.approx(0.01)


def test_factory_passes_the_stage_schedule_to_adam():
    schedule = StageSchedule(1e-3, 100, "linear")
    opt = get_optimizer("bop", schedule, total_steps=100, steps_per_epoch=10, threshold=1e-6, gamma=1e-3)
    assert opt.default._get_hyper("learning_rate") is schedule
    assert _hyper(opt, "threshold", 0) == pytest.approx(1e-6)
    assert _hyper(opt, "gamma", 0) == pytest.approx(1e-3)


def test_adam_linear_to_lr_end():
    # §5.3: Adam LR linear 2.5e-3 -> 5e-6 over all steps
    schedule = StageSchedule(2.5e-3, 1000, "linear")
    opt = get_optimizer("bop", schedule, total_steps=1000, steps_per_epoch=10, lr_end=5e-6)
    lr = opt.default._get_hyper("learning_rate")
    values = [float(lr(s)) for s in (0, 500, 1000, 5000)]
    np.testing.assert_allclose(values, [2.5e-3, (2.5e-3 + 5e-6) / 2, 5e-6, 5e-6], rtol=1e-5)
    with pytest.raises(InvalidInputError, match="lr_end"):
        get_optimizer("bop", StageSchedule(1e-3, 100, "cosine"), total_steps=100, steps_per_epoch=1,
                      lr_end=1e-6)


def test_gamma_step_schedule():
    # §5.2: gamma 1e-4 x0.1 every 100 epochs (1000 steps per epoch at batch 50), staircase
    opt = get_optimizer("bop", 0.01, total_steps=500_000, steps_per_epoch=1000, gamma=1e-4,
                        gamma_schedule="step", gamma_decay=0.1, gamma_decay_every_epochs=100)
    expected = {0: 1e-4, 99_999: 1e-4, 100_000: 1e-5, 199_999: 1e-5, 200_000: 1e-6, 450_000: 1e-8}
    for step, value in expected.items():
        assert _hyper(opt, "gamma", step) == pytest.approx(value, rel=1e-5), step
    assert _hyper(opt, "threshold", 300_000) == pytest.approx(1e-8)  # constant


def test_gamma_and_threshold_linear_schedules():
    # §5.3: gamma linear 1e-4 -> 1e-6 over all steps, then constant
    opt = get_optimizer("bop", 2.5e-3, total_steps=1000, steps_per_epoch=10,
                        gamma_schedule="linear", gamma_end=1e-6,
                        threshold=1e-6, threshold_schedule="linear", threshold_end=1e-8)
    for step, gamma in {0: 1e-4, 250: 7.525e-5, 500: 5.05e-5, 1000: 1e-6, 3000: 1e-6}.items():
        assert _hyper(opt, "gamma", step) == pytest.approx(gamma, rel=1e-5), step
    assert _hyper(opt, "threshold", 500) == pytest.approx(5.05e-7, rel=1e-5)
    step_threshold = get_optimizer("bop", 1e-3, total_steps=100, steps_per_epoch=10, threshold=1e-6,
                                   threshold_schedule="step", threshold_decay_every_epochs=2,
                                   threshold_decay=0.5)
    assert _hyper(step_threshold, "threshold", 19) == pytest.approx(1e-6)
    assert _hyper(step_threshold, "threshold", 20) == pytest.approx(5e-7)


@pytest.mark.parametrize("kwargs, match", [
    ({"gamma_schedule": "cosine"}, "gamma_schedule"),
    ({"gamma_schedule": "step"}, "gamma_decay_every_epochs"),
    ({"gamma_schedule": "linear"}, "gamma_end"),
    ({"threshold_schedule": "exp"}, "threshold_schedule"),
])
def test_bad_schedules_raise(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        get_optimizer("bop", 1e-3, total_steps=100, steps_per_epoch=10, **kwargs)


# ---------------------------------------------------------------------------- recipes

def test_recipes_have_the_papers_numbers():
    (cifar,) = get_recipe("binarynet_bop").stages  # §5.2
    assert (cifar.epochs, cifar.batch_size, cifar.learning_rate) == (500, 50, 0.01)
    assert cifar.optimizer == "bop" and cifar.schedule == "constant"
    assert cifar.optimizer_args == {"threshold": 1e-8, "gamma": 1e-4, "gamma_schedule": "step",
                                    "gamma_decay": 0.1, "gamma_decay_every_epochs": 100}
    assert cifar.model_overrides == {"binary_weights": "latent_free"}
    assert cifar.weight_decay == 0 and cifar.label_smoothing == 0
    assert zoo.get_entry("binarynet").default_recipe == "binarynet_bop"

    for name, epochs in [("birealnet_bop", 300), ("xnornet_bop", 100)]:  # §5.3
        (stage,) = get_recipe(name).stages
        assert (stage.epochs, stage.batch_size, stage.learning_rate) == (epochs, 1024, 2.5e-3)
        assert stage.optimizer == "bop" and stage.schedule == "linear"
        assert stage.optimizer_args == {"threshold": 1e-8, "gamma": 1e-4, "gamma_schedule": "linear",
                                        "gamma_end": 1e-6, "lr_end": 5e-6}
        assert stage.model_overrides == {"binary_weights": "latent_free"}
        assert stage.weight_decay == 0
        assert get_recipe(name).paper.arxiv == "1906.02107"


def test_cifar_recipe_builds_the_papers_gamma_schedule():
    # as loop.train builds it: CIFAR-10 at batch 50 is 1000 steps per epoch
    (stage,) = get_recipe("binarynet_bop").stages
    steps = math.ceil(50_000 / stage.batch_size)
    schedule = StageSchedule(stage.learning_rate, steps * stage.epochs, stage.schedule)
    opt = get_optimizer(stage.optimizer, schedule, total_steps=steps * stage.epochs,
                        steps_per_epoch=steps, **stage.optimizer_args)
    assert _hyper(opt, "gamma", 99_999) == pytest.approx(1e-4)
    assert _hyper(opt, "gamma", 100_000) == pytest.approx(1e-5)
    assert float(schedule(400_000)) == pytest.approx(0.01)  # Adam constant


# ---------------------------------------------------------------------------- models

def test_binarynet_architecture():
    model = zoo.load("binarynet", input_shape=(32, 32, 3), num_classes=10)
    convs = [l for l in model.layers if isinstance(l, lq.layers.QuantConv2D)]
    denses = [l for l in model.layers if isinstance(l, lq.layers.QuantDense)]
    norms = [l for l in model.layers if isinstance(l, tf.keras.layers.BatchNormalization)]
    assert [c.filters for c in convs] == [128, 128, 256, 256, 512, 512]
    assert [d.units for d in denses] == [1024, 1024, 10]
    assert len(norms) == 9 and not any(n.scale for n in norms)
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert [c.padding for c in convs] == ["valid"] + ["same"] * 5  # the Bop code's first conv
    assert convs[0].input_quantizer is None
    assert all(isinstance(l.input_quantizer, lq.quantizers.SteSign) for l in convs[1:] + denses)
    assert all(isinstance(l.kernel_quantizer, lq.quantizers.SteSign) for l in convs + denses)
    assert all(isinstance(l.kernel_constraint, lq.constraints.WeightClip) for l in convs + denses)
    assert len([l for l in model.layers if isinstance(l, tf.keras.layers.MaxPool2D)]) == 3
    # the Bop code's first conv 'valid': 32 -> 30 -> 15 -> 7 -> 3, the first dense sees 3x3x512
    flatten = next(l for l in model.layers if isinstance(l, tf.keras.layers.Flatten))
    assert flatten.output_shape == (None, 3 * 3 * 512)
    from zoo.costs import model_costs

    costs = model_costs(model)
    assert costs["params"] == 10_363_550  # 14,033,566 with a 'same' first conv
    assert costs["binary_macs"] == 510_961_664  # 511M BOPs (613M 'same')
    features = zoo.load("binarynet", include_top=False, input_shape=(32, 32, 3))
    assert features.output_shape == (None, 3, 3, 512)
    same = zoo.load("binarynet", include_top=False, input_shape=(32, 32, 3), first_conv_padding="same")
    assert same.output_shape == (None, 4, 4, 512)
    with pytest.raises(zoo.InvalidInputError, match="too small"):
        zoo.load("binarynet", input_shape=(4, 4, 3), num_classes=10)


def test_binarynet_latent_free_weights_are_interchangeable():
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
    free = zoo.load("binarynet", input_shape=(16, 16, 3), num_classes=10, binary_weights="latent_free")
    binary = _binary_variables(free)
    assert len(binary) == 9  # 6 convs + 3 dense, nothing else
    for layer in free.layers:
        if isinstance(layer, (lq.layers.QuantConv2D, lq.layers.QuantDense)):
            assert isinstance(layer.kernel_quantizer, lq.quantizers.NoOp)
            assert layer.kernel_quantizer.precision == 1 and layer.kernel_constraint is None
    for var in binary:  # random +-1 from the start, both signs
        assert set(np.unique(var.numpy())) == {-1.0, 1.0}
    # the same variables as the latent-weight model: +-1 kernels give the same predictions
    latent = zoo.load("binarynet", input_shape=(16, 16, 3), num_classes=10)
    latent.set_weights(free.get_weights())
    np.testing.assert_allclose(latent(x, training=False).numpy(), free(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_xnornet_latent_free_switch():
    shape = (224, 224, 3)  # larq-zoo's XNOR-Net needs >= 217 pixels
    default = zoo.load("xnornet", input_shape=shape, num_classes=10)
    free = zoo.load("xnornet", input_shape=shape, num_classes=10, binary_weights="latent_free")
    assert [tuple(w.shape) for w in free.weights] == [tuple(w.shape) for w in default.weights]
    quant = [l for l in free.layers if isinstance(l, lq.layers.QuantConv2D)]
    assert len(quant) == 6
    for layer in quant:
        assert isinstance(layer.kernel_quantizer, lq.quantizers.NoOp) and layer.kernel_quantizer.precision == 1
        assert layer.kernel_constraint is None and layer.kernel_regularizer is None
        assert set(np.unique(layer.kernel.numpy())) == {-1.0, 1.0}
    # L2 5e-7 stays on the real first conv and last dense only (the Bop code's XNOR-Net)
    assert len(free.losses) == 2 and len(default.losses) == 8
    real = [l for l in free.layers if type(l) in (tf.keras.layers.Conv2D, tf.keras.layers.Dense)]
    expected = sum(5e-7 * float(tf.reduce_sum(tf.square(l.kernel))) for l in real)
    assert float(tf.add_n(free.losses)) == pytest.approx(expected, rel=1e-5)
    # the default builder is larq-zoo's, unchanged
    from larq_zoo.literature.xnornet import xnor_weight_scale

    for layer in (l for l in default.layers if isinstance(l, lq.layers.QuantConv2D)):
        assert layer.kernel_quantizer is xnor_weight_scale
        assert isinstance(layer.kernel_constraint, lq.constraints.WeightClip)
    with pytest.raises(ValueError, match="binary_weights"):
        zoo.load("xnornet", input_shape=shape, num_classes=10, binary_weights="nope")
    with pytest.raises(zoo.InvalidInputError, match="too small"):
        zoo.load("xnornet", input_shape=(32, 32, 3), num_classes=10, binary_weights="latent_free")


# ---------------------------------------------------------------------------- training

def _tiny_problem(size=10, n=32, classes=10):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, size, size, 3)).astype(np.float32)
    y = rng.integers(0, classes, size=n)
    return x, y


def test_one_bop_step_follows_the_flip_rule():
    """From m = 0, one step gives m = gamma * g; w flips iff w * m > threshold."""
    x, y = _tiny_problem()
    model = zoo.load("binarynet", input_shape=(10, 10, 3), num_classes=10, binary_weights="latent_free",
                     filters=16, dense_units=32)
    gamma, threshold = 1e-2, 1e-7
    opt = get_optimizer("bop", 1e-3, total_steps=10, steps_per_epoch=10, gamma=gamma, threshold=threshold)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    before = [v.numpy().copy() for v in model.trainable_variables]
    opt.apply_gradients(zip(grads, model.trainable_variables))
    flips = 0
    for var, grad, old in zip(model.trainable_variables, grads, before):
        if lq.optimizers.Bop.is_binary_variable(var):
            m = gamma * grad.numpy()
            expected = np.where(old * m > threshold, -old, old)
            np.testing.assert_array_equal(var.numpy(), expected)
            flips += int((expected != old).sum())
    assert flips > 0


def test_bop_training_flips_binary_weights_and_adam_trains_the_rest():
    x, y = _tiny_problem(size=16, n=64)
    model = zoo.load("binarynet", input_shape=(16, 16, 3), num_classes=10, binary_weights="latent_free",
                     filters=16, dense_units=64)
    # high gamma, zero threshold: flips happen within a few steps
    opt = get_optimizer("bop", 1e-2, total_steps=8, steps_per_epoch=4, gamma=1e-2, threshold=0.0)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    binary = _binary_variables(model)
    real = [v for v in model.trainable_variables if not lq.optimizers.Bop.is_binary_variable(v)]
    assert binary and real
    binary_before = [v.numpy().copy() for v in binary]
    real_before = [v.numpy().copy() for v in real]
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    assert all(np.isfinite(history.history["loss"]))

    flipped = 0
    for var, old in zip(binary, binary_before):
        values = var.numpy()
        assert set(np.unique(values)) <= {-1.0, 1.0}, var.name  # still exactly +-1
        flipped += int((values != old).sum())
    assert flipped > 0
    # Adam moved the real-valued parameters (BN betas), and they are not binary
    assert all(not np.array_equal(v.numpy(), old) for v, old in zip(real, real_before))
    assert any(len(np.unique(v.numpy())) > 2 for v in real)
    # every variable went to exactly one optimizer: Bop got the binary ones
    assert len(bop_of(opt).weights) == 1 + len(binary)  # iterations + one `m` slot per binary kernel
    assert len(opt.default.weights) == 1 + 2 * len(real)  # iterations + Adam's m and v
    assert int(bop_of(opt).iterations.numpy()) == int(opt.default.iterations.numpy()) == 8


def test_train_binarynet_bop_end_to_end_and_reload(tmp_path):
    from zoo.runs import load_for_evaluation
    from zoo.training import evaluate_model, train

    run = tmp_path / "run"
    results = train("binarynet", "fashion_mnist", recipe="binarynet_bop", epochs=1, batch_size=50,
                    limit=200, eval_limit=100, output=run, verbose=0)
    assert results["examples"] == 100 and 0.0 <= results["top1"] <= 100.0
    assert math.isfinite(results["loss"])
    config = json.loads((run / "config.json").read_text())
    (stage,) = config["recipe"]["stages"]
    assert stage["optimizer"] == "bop" and stage["model_overrides"] == {"binary_weights": "latent_free"}
    rows = list(csv.DictReader((run / "summary.csv").open()))
    assert len(rows) == 1 and float(rows[0]["lr"]) == pytest.approx(0.01)  # Adam's LR is logged
    assert json.loads((run / "results.json").read_text())["top1"] == pytest.approx(results["top1"])

    # the saved h5 reloads (latent-free, as trained) with +-1 kernels and the same accuracy
    net, spec, input_shape = load_for_evaluation("binarynet", run, "fashion_mnist")
    assert tuple(input_shape) == (28, 28, 3)
    binary = _binary_variables(net)
    assert len(binary) == 9
    for var in binary:
        assert set(np.unique(var.numpy())) <= {-1.0, 1.0}
    again = evaluate_model(net, spec, input_shape, limit=100)
    assert again["top1"] == pytest.approx(results["top1"], abs=1e-6)
    assert again["loss"] == pytest.approx(results["loss"], rel=1e-5)
    # the same file in the latent-weight model gives the same predictions (+-1 kernels)
    x = np.random.default_rng(0).normal(size=(8,) + tuple(input_shape)).astype(np.float32)
    latent = zoo.load("binarynet", weights=run, input_shape=input_shape, num_classes=10)
    np.testing.assert_allclose(latent(x, training=False).numpy(), net(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)
