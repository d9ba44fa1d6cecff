"""Hostile input, one table: every command given bad values, paths, files, datasets and
environment variables. Each case must end with exit status 2 and one ``Error:`` line on
stderr that names the bad value (and says what to do), no traceback, and the file system
as it was: the working folder (where runs and outputs go) and the cache folder are
snapshotted before and after.

Most cases fail before any model is built, in this process (click's runner); the few that
need a real process (signals, the first preparation of a dataset) are at the end.
"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ZOO, assert_one_error_line, invoke, needs_fmnist, zoo_env

from zoo.cli import cli


# ----------------------------------------------------------------------------- fixtures of the cases


def _png(path: Path, seed: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _image_folder(root: Path, classes=("cat", "dog"), corrupt: bool = False) -> None:
    for split in ("train", "test"):
        for index, name in enumerate(classes):
            for i in range(2):
                _png(root / split / name / f"{i}.png", seed=10 * index + i)
    if corrupt:
        (root / "train" / classes[-1] / "broken.png").write_bytes(b"not an image at all")


def _run_dir(root: Path, **changes) -> None:
    """A `zoo train` run directory whose config.json is ``changes`` over a valid one."""
    stage = {"name": "binary", "epochs": 1, "learning_rate": 1e-3, "optimizer": "adam",
             "optimizer_args": {}, "schedule": "linear", "milestones": [], "gamma": 0.1,
             "warmup_epochs": 0.0, "weight_decay": 0.0, "label_smoothing": 0.0, "batch_size": 32,
             "model_overrides": {}, "init_from_previous": True, "distill": False, "label_weight": 0.0}
    stage.update(changes.pop("stage", {}))
    config = {"model": "binarynet", "dataset": "fashion_mnist", "input_shape": [28, 28, 3],
              "seed": 0, "limit": None, "eval_limit": None,
              "recipe": {"name": "birealnet_adam", "description": "", "stages": [stage]}}
    config.update(changes)
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config))


SETUPS = {
    "image": lambda d: _png(d / "cat.png"),
    "text_file": lambda d: (d / "notes.txt").write_text("not an image"),
    "folder": lambda d: _image_folder(d / "images"),
    "one_class": lambda d: _image_folder(d / "images", classes=("cat",)),
    "corrupt": lambda d: _image_folder(d / "images", corrupt=True),
    "corrupt_and_folder": lambda d: (_image_folder(d / "images", corrupt=True), (d / "mine").mkdir(),
                                     (d / "mine" / "notes.txt").write_text("the user's")),
    "no_train": lambda d: (d / "images" / "test" / "cat").mkdir(parents=True),
    "existing_file": lambda d: (d / "model.tflite").write_bytes(b"the user's own file"),
    "existing_run": lambda d: _run_dir(d / "run"),
    "finished_run": lambda d: (_run_dir(d / "run"), (d / "run" / "results.json").write_text("{}")),
    "broken_config": lambda d: ((d / "run").mkdir(), (d / "run" / "config.json").write_text("{not json")),
    "bad_saved_epochs": lambda d: _run_dir(d / "run", stage={"epochs": 0}),
    "bad_saved_schedule": lambda d: _run_dir(d / "run", stage={"schedule": "cosin"}),
    "other_model_run": lambda d: _run_dir(d / "run", model="birealnet18"),
    "empty_dir": lambda d: (d / "empty").mkdir(),
    "garbage_weights": lambda d: (d / "weights.h5").write_bytes(b"\x00" * 64),
}

# (id, arguments, setup, extra environment, needles of the Error line)
CASES = [
    # --- zoo train: values
    ("set-empty-lr", ["train", "binarynet", "--set", "learning_rate="], None, {}, ["learning_rate", "needs a value"]),
    ("set-epochs-0", ["train", "binarynet", "--set", "epochs=0"], None, {}, ["epochs=0", ">= 1"]),
    ("set-schedule-typo", ["train", "binarynet", "--set", "schedule=cosin"], None, {}, ["cosin", "cosine"]),
    ("set-smoothing-text", ["train", "binarynet", "--set", "label_smoothing=abc"], None, {}, ["abc", "label_smoothing"]),
    ("set-smoothing-1", ["train", "binarynet", "--set", "label_smoothing=1.5"], None, {}, ["label_smoothing", "<= 0.99"]),
    ("set-unknown-key", ["train", "binarynet", "--set", "foo=1"], None, {}, ["'foo'", "label_smoothing"]),
    ("set-no-equals", ["train", "binarynet", "--set", "epochs"], None, {}, ["key=value"]),
    ("set-bop-args-for-adam", ["train", "binarynet", "--recipe", "birealnet_adam", "--set",
                               'optimizer_args={"threshold": 1e-8}'], None, {}, ["threshold", "adam", "beta_1"]),
    ("set-optimizer-arg-type", ["train", "binarynet", "--set", 'optimizer_args={"gamma": "fast"}'],
     None, {}, ["gamma", "fast"]),
    ("set-optimizer-unknown", ["train", "binarynet", "--set", "optimizer=adamw"], None, {}, ["adamw", "adam"]),
    ("set-warmup-too-long", ["train", "binarynet", "--set", "warmup_epochs=1000"], None, {}, ["warmup_epochs", "at most"]),
    ("set-milestones", ["train", "binarynet", "--set", "milestones=[2]"], None, {}, ["milestones", "<= 1"]),
    ("set-batch-float", ["train", "binarynet", "--set", "batch_size=3.5"], None, {}, ["batch_size", "3.5"]),
    ("set-distill-text", ["train", "binarynet", "--set", "distill=maybe"], None, {}, ["distill", "maybe"]),
    ("lr-negative", ["train", "binarynet", "--lr", "-1"], None, {}, ["--lr"]),
    ("lr-zero", ["train", "binarynet", "--lr", "0"], None, {}, ["--lr"]),
    ("lr-text", ["train", "binarynet", "--lr", "fast"], None, {}, ["--lr", "fast"]),
    ("limit-negative", ["train", "binarynet", "--limit", "-5"], None, {}, ["--limit", "-5"]),
    ("eval-limit-0", ["train", "binarynet", "--eval-limit", "0"], None, {}, ["--eval-limit"]),
    ("epochs-0", ["train", "binarynet", "--epochs", "0"], None, {}, ["--epochs"]),
    ("batch-size-0", ["train", "binarynet", "--batch-size", "0"], None, {}, ["--batch-size"]),
    ("image-size-huge", ["train", "binarynet", "--image-size", "100000"], None, {}, ["--image-size", "100000"]),
    ("image-size-too-small", ["train", "birealnet18", "--image-size", "8"], None, {}, ["--image-size 8", "at least"]),
    ("seed-negative", ["train", "binarynet", "--seed", "-1"], None, {}, ["--seed"]),
    ("strategy-unknown", ["train", "binarynet", "--strategy", "gpu9"], None, {}, ["--strategy", "gpu9"]),
    # --- zoo train: names, paths, datasets
    ("model-unknown", ["train", "nosuchnet"], None, {}, ["nosuchnet"]),
    ("recipe-unknown", ["train", "binarynet", "--recipe", "nosuchrecipe"], None, {}, ["nosuchrecipe"]),
    ("dataset-unknown", ["train", "binarynet", "--dataset", "nosuchdata"], None, {}, ["nosuchdata"]),
    ("augment-unknown", ["train", "binarynet", "--augment", "nosuchmix"], None, {}, ["nosuchmix"]),
    ("folder-missing", ["train", "binarynet", "--dataset", "folder:missing"], None, {}, ["missing", "train/"]),
    ("folder-no-train", ["train", "binarynet", "--dataset", "folder:images"], "no_train", {}, ["train/"]),
    ("folder-one-class", ["train", "binarynet", "--dataset", "folder:images"], "one_class", {}, ["at least two"]),
    ("teacher-missing-path", ["train", "reactnet_a", "--teacher", "/nonexistent"], None, {},
     ["/nonexistent", "no such file"]),
    ("teacher-not-distilling", ["train", "binarynet", "--teacher", "/nonexistent"], None, {},
     ["--teacher", "does not distill"]),
    ("teacher-unknown-name", ["train", "reactnet_a", "--teacher", "nosuchteacher"], None, {}, ["nosuchteacher"]),
    ("output-holds-run", ["train", "binarynet", "-o", "run"], "existing_run", {}, ["already holds", "--resume"]),
    ("resume-missing", ["train", "binarynet", "--resume", "nowhere"], None, {}, ["nowhere", "config.json"]),
    ("resume-empty-dir", ["train", "binarynet", "--resume", "empty"], "empty_dir", {}, ["empty", "config.json"]),
    ("resume-broken-config", ["train", "binarynet", "--resume", "run"], "broken_config", {}, ["config.json"]),
    ("resume-finished", ["train", "binarynet", "--resume", "run"], "finished_run", {}, ["finished"]),
    ("resume-saved-epochs-0", ["train", "binarynet", "--resume", "run"], "bad_saved_epochs", {},
     ["config.json", "epochs"]),
    ("resume-saved-schedule", ["train", "binarynet", "--resume", "run"], "bad_saved_schedule", {},
     ["config.json", "cosin"]),
    ("resume-other-model", ["train", "binarynet", "--resume", "run"], "other_model_run", {}, ["birealnet18"]),
    ("resume-changes-epochs", ["train", "binarynet", "--resume", "run", "--epochs", "3"], "existing_run", {},
     ["epochs=3", "Drop those options"]),
    ("resume-bad-set", ["train", "binarynet", "--resume", "run", "--set", "epochs=-2"], "existing_run", {},
     ["epochs=-2"]),
    # --- environment
    ("offline-no-dataset", ["train", "binarynet", "--dataset", "cifar10"], None,
     {"ZOO_DATA_DIR": "{tmp}/data", "ZOO_MANUAL_DIR": "{tmp}/manual"}, ["cifar10", "ZOO_MANUAL_DIR"]),
    ("zoo-home-is-a-file", ["cache", "list"], "text_file", {"ZOO_HOME": "notes.txt"}, ["ZOO_HOME", "is a file"]),
    ("zoo-home-file-clear", ["cache", "clear", "--yes"], "text_file", {"ZOO_HOME": "notes.txt"},
     ["ZOO_HOME", "folder"]),
    ("cache-dir-is-a-file", ["cache", "list", "--cache-dir", "notes.txt"], "text_file", {}, ["notes.txt"]),
    # --- zoo evaluate
    ("evaluate-no-weights", ["evaluate", "binarynet"], None, {}, ["--weights"]),
    ("evaluate-weights-missing", ["evaluate", "binarynet", "--weights", "missing.h5"], None, {}, ["missing.h5"]),
    ("evaluate-weights-garbage", ["evaluate", "binarynet", "--weights", "weights.h5"], "garbage_weights", {},
     ["weights.h5"]),
    ("evaluate-limit-negative", ["evaluate", "binarynet", "--limit", "-5"], None, {}, ["--limit", "-5"]),
    ("evaluate-eval-limit-0", ["evaluate", "binarynet", "--eval-limit", "0"], None, {}, ["--eval-limit"]),
    ("evaluate-unknown-tag", ["evaluate", "birealnet18.nosuchtag"], None, {}, ["nosuchtag"]),
    ("evaluate-batch-0", ["evaluate", "binarynet", "--batch-size", "0"], None, {}, ["--batch-size"]),
    # --- zoo predict
    ("predict-top-0", ["predict", "binarynet", "cat.png", "--top", "0"], "image", {}, ["--top"]),
    ("predict-image-missing", ["predict", "binarynet.fashion_mnist", "nowhere.png"], None, {}, ["nowhere.png"]),
    ("predict-not-an-image", ["predict", "binarynet.fashion_mnist", "notes.txt"], "text_file", {}, ["notes.txt"]),
    # --- zoo convert / benchmark
    ("convert-existing-output", ["convert", "binarynet", "-o", "model.tflite"], "existing_file", {},
     ["model.tflite", "--force"]),
    ("convert-unwritable", ["convert", "binarynet", "-o", "/proc/model.tflite"], None, {}, ["/proc", "not writable"]),
    ("convert-no-folder", ["convert", "binarynet", "-o", "nowhere/model.tflite"], None, {}, ["nowhere", "create it"]),
    ("convert-folder-output", ["convert", "binarynet", "-o", "empty"], "empty_dir", {}, ["empty", "folder"]),
    ("convert-supernet", ["convert", "bmes_supernet", "-o", "model.tflite"], None, {}, ["bmes_supernet", "supernet"]),
    ("convert-image-size-0", ["convert", "binarynet", "--image-size", "0", "-o", "m.tflite"], None, {},
     ["--image-size"]),
    ("benchmark-runs-0", ["benchmark", "binarynet", "--runs", "0"], None, {}, ["--runs"]),
    ("benchmark-unknown", ["benchmark", "nosuchnet"], None, {}, ["nosuchnet"]),
    # --- catalog, weights, cache, publish
    ("info-unknown", ["info", "birealnet81"], None, {}, ["birealnet81", "birealnet18"]),
    ("list-kind-unknown", ["list", "--kind", "planets"], None, {}, ["planets"]),
    ("download-unknown", ["download", "nosuchnet"], None, {}, ["nosuchnet"]),
    ("download-unknown-tag", ["download", "birealnet18.nosuchtag"], None, {}, ["nosuchtag"]),
    ("cache-clear-unknown", ["cache", "clear", "nosuchnet", "--yes"], None, {}, ["nosuchnet"]),
    ("publish-missing-run", ["publish", "nowhere", "--tag", "x"], None, {}, ["nowhere"]),
    ("publish-not-a-run", ["publish", "empty", "--tag", "x"], "empty_dir", {}, ["empty"]),
    # --- zoo search / pretrain
    ("search-unknown", ["search", "nosuchsearch"], None, {}, ["nosuchsearch"]),
    ("search-population-0", ["search", "spos", "--population", "0"], None, {}, ["--population"]),
    ("search-mutation-prob", ["search", "spos", "--mutation-prob", "2"], None, {}, ["--mutation-prob"]),
    ("pretrain-unknown-ssl", ["pretrain", "binarynet", "--ssl", "nosuchssl"], None, {}, ["nosuchssl"]),
    ("pretrain-epochs-0", ["pretrain", "binarynet", "--epochs", "0"], None, {}, ["--epochs"]),
    ("pretrain-set-unknown", ["pretrain", "binarynet", "--set", "nosuch=1"], None, {}, ["nosuch", "temperature"]),
    ("pretrain-set-type", ["pretrain", "binarynet", "--set", "temperature=abc"], None, {}, ["temperature", "abc"]),
    ("train-model-setting-unknown", ["train", "binarynet", "--set", 'model_overrides={"nosuch": 1}',
                                     "--recipe", "birealnet_adam"], None, {}, ["nosuch", "binarynet"]),
    ("augment-arg-type", ["train", "binarynet", "--augment", "mixup", "--augment-arg", "alpha=lots"],
     None, {}, ["alpha", "lots"]),
    ("pretrain-lr-negative", ["pretrain", "binarynet", "--lr", "-1"], None, {}, ["--lr"]),
]

# cases that print a progress line before their error (the run starts, then fails)
PROGRESS_FIRST = {"folder-corrupt"}
PROGRESS_FIRST.add("folder-corrupt-existing-output")
CASES.append(("folder-corrupt-existing-output",
              ["train", "binarynet", "--dataset", "folder:images", "--recipe", "birealnet_adam",
               "--epochs", "1", "--batch-size", "4", "--image-size", "32", "-o", "mine"],
              "corrupt_and_folder", {}, ["broken.png"]))
CASES.append(("folder-corrupt", ["train", "binarynet", "--dataset", "folder:images", "--recipe",
                                 "birealnet_adam", "--epochs", "1", "--batch-size", "4", "--image-size", "32"],
              "corrupt", {}, ["broken.png", "remove or replace"]))


def snapshot(*roots: Path):
    """Every file and folder under ``roots``: path -> (size, mtime, mode) of a file, the mode
    of a folder (whose mtime changes when a file was written and removed again)."""
    state = {}
    for root in roots:
        for path in [root, *root.rglob("*")] if root.exists() else []:
            info = path.lstat()
            state[str(path)] = info.st_mode if path.is_dir() else (
                info.st_size, info.st_mtime_ns, info.st_mode)
    return state


@pytest.mark.parametrize("args, setup, env, needles",
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_hostile_input(tmp_path, monkeypatch, args, setup, env, needles):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    (home / "weights").mkdir(parents=True)
    (home / "weights" / "notes.txt").write_text("a user's file in the cache folder")
    for folder in ("data", "manual"):
        (tmp_path / folder).mkdir()
    if setup:
        SETUPS[setup](work)
    monkeypatch.chdir(work)
    environment = {"ZOO_HOME": str(home), "ZOO_OFFLINE": "1",
                   **{key: value.format(tmp=tmp_path) for key, value in env.items()}}
    before = snapshot(work, home)
    result = invoke(cli, *args, env=environment)
    assert_one_error_line(result, *needles, alone=args[0] != "train" or
                          not any(case[0] in PROGRESS_FIRST and case[1] == args for case in CASES))
    assert snapshot(work, home) == before


def test_at_least_fifty_cases_over_every_command():
    assert len(CASES) >= 50
    commands = {case[1][0] for case in CASES}
    assert commands >= {"train", "evaluate", "predict", "convert", "benchmark", "info", "list",
                        "download", "cache", "publish", "search", "pretrain"}


# ----------------------------------------------------------------------------- beyond errors


def test_cache_clear_keeps_foreign_files(tmp_path):
    """`zoo cache clear` deletes what the cache wrote, never a user's other files there."""
    home = tmp_path / "home"
    folder = home / "weights" / "birealnet18"
    folder.mkdir(parents=True)
    foreign = [home / "weights" / "holiday.jpg", folder / "notes.txt", home / "weights" / "mine.h5"]
    for path in foreign:
        path.write_bytes(b"not the zoo's")
    result = invoke(cli, "cache", "clear", "--yes", env={"ZOO_HOME": str(home), "ZOO_OFFLINE": "1"})
    assert result.exit_code == 0, result.stderr
    assert all(path.read_bytes() == b"not the zoo's" for path in foreign)


def test_convert_force_overwrites_with_the_umask(tmp_path, monkeypatch):
    """--force replaces the user's file; the new file's mode follows the umask (not 0600)."""
    from zoo import deploy

    target = tmp_path / "model.tflite"
    target.write_bytes(b"old")
    old_mask = os.umask(0o022)
    try:
        deploy.write_flatbuffer(b"new flatbuffer", target, force=True)
    finally:
        os.umask(old_mask)
    assert target.read_bytes() == b"new flatbuffer"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]  # no partial file left


def test_top5_does_not_count_ties():
    """A collapsed model (the same score for every class) scores 0% top-5, not 100%."""
    from zoo.metrics import PredictedClasses, StrictTopK

    labels = np.arange(10) % 10
    uniform = np.full((10, 10), 0.1, np.float32)
    metric = StrictTopK(k=5)
    metric.update_state(labels, uniform)
    assert float(metric.result()) == 0.0
    confident = np.eye(10, dtype=np.float32)[labels]
    metric = StrictTopK(k=5)
    metric.update_state(labels, confident)
    assert float(metric.result()) == 1.0
    third = np.tile(np.linspace(1, 0, 10, dtype=np.float32), (10, 1))  # class 0 best, class 9 worst
    metric = StrictTopK(k=5)
    metric.update_state(labels, third)
    assert float(metric.result()) == pytest.approx(0.5)  # labels 0-4 are in the top 5
    counted = PredictedClasses(10)
    counted.update_state(labels, third)
    assert float(counted.result()) == 1.0


def test_health_warnings_name_divergence_and_collapse():
    from zoo.metrics import health_warnings

    assert health_warnings({"loss": 0.5, "predicted_classes": 7, "examples": 100}) == []
    [nan] = health_warnings({"loss": float("nan"), "predicted_classes": 7, "examples": 100})
    assert "NaN" in nan and "--lr" in nan
    [collapsed] = health_warnings({"loss": 2.3, "predicted_classes": 1, "examples": 100})
    assert "one class" in collapsed


def test_api_and_cli_share_one_schema(tmp_path):
    """The Python API refuses what `--set` refuses, with the same message."""
    from zoo.errors import InvalidInputError
    from zoo.training import TrainConfig, train

    for overrides, needle in (({"epochs": 0}, "epochs"), ({"schedule": "cosin"}, "cosine")):
        with pytest.raises(InvalidInputError, match=needle):
            train(TrainConfig("binarynet", output=tmp_path / "run", stage_overrides=overrides))
    with pytest.raises(InvalidInputError, match="--lr -1"):
        train("binarynet", learning_rate=-1, output=tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


@needs_fmnist
def test_format_json_stays_json_when_a_dataset_is_prepared(tmp_path, monkeypatch):
    """The first preparation of a dataset prints (tensorflow-datasets writes on stdout and
    draws progress bars): with --format json stdout still holds only the JSON. The
    preparation runs through tfds' own download_and_prepare, made to print as a first-time
    one does (a real one takes a minute here)."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.utils import tqdm_utils

    from zoo import data as zdata

    real_prepare = tfds.core.DatasetBuilder.download_and_prepare
    prepared = []

    def first_time(self, *args, **kwargs):
        print(f"Downloading and preparing dataset {self.name} to {self.data_dir}...")
        for _ in tqdm_utils.tqdm(range(300), desc="Generating train examples"):
            pass
        prepared.append(self.name)
        real_prepare(self, *args, **kwargs)
        print(f"Dataset {self.name} downloaded and prepared to {self.data_dir}.")

    real_is_prepared = zdata._is_prepared
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", first_time)
    monkeypatch.setattr(zdata, "_is_prepared", lambda b: bool(prepared) and real_is_prepared(b))
    monkeypatch.chdir(tmp_path)
    result = invoke(cli, "train", "binarynet", "--recipe", "birealnet_adam", "--epochs", "1",
                    "--limit", "8", "--eval-limit", "8", "--batch-size", "4", "--format", "json",
                    "-o", "run", env={"ZOO_OFFLINE": "1"})
    assert result.exit_code == 0, result.stderr
    assert prepared == ["fashion_mnist"]
    assert json.loads(result.stdout)["examples"] == 8
    assert "Downloading and preparing" in result.stderr
    assert "Generating train examples" not in result.stderr  # no progress bars


@needs_fmnist
def test_ctrl_c_says_how_to_resume_or_that_nothing_was_kept(tmp_path):
    """Ctrl-C (SIGINT) of a run: exit 130 and a line saying what was kept. Interrupted
    before its first epoch finished, the run leaves no folder behind."""
    proc = subprocess.Popen([ZOO, "train", "binarynet", "--recipe", "birealnet_adam", "--epochs", "1",
                             "--batch-size", "8", "-o", "run"], cwd=tmp_path, env=zoo_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as from a shell: pytest-xdist's workers ignore SIGINT, and an
                            # ignored signal stays ignored in the child
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not (tmp_path / "run" / "config.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "Interrupted before the first epoch finished: nothing was kept." in stderr
    assert not (tmp_path / "run").exists()


def test_ctrl_c_after_the_first_epoch_names_the_resume_command(tmp_path):
    """Interrupted once an epoch is saved, the line gives the command that continues the run."""
    from types import SimpleNamespace

    from zoo.training.loop import _interrupted_message
    from zoo.training.recipes import get_recipe

    recipe = get_recipe("birealnet_adam")
    plan = SimpleNamespace(output=tmp_path / "run", recipe=recipe, entry=SimpleNamespace(name="binarynet"))
    assert _interrupted_message(plan) == "Interrupted before the first epoch finished: nothing was kept."
    state = tmp_path / "run" / "checkpoints" / "state" / recipe.stages[0].name
    state.mkdir(parents=True)
    (state / "ckpt-1.index").write_bytes(b"")
    (state / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    assert _interrupted_message(plan) == (
        f"Interrupted: `zoo train binarynet --resume {tmp_path / 'run'}` continues the run from "
        f"its last finished epoch.")


def test_download_timeout_must_be_a_positive_number(monkeypatch):
    from zoo import settings
    from zoo.errors import InvalidInputError

    for bad in ("abc", "0", "-5", "inf"):
        monkeypatch.setenv("ZOO_DOWNLOAD_TIMEOUT", bad)
        with pytest.raises(InvalidInputError, match=f"ZOO_DOWNLOAD_TIMEOUT={bad}: .* number > 0"):
            settings.download_timeout()
    monkeypatch.setenv("ZOO_DOWNLOAD_TIMEOUT", "20")
    assert settings.download_timeout() == 20.0
    monkeypatch.delenv("ZOO_DOWNLOAD_TIMEOUT")
    assert settings.download_timeout() == settings.DEFAULT_DOWNLOAD_TIMEOUT_S
