"""zoo.preprocessing and zoo.predict: images fed as evaluation feeds the test split, labels."""
import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import TRAINED_MODEL as MODEL, TRAINED_SHAPE as SHAPE, invoke

import zoo
from zoo import data as zdata
from zoo import predict as zpredict
from zoo.cli import cli

pytestmark = pytest.mark.usefixtures("isolated_weights")


def _fashion_test_image():
    spec = zdata.get_dataset("fashion_mnist")
    image, label = next(iter(zdata.load_split(spec, "test").take(1)))
    return image.numpy(), int(label)


def test_preprocess_input_matches_evaluation(published):
    spec = published[0]
    image, _ = _fashion_test_image()
    expected = zdata.preprocess(tf.constant(image), zdata.get_dataset("fashion_mnist"), SHAPE).numpy()
    np.testing.assert_allclose(zoo.preprocess_input(image, spec.key), expected, rtol=1e-6)
    batch = zoo.preprocess_input(np.stack([image, image]), spec)
    assert batch.shape == (2,) + SHAPE
    rgb = np.repeat(np.kron(image, np.ones((2, 2, 1), np.uint8)), 3, axis=-1)  # 56x56 RGB
    assert zoo.preprocess_input(rgb, spec.key).shape == SHAPE


def test_predict_on_a_png(published, tmp_path):
    spec = published[0]
    image, _ = _fashion_test_image()
    png = tmp_path / "item.png"
    png.write_bytes(tf.io.encode_png(image).numpy())
    results, source = zpredict.predict(spec.key, [png])
    assert source == spec.key and len(results) == 1 and len(results[0]) == 5
    labels = zdata.get_dataset("fashion_mnist").labels
    assert all(label in labels for label, _ in results[0])
    probs = [p for _, p in results[0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6

    result = invoke(cli, "predict", MODEL, png, "--weights", "fmnist_test", "--format", "json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)[0]
    assert [p["label"] for p in record["predictions"]] == [label for label, _ in results[0]]
    assert sum(p["probability"] for p in record["predictions"]) <= 1 + 1e-6


def test_decode_predictions():
    preds = np.array([[0.1, 0.6, 0.3] + [0.0] * 7])
    decoded = zoo.decode_predictions(preds, top=2, name_or_spec="fashion_mnist")
    assert decoded == [[("Trouser", pytest.approx(0.6)), ("Pullover", pytest.approx(0.3))]]
    with pytest.raises(zoo.InvalidInputError):
        zoo.decode_predictions(np.zeros((1, 7)), name_or_spec="fashion_mnist")
