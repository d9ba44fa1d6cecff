import math

import numpy as np
import pytest

import zoo  # noqa: F401  (sets up Keras 2 before TensorFlow)
import tensorflow as tf

from zoo.errors import InvalidInputError
from zoo.training.distill import Distiller, distributional_loss, load_teacher, logits_model


def test_distributional_loss_matches_hand_computation():
    # logits = log-probabilities (plus any per-row constant)
    teacher = tf.math.log(tf.constant([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])) + 3.0
    student = tf.math.log(tf.constant([[0.5, 0.3, 0.2], [0.25, 0.25, 0.5]]))
    kl_first = 0.7 * math.log(0.7 / 0.5) + 0.2 * math.log(0.2 / 0.3) + 0.1 * math.log(0.1 / 0.2)
    # second row: identical distributions -> 0; batch mean
    assert float(distributional_loss(teacher, student)) == pytest.approx(kl_first / 2, rel=1e-5)
    assert float(distributional_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)


def test_distributional_loss_is_exact_for_extreme_logits():
    # teacher certain of class 0; the student gives class 0 a log-probability of -1000:
    # KL = 0 - (-1000) = 1000 exactly (log of a clipped softmax would give -log(eps) ~ 16)
    teacher = tf.constant([[1000.0, 0.0, -1000.0]])
    student = tf.constant([[0.0, 1000.0, 0.0]])
    assert float(distributional_loss(teacher, student)) == pytest.approx(1000.0, rel=1e-6)
    assert float(distributional_loss(student, student)) == pytest.approx(0.0, abs=1e-6)


def _tiny(seed, name):
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((4,))
    logits = tf.keras.layers.Dense(3)(inputs)
    outputs = tf.keras.layers.Activation("softmax", name="softmax")(logits)
    return tf.keras.Model(inputs, outputs, name=name)


def test_logits_model_reads_the_input_of_the_softmax():
    model = _tiny(0, "m")
    x = np.random.RandomState(0).randn(2, 4).astype("float32")
    logits = logits_model(model)(x)
    np.testing.assert_allclose(tf.nn.softmax(logits), model(x), atol=1e-6)
    np.testing.assert_allclose(logits, model.layers[-2](x), atol=1e-6)


def test_distiller_trains_student_only_on_the_teacher_distribution():
    student, teacher = _tiny(0, "student"), _tiny(1, "teacher")
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    x = np.random.RandomState(0).randn(8, 4).astype("float32")
    y = np.zeros(8, dtype="int64")
    expected = float(distributional_loss(logits_model(teacher)(x), logits_model(student)(x)))
    distiller = Distiller(student, teacher)
    distiller.compile(optimizer=tf.keras.optimizers.legacy.SGD(0.5),
                      loss=tf.keras.losses.SparseCategoricalCrossentropy())
    logs = distiller.train_on_batch(x, y, return_dict=True)
    # the loss of the first step is the KL before the update; labels play no part
    assert logs["distill_loss"] == pytest.approx(expected, rel=1e-5)
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert any(not np.allclose(b, a) for b, a in zip(student_before, student.get_weights()))
    # and the student moved towards the teacher
    assert float(distributional_loss(logits_model(teacher)(x), logits_model(student)(x))) < expected


def test_load_teacher_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="needs trained weights"):
        load_teacher("resnet18", (28, 28, 3), 10)
    with pytest.raises(zoo.UnknownNameError):
        load_teacher("resnet81", (28, 28, 3), 10)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="config.json"):
        load_teacher(str(tmp_path / "empty"), (28, 28, 3), 10)


def test_load_teacher_from_name_and_weights(tmp_path):
    model = zoo.load("resnet18", input_shape=(28, 28, 3), num_classes=10)
    model.save_weights(str(tmp_path / "t.h5"))
    teacher = load_teacher(f"resnet18:{tmp_path / 't.h5'}", (28, 28, 3), 10)
    assert not teacher.trainable
    x = np.random.RandomState(1).rand(2, 28, 28, 3).astype("float32")
    np.testing.assert_allclose(teacher(x, training=False), model(x, training=False), atol=1e-6)
    with pytest.raises(zoo.WeightsError):  # weights of a 10-class head into a 5-class one
        load_teacher(f"resnet18:{tmp_path / 't.h5'}", (28, 28, 3), 5)
