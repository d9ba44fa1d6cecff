"""Reliability: a NaN/inf loss stops the run with one clear line and keeps the last good
checkpoint, and the user-facing error paths print one `Error:` line, exit 2 and leave
no files behind. (Resuming a killed run: test_resume.py.)"""
import json

import numpy as np
import pytest
from conftest import TINY_BINARYNET, assert_one_error_line, invoke, needs_fmnist, summary_rows

import zoo  # noqa: F401  (before TensorFlow: Keras 2)
from zoo.cli import cli  # noqa: E402




def _one_error_line(result, *needles):
    """Training prints its progress on stderr before the error line."""
    return assert_one_error_line(result, *needles, alone=False)


@needs_fmnist
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    import h5py

    run = tmp_path / "nan"
    # the LR overflows to inf at half of the run (a step schedule with gamma = 1e38 at two
    # milestones there; inf itself is refused up front): epoch 1 trains normally, epoch 2's
    # first update makes the weights NaN
    result = invoke(
        cli, "train", "binarynet", "--recipe", "birealnet_adam", "--epochs", "2", "--batch-size", "32",
        "--limit", "96", "--eval-limit", "50", "--set", f"model_overrides={TINY_BINARYNET}",
        "--set", "schedule=step", "--set", "milestones=[0.5,0.5]", "--set", "gamma=1e38",
        "--output", run)
    line = _one_error_line(result, "Training diverged", "NaN/inf", "stage 'binary' at epoch 2",
                           str(run / "checkpoints" / "epoch001.h5"), "Lower --lr")
    assert line.count("\n") == 0
    assert (run / "checkpoints/epoch001.h5").is_file()
    assert not (run / "checkpoints/epoch002.h5").exists()
    assert not (run / "weights.h5").exists() and not (run / "results.json").exists()
    assert [r["epoch"] for r in summary_rows(run)] == ["1"]
    with h5py.File(run / "checkpoints/epoch001.h5", "r") as handle:
        arrays = [handle[layer][w][()] for layer in handle.attrs["layer_names"]
                  for w in handle[layer].attrs["weight_names"]]
    assert len(arrays) > 30 and all(np.isfinite(a).all() for a in arrays)
    assert sorted(p.name for p in (run / "checkpoints/state/binary").glob("ckpt-*.index")) == ["ckpt-1.index"]


@needs_fmnist
def test_nan_in_the_first_epoch_leaves_nothing(tmp_path):
    run = tmp_path / "nan1"
    result = invoke(
        cli, "train", "binarynet", "--recipe", "birealnet_adam", "--epochs", "1", "--batch-size", "32",
        "--limit", "64", "--eval-limit", "50", "--set", f"model_overrides={TINY_BINARYNET}",
        "--lr", "1e38", "--output", run)  # inf itself is refused before the run starts
    _one_error_line(result, "at epoch 1", "no epoch finished")
    assert not run.exists()


# ----------------------------------------------------------------------------- error paths
# Already covered elsewhere, one line each: unknown model (test_cli), unknown recipe and bad
# --set (test_cli), missing dataset files (test_cli), existing run directory (test_cli),
# missing weights file (test_cli), bad checksum / truncated download (test_hub).


def test_unknown_dataset(tmp_path):
    _one_error_line(invoke(cli, "train", "binarynet", "--dataset", "fashion_mnistt", "--output",
                            str(tmp_path / "run")), "fashion_mnistt", "fashion_mnist")
    assert not any(tmp_path.iterdir())


@needs_fmnist
def test_input_too_small(tmp_path):
    _one_error_line(invoke(cli, "train", "birealnet18", "--image-size", "8", "--output", str(tmp_path / "r")),
                    "--image-size 8 is too small", "16x16")
    assert not any(tmp_path.iterdir())


@needs_fmnist
def test_bad_model_setting_leaves_no_run(tmp_path):
    _one_error_line(invoke(cli, "train", "binarynet", "--set", 'model_overrides={"filters": 0}',
                            "--output", str(tmp_path / "a" / "run")), "filters")
    assert not any(tmp_path.iterdir())  # not even the parent folder it created


def test_wrong_input_shape_or_channels_for_weights():
    # published weights fix the input: another size or channel count is refused up front
    for shape in ((28, 28, 1), (32, 32, 3)):
        with pytest.raises(zoo.InvalidInputError, match=r"trained at input \(28, 28, 3\)"):
            zoo.load("birealnet18", weights="fashion_mnist", input_shape=shape)


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    _one_error_line(invoke(cli, "train", "binarynet", "--output", str(blocker / "run")),
                    "Cannot write to output directory", "Not a directory")
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]


@pytest.mark.parametrize("content, needle", [
    (b"\x00garbage" * 100, "not an HDF5"),
    (None, "truncated file"),  # a real h5 file cut in half: HDF5's own diagnosis
])
def test_corrupt_weights_file(tmp_path, content, needle):
    path = tmp_path / "w.h5"
    if content is None:
        model = zoo.load("binarynet", input_shape=(16, 16, 3), num_classes=10, **json.loads(TINY_BINARYNET))
        model.save_weights(str(path))
        data = path.read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    _one_error_line(invoke(cli, "evaluate", "binarynet", "--weights", str(path)),
                    "Cannot load weights", str(path), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.h5"]


def test_weights_of_another_shape(tmp_path):
    path = tmp_path / "small.h5"
    zoo.load("binarynet", input_shape=(16, 16, 3), num_classes=10, **json.loads(TINY_BINARYNET)).save_weights(str(path))
    _one_error_line(invoke(cli, "evaluate", "binarynet", "--weights", str(path)), "Cannot load weights")


