"""zoo train --resume: a run killed with SIGKILL resumes from its last checkpoint
(one-stage and two-stage recipes, between stages, the optimizer's slots and the LR
schedule continuing at the right step); a resumed run keeps its own settings."""
import json
import os
import signal
import time

import numpy as np
import pytest
from conftest import (
    TINY_BINARYNET, assert_one_error_line, invoke, needs_fmnist, run_zoo, start_zoo, summary_rows, zoo_env,
)

import zoo  # noqa: F401  (before TensorFlow: Keras 2)
from zoo.cli import cli  # noqa: E402
import zoo.runs  # noqa: E402  (hardware, training_time)


def _error_line(result, *needles):
    """Training prints its progress on stderr before the error line."""
    return assert_one_error_line(result, *needles, alone=False)


def _env():
    return zoo_env(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


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
    done = run_zoo("train", "binarynet", "--resume", run, "--format", "json", *extra, env=_env())
    return json.loads(done.stdout), done.stderr


def _lr_after(epoch, lr, epochs):
    """birealnet_adam's linear schedule, as logged after ``epoch`` (steps/epoch cancel)."""
    return lr * (1 - epoch / epochs)



@needs_fmnist
def test_sigkill_mid_epoch_then_resume(tmp_path):
    run = tmp_path / "run"
    proc = start_zoo("train", "binarynet", "--recipe", "birealnet_adam", "--epochs", "3",
                     "--batch-size", "32", "--lr", "3e-3", "--limit", "1200", "--eval-limit", "200",
                     "--set", f"model_overrides={TINY_BINARYNET}", "--output", run, env=_env())
    # kill during epoch 2 (38 steps of ~20-60 ms): epoch 1's checkpoint exists, epoch 2's not yet
    _kill_when(proc, lambda: (run / "checkpoints/state/binary/checkpoint").is_file(), delay=0.4)
    assert not (run / "results.json").exists() and not (run / "weights.h5").exists()
    assert not (run / "checkpoints/state/binary/ckpt-3.index").exists()

    results, stderr = _resume(run)
    assert "resuming" in stderr and "continuing stage 1 'binary' at epoch" in stderr
    rows = summary_rows(run)
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
    # each sitting records its machine; the training time counts every epoch once
    assert config["resumed"][0]["hardware"] == config["hardware"] == zoo.runs.hardware()
    cost = zoo.runs.training_time(run)
    assert cost["epochs"] == 3 and cost["hardware"] == config["hardware"]
    assert cost["seconds"] == round(sum(float(r["seconds"]) for r in rows), 1)


@needs_fmnist
def test_two_stage_run_resumes_in_its_second_stage(tmp_path):
    run = tmp_path / "two"
    proc = start_zoo("train", "binarynet", "--recipe", "bmes_two_step", "--epochs", "2",
                     "--batch-size", "32", "--limit", "640", "--eval-limit", "100",
                     "--set", f"model_overrides={TINY_BINARYNET}", "--output", run, env=_env())
    _kill_when(proc, lambda: (run / "checkpoints/state/step2/checkpoint").is_file())
    stage_one = (run / "step1_weights.h5").read_bytes()

    results, stderr = _resume(run)
    assert "continuing stage 2 'step2'" in stderr
    assert "stage 1/2" not in stderr  # the finished first stage is not trained again
    assert (run / "step1_weights.h5").read_bytes() == stage_one
    assert [(r["epoch"], r["stage"], r["stage_epoch"]) for r in summary_rows(run)] == [
        ("1", "step1", "1"), ("2", "step1", "2"), ("3", "step2", "1"), ("4", "step2", "2")]
    assert results["epochs"] == 4 and (run / "step2_weights.h5").is_file()


@needs_fmnist
def test_resume_between_stages_starts_the_next_from_the_previous(tmp_path):
    """Interrupted after stage 1 finished and before stage 2 saved anything: stage 2
    starts from stage 1's checkpoint, as an uninterrupted run would."""
    from zoo.training import train
    from zoo.training.resume import checkpointed_epochs

    run = tmp_path / "run"
    settings = dict(recipe="bmes_two_step", epochs=1, batch_size=32, limit=64, eval_limit=50,
                    stage_overrides={"model_overrides": json.loads(TINY_BINARYNET)}, verbose=0)
    train("binarynet", output=run, **settings)
    # what a kill right after stage 1 leaves: no stage-2 state, no final files
    for name in ("results.json", "weights.h5", "step2_weights.h5", "checkpoints/step2_epoch001.h5"):
        (run / name).unlink()
    import shutil

    shutil.rmtree(run / "checkpoints/state/step2")
    rows = summary_rows(run)
    with open(run / "summary.csv", "w", newline="") as handle:  # and a torn last line
        handle.write(",".join(rows[0].keys()) + "\n" + ",".join(rows[0].values()) + "\n2,step2,1,0.00")
    results = train("binarynet", resume=run, verbose=0)
    assert [(r["epoch"], r["stage"]) for r in summary_rows(run)] == [("1", "step1"), ("2", "step2")]
    assert results["epochs"] == 2 and checkpointed_epochs(run, zoo.training.get_recipe(
        "bmes_two_step").stages[1])[0] == 1
    with pytest.raises(zoo.InvalidInputError, match="has finished"):
        train("binarynet", resume=run, verbose=0)


def test_resume_restores_optimizer_slots(tmp_path, fresh_session):
    """The optimizer's moments come back with the model: created after the restore,
    they load the saved values (what keeps Adam's next step the same)."""
    import tensorflow as tf

    from zoo.training.callbacks import TrainingState

    def build():
        model = zoo.load("binarynet", input_shape=(16, 16, 3), num_classes=10, **json.loads(TINY_BINARYNET))
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



def test_resume_errors(tmp_path):
    _error_line(invoke(cli, "train", "binarynet", "--resume", str(tmp_path / "none")), "no config.json")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({
        "model": "binarynet", "dataset": "fashion_mnist", "input_shape": [28, 28, 3], "seed": 0,
        "limit": 64, "eval_limit": None, "model_overrides": {}, "teacher": None,
        "recipe": {"name": "birealnet_adam", "stages": [
            {"name": "binary", "epochs": 3, "learning_rate": 1e-3, "batch_size": 32}]}}))
    line = _error_line(invoke(cli, "train", "binarynet", "--resume", str(run), "--epochs", "5"),
                           "epochs=5 in stage 'binary' (the run has 3)", "Drop those options")
    _error_line(invoke(cli, "train", "binarynet", "--resume", str(run), "--dataset", "cifar10"),
                    "--dataset cifar10 (the run has fashion_mnist)")
    _error_line(invoke(cli, "train", "birealnet18", "--resume", str(run)), "holds a run of binarynet")
    _error_line(invoke(cli, "train", "binarynet", "--resume", str(run), "--output", str(tmp_path / "x")),
                    "drop --output")
    (run / "config.json").write_text("{not json")
    _error_line(invoke(cli, "train", "binarynet", "--resume", str(run)), "cannot read")
    assert sorted(p.name for p in run.iterdir()) == ["config.json"] and "epochs=5" in line



def test_training_time_reads_summary_rows(tmp_path):
    """A run's training cost: summary.csv's epochs and seconds (None without rows), and
    the machine only where its config recorded one (runs older than that field: None)."""
    run = tmp_path / "run"
    run.mkdir()
    assert zoo.runs.training_time(run) is None
    (run / "summary.csv").write_text("epoch,stage,seconds\n")
    assert zoo.runs.training_time(run) is None
    (run / "summary.csv").write_text("epoch,stage,seconds\n1,binary,100.25\n2,binary,99.5\n3,step2,130\n")
    (run / "config.json").write_text(json.dumps({"model": "birealnet18"}))
    assert zoo.runs.training_time(run) == {"epochs": 3, "seconds": 329.8, "seconds_per_epoch": 109.9,
                                           "hardware": None}
    machine = {"cpus": 2, "gpus": 0}
    config = {"hardware": machine, "resumed": [{"epochs_done": 1, "hardware": machine}]}
    (run / "config.json").write_text(json.dumps(config))
    assert zoo.runs.training_time(run)["hardware"] == machine
    config["resumed"].append({"epochs_done": 2, "hardware": {"cpus": 8, "gpus": 1}})
    (run / "config.json").write_text(json.dumps(config))
    assert zoo.runs.training_time(run)["hardware"] is None  # the epochs ran on two machines


def test_atomic_csv_and_json_writes_replace_whole_files(tmp_path):
    """The run directory's CSV and JSON files are written whole or not at all: a write that
    fails midway (a row with a field the header lacks) keeps the old file, and no partial
    file stays behind."""
    path = tmp_path / "summary.csv"
    zoo.runs.write_csv_atomically(path, ("epoch", "seconds"), [{"epoch": 1, "seconds": 2.5}])
    assert path.read_text().splitlines() == ["epoch,seconds", "1,2.5"]
    with pytest.raises(ValueError):
        zoo.runs.write_csv_atomically(path, ("epoch",), [{"epoch": 2, "loss": 0.1}])
    assert path.read_text().splitlines() == ["epoch,seconds", "1,2.5"]
    target = tmp_path / "sub" / "config.json"
    zoo.runs.write_json_atomically(target, {"model": "birealnet18", "when": tmp_path})
    assert json.loads(target.read_text()) == {"model": "birealnet18", "when": str(tmp_path)}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.json", "sub", "summary.csv"]
