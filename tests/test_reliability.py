"""Reliability: a run killed with SIGKILL resumes with `zoo train --resume DIR` from its
last checkpoint (one-stage and two-stage recipes, the LR schedule continuing at the
right step), a NaN/inf loss stops the run with one clear line and keeps the last good
checkpoint, and the user-facing error paths print one `Error:` line, exit 2 and leave
no files behind."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import zoo  # noqa: F401  (before TensorFlow: Keras 2)
from zoo.cli import cli  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ZOO = str(Path(sys.executable).parent / "zoo")
TINY = '{"filters": 8, "dense_units": 32}'  # a BinaryNet small enough for seconds per epoch

needs_fmnist = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").is_file()
    and not (Path.home() / "tensorflow_datasets" / "fashion_mnist").is_dir(),
    reason="Fashion-MNIST not available")


def _env():
    return {**os.environ, "ZOO_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _rows(run):
    with open(run / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _kill_when(proc, ready, delay=0.0, timeout=300):
    """SIGKILLs ``proc`` ``delay`` s after ``ready()``; fails if the run ended first."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before the kill:\n{proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    time.sleep(delay)
    assert proc.poll() is None, "the run ended before the kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _resume(run, *extra):
    done = subprocess.run([ZOO, "train", "binarynet", "--resume", str(run), "--format", "json", *extra],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), done.stderr


def _lr_after(epoch, lr, epochs):
    """birealnet_adam's linear schedule, as logged after ``epoch`` (steps/epoch cancel)."""
    return lr * (1 - epoch / epochs)


@needs_fmnist
def test_sigkill_mid_epoch_then_resume(tmp_path):
    run = tmp_path / "run"
    command = [ZOO, "train", "binarynet", "--recipe", "birealnet_adam", "--epochs", "3",
               "--batch-size", "32", "--lr", "3e-3", "--limit", "1200", "--eval-limit", "200",
               "--set", f"model_overrides={TINY}", "--output", str(run)]
    proc = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # kill during epoch 2 (38 steps of ~20-60 ms): epoch 1's checkpoint exists, epoch 2's not yet
    _kill_when(proc, lambda: (run / "checkpoints/state/binary/checkpoint").is_file(), delay=0.4)
    assert not (run / "results.json").exists() and not (run / "weights.h5").exists()
    assert not (run / "checkpoints/state/binary/ckpt-3.index").exists()

    results, stderr = _resume(run)
    assert "resuming" in stderr and "continuing stage 1 'binary' at epoch" in stderr
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]  # every epoch once
    assert results["epochs"] == 3 and json.loads((run / "results.json").read_text()) == results
    # the resumed epochs continue the LR schedule at the restored optimizer step
    assert [float(r["lr"]) for r in rows] == pytest.approx(
        [_lr_after(e, 3e-3, 3) for e in (1, 2, 3)], abs=1e-9)
    for epoch in (1, 2, 3):
        assert (run / f"checkpoints/epoch{epoch:03d}.h5").is_file()
    assert not list(run.rglob("*.partial"))
    # comparable: it learned (10 classes, chance is 10%); the training loss kept falling
    assert results["top1"] > 25, results  # 2.5x chance; 35% measured
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    config = json.loads((run / "config.json").read_text())
    assert len(config["resumed"]) == 1 and config["resumed"][0]["epochs_done"] in (1, 2)


@needs_fmnist
def test_two_stage_run_resumes_in_its_second_stage(tmp_path):
    run = tmp_path / "two"
    command = [ZOO, "train", "binarynet", "--recipe", "birealnet_two_step", "--epochs", "2",
               "--batch-size", "32", "--limit", "640", "--eval-limit", "100",
               "--set", f"model_overrides={TINY}", "--output", str(run)]
    proc = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: (run / "checkpoints/state/binary/checkpoint").is_file())
    stage_one = (run / "real_clip_weights.h5").read_bytes()

    results, stderr = _resume(run)
    assert "continuing stage 2 'binary'" in stderr
    assert "stage 1/2" not in stderr  # the finished first stage is not trained again
    assert (run / "real_clip_weights.h5").read_bytes() == stage_one
    assert [(r["epoch"], r["stage"], r["stage_epoch"]) for r in _rows(run)] == [
        ("1", "real_clip", "1"), ("2", "real_clip", "2"), ("3", "binary", "1"), ("4", "binary", "2")]
    assert results["epochs"] == 4 and (run / "binary_weights.h5").is_file()


@needs_fmnist
def test_resume_between_stages_starts_the_next_from_the_previous(tmp_path):
    """Interrupted after stage 1 finished and before stage 2 saved anything: stage 2
    starts from stage 1's checkpoint, as an uninterrupted run would."""
    from zoo.training import train
    from zoo.training.loop import checkpointed_epochs

    run = tmp_path / "run"
    settings = dict(recipe="birealnet_two_step", epochs=1, batch_size=32, limit=64, eval_limit=50,
                    stage_overrides={"model_overrides": json.loads(TINY)}, verbose=0)
    train("binarynet", output=run, **settings)
    # what a kill right after stage 1 leaves: no stage-2 state, no final files
    for name in ("results.json", "weights.h5", "binary_weights.h5", "checkpoints/binary_epoch001.h5"):
        (run / name).unlink()
    import shutil

    shutil.rmtree(run / "checkpoints/state/binary")
    rows = _rows(run)
    with open(run / "summary.csv", "w", newline="") as handle:  # and a torn last line
        handle.write(",".join(rows[0].keys()) + "\n" + ",".join(rows[0].values()) + "\n2,binary,1,0.00")
    results = train("binarynet", resume=run, verbose=0)
    assert [(r["epoch"], r["stage"]) for r in _rows(run)] == [("1", "real_clip"), ("2", "binary")]
    assert results["epochs"] == 2 and checkpointed_epochs(run, zoo.training.get_recipe(
        "birealnet_two_step").stages[1])[0] == 1
    with pytest.raises(zoo.InvalidInputError, match="has finished"):
        train("binarynet", resume=run, verbose=0)


def test_resume_restores_optimizer_slots(tmp_path, fresh_session):
    """The optimizer's moments come back with the model: created after the restore,
    they load the saved values (what keeps Adam's next step the same)."""
    import tensorflow as tf

    from zoo.training.loop import TrainingState

    def build():
        model = zoo.load("binarynet", input_shape=(16, 16, 3), num_classes=10, **json.loads(TINY))
        return model, tf.keras.optimizers.legacy.Adam(1e-2)

    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    y = np.arange(8) % 10
    model, optimizer = build()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    state = TrainingState(model, optimizer, tmp_path / "state")
    state.on_epoch_end(1)
    saved_m = [optimizer.get_slot(v, "m").numpy() for v in model.trainable_variables]
    assert int(optimizer.iterations.numpy()) == 2 and any(np.abs(m).max() > 0 for m in saved_m)

    model2, optimizer2 = build()
    restored = TrainingState(model2, optimizer2, tmp_path / "other")
    assert restored.restore(str(tmp_path / "state" / "ckpt-2")) == 2
    optimizer2._create_all_weights(model2.trainable_variables)  # the first step does this
    assert int(optimizer2.iterations.numpy()) == 2
    for variable, m in zip(model2.trainable_variables, saved_m):
        np.testing.assert_array_equal(optimizer2.get_slot(variable, "m").numpy(), m)
    for a, b in zip(model.weights, model2.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ----------------------------------------------------------------------------- NaN / inf


def _one_error_line(result, *needles):
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@needs_fmnist
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    import h5py

    run = tmp_path / "nan"
    # the LR turns to inf at half of the run (a step schedule with gamma = inf): epoch 1
    # trains normally, epoch 2's first update makes the weights NaN
    result = CliRunner().invoke(cli, [
        "train", "binarynet", "--recipe", "birealnet_adam", "--epochs", "2", "--batch-size", "32",
        "--limit", "96", "--eval-limit", "50", "--set", f"model_overrides={TINY}",
        "--set", "schedule=step", "--set", "milestones=[0.5]", "--set", "gamma=Infinity",
        "--output", str(run)])
    line = _one_error_line(result, "Training diverged", "NaN/inf", "stage 'binary' at epoch 2",
                           str(run / "checkpoints" / "epoch001.h5"), "Lower --lr")
    assert line.count("\n") == 0
    assert (run / "checkpoints/epoch001.h5").is_file()
    assert not (run / "checkpoints/epoch002.h5").exists()
    assert not (run / "weights.h5").exists() and not (run / "results.json").exists()
    assert [r["epoch"] for r in _rows(run)] == ["1"]
    with h5py.File(run / "checkpoints/epoch001.h5", "r") as handle:
        arrays = [handle[layer][w][()] for layer in handle.attrs["layer_names"]
                  for w in handle[layer].attrs["weight_names"]]
    assert len(arrays) > 30 and all(np.isfinite(a).all() for a in arrays)
    assert sorted(p.name for p in (run / "checkpoints/state/binary").glob("ckpt-*.index")) == ["ckpt-1.index"]


@needs_fmnist
def test_nan_in_the_first_epoch_leaves_nothing(tmp_path):
    run = tmp_path / "nan1"
    result = CliRunner().invoke(cli, [
        "train", "binarynet", "--recipe", "birealnet_adam", "--epochs", "1", "--batch-size", "32",
        "--limit", "64", "--eval-limit", "50", "--set", f"model_overrides={TINY}",
        "--lr", "Infinity", "--output", str(run)])
    _one_error_line(result, "at epoch 1", "no epoch finished")
    assert not run.exists()


# ----------------------------------------------------------------------------- error paths
# Already covered elsewhere, one line each: unknown model (test_cli), unknown recipe and bad
# --set (test_cli), missing dataset files (test_cli), existing run directory (test_cli),
# missing weights file (test_cli), bad checksum / truncated download (test_weights).


def _invoke(*args):
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_unknown_dataset(tmp_path):
    _one_error_line(_invoke("train", "binarynet", "--dataset", "fashion_mnistt", "--output",
                            str(tmp_path / "run")), "fashion_mnistt", "fashion_mnist")
    assert not any(tmp_path.iterdir())


@needs_fmnist
def test_input_too_small(tmp_path):
    _one_error_line(_invoke("train", "birealnet18", "--image-size", "8", "--output", str(tmp_path / "r")),
                    "--image-size 8 is too small", "16x16")
    assert not any(tmp_path.iterdir())


@needs_fmnist
def test_bad_model_setting_leaves_no_run(tmp_path):
    _one_error_line(_invoke("train", "binarynet", "--set", 'model_overrides={"filters": 0}',
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
    _one_error_line(_invoke("train", "binarynet", "--output", str(blocker / "run")),
                    "Cannot write to output directory", "Not a directory")
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]


@pytest.mark.parametrize("content, needle", [
    (b"\x00garbage" * 100, "not an HDF5"),
    (None, "not an HDF5"),  # a real h5 file cut in half
])
def test_corrupt_weights_file(tmp_path, content, needle):
    path = tmp_path / "w.h5"
    if content is None:
        model = zoo.load("binarynet", input_shape=(16, 16, 3), num_classes=10, **json.loads(TINY))
        model.save_weights(str(path))
        data = path.read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    line = _one_error_line(_invoke("evaluate", "binarynet", "--weights", str(path)), str(path))
    assert "Cannot load weights" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.h5"]


def test_weights_of_another_shape(tmp_path):
    path = tmp_path / "small.h5"
    zoo.load("binarynet", input_shape=(16, 16, 3), num_classes=10, **json.loads(TINY)).save_weights(str(path))
    _one_error_line(_invoke("evaluate", "binarynet", "--weights", str(path)), "Cannot load weights")


def test_resume_errors(tmp_path):
    _one_error_line(_invoke("train", "binarynet", "--resume", str(tmp_path / "none")), "no config.json")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({
        "model": "binarynet", "dataset": "fashion_mnist", "input_shape": [28, 28, 3], "seed": 0,
        "limit": 64, "eval_limit": None, "model_overrides": {}, "teacher": None,
        "recipe": {"name": "birealnet_adam", "stages": [
            {"name": "binary", "epochs": 3, "learning_rate": 1e-3, "batch_size": 32}]}}))
    line = _one_error_line(_invoke("train", "binarynet", "--resume", str(run), "--epochs", "5"),
                           "epochs=5 in stage 'binary' (the run has 3)", "Drop those options")
    _one_error_line(_invoke("train", "binarynet", "--resume", str(run), "--dataset", "cifar10"),
                    "--dataset cifar10 (the run has fashion_mnist)")
    _one_error_line(_invoke("train", "birealnet18", "--resume", str(run)), "holds a run of binarynet")
    _one_error_line(_invoke("train", "binarynet", "--resume", str(run), "--output", str(tmp_path / "x")),
                    "drop --output")
    (run / "config.json").write_text("{not json")
    _one_error_line(_invoke("train", "binarynet", "--resume", str(run)), "cannot read")
    assert sorted(p.name for p in run.iterdir()) == ["config.json"] and "epochs=5" in line
