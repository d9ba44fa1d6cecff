"""scripts/retrain_weights.py: the plan's commands are valid zoo commands at the published
sets' input sizes, and a target's next step follows from its run directory and the
manifest alone (train, restart, resume, publish, done). No training here."""
import importlib.util
import json
import shlex
import sys
from pathlib import Path

import pytest

from benchmarks.claims.commands import check_command

ROOT = Path(__file__).resolve().parent.parent
_SPEC = importlib.util.spec_from_file_location("retrain_weights", ROOT / "scripts" / "retrain_weights.py")
retrain = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = retrain  # dataclasses look their module up
_SPEC.loader.exec_module(retrain)


def _records():
    return json.loads((ROOT / "weights" / "manifest.json").read_text())["records"]


@pytest.mark.parametrize("target", retrain.PLAN, ids=lambda t: t.model)
def test_every_target_is_a_valid_command_at_its_published_size(target, tmp_path, monkeypatch):
    monkeypatch.setattr(retrain, "RUNS", tmp_path)
    params = check_command(retrain.train_argv(target))
    target.run_dir.mkdir()  # zoo publish takes an existing run directory
    assert params["name"] == target.model and params["dataset"] == "fashion_mnist"
    check_command(retrain.publish_argv(target))
    record = _records().get(target.key)
    if target.new:  # the teacher: a new set, not one to replace
        assert record is None or record["source"] == f"zoo publish {target.run_dir.name}"
        assert target.image_size == 28
        assert "--supersede" not in retrain.publish_argv(target)
    else:
        assert record is not None, f"{target.key} is not published: nothing to supersede"
        assert record["input_shape"][:2] == [target.image_size] * 2
        assert "--supersede" in retrain.publish_argv(target)


def test_the_teacher_comes_before_the_targets_that_use_it():
    order = [t.model for t in retrain.PLAN]
    teacher = retrain.TEACHER.split(":")[0]
    for target in retrain.PLAN:
        if retrain.TEACHER in target.args:
            assert order.index(teacher) < order.index(target.model)
    assert len(set(order)) == len(order)


def test_next_action_follows_the_run_directory_and_the_manifest(tmp_path, monkeypatch):
    monkeypatch.setattr(retrain, "RUNS", tmp_path)
    target = retrain.get_target("birealnet34")
    run = target.run_dir
    assert run.parent == tmp_path

    state, argv = retrain.next_action(target, {})
    assert state == "train" and argv[:2] == ["train", "birealnet34"]
    assert argv[argv.index("--output") + 1] == str(run)
    assert argv[argv.index("--image-size") + 1] == "28"

    run.mkdir()  # killed before its config was written
    assert retrain.next_action(target, {})[0] == "restart"
    command = "zoo " + shlex.join(retrain.train_argv(target))  # as zoo train records it
    (run / "config.json").write_text(json.dumps({"command": command}))
    assert retrain.next_action(target, {})[0] == "restart"  # no epoch saved yet

    state_dir = run / "checkpoints" / "state" / "binary"
    state_dir.mkdir(parents=True)
    (state_dir / "checkpoint").write_text("")
    assert retrain.next_action(target, {}) == (
        "resume", ["train", "birealnet34", "--resume", str(run), "--format", "json"])

    (run / "results.json").write_text("{}")
    old = {"source": "zoo publish runs/birealnet34", "command": "zoo train birealnet34 --epochs 3"}
    assert retrain.next_action(target, {target.key: old}) == (
        "publish", ["publish", str(run), "--tag", "fashion_mnist", "--format", "json", "--supersede"])
    mine = {"source": f"zoo publish {run.name}", "command": command}
    assert retrain.next_action(target, {target.key: mine}) == ("done", None)
    other = {"source": f"zoo publish {run.name}", "command": "zoo train birealnet34 --epochs 2"}
    assert retrain.next_action(target, {target.key: other})[0] == "publish"  # another run's


def test_unknown_target_is_one_clear_error():
    with pytest.raises(SystemExit, match="not in the plan: resnet18, birealnet34"):
        retrain.get_target("birealnet999")


def test_every_binary_set_below_the_goal_is_a_target():
    from benchmarks.zoo_table import GOAL_TOP1

    below = {key for key, r in _records().items() if r["dataset"] == "fashion_mnist"
             and r["costs"]["binary_params"] and r["metrics"]["top1"] < GOAL_TOP1}
    assert below <= {t.key for t in retrain.PLAN}, below - {t.key for t in retrain.PLAN}


def test_run_steps_each_target_to_done_and_rewrites_the_tables_after_each_publish(monkeypatch):
    steps = {"resnet18": ["train", "publish", "done"], "birealnet34": ["resume", "publish"],
             "reactnet_a": ["restart", "done"]}
    calls = []

    def next_action(target, records):
        state = steps[target.model].pop(0)
        return state, None if state == "done" else [state, target.model]

    def zoo(argv):
        calls.append(tuple(argv))
        return 1 if argv == ["publish", "birealnet34"] else 0  # a worse set: refused

    monkeypatch.setattr(retrain, "next_action", next_action)
    monkeypatch.setattr(retrain, "_records", lambda: {})
    monkeypatch.setattr(retrain, "_zoo", zoo)
    monkeypatch.setattr(retrain.shutil, "rmtree", lambda path, ignore_errors: calls.append(("rm", path.name)))
    monkeypatch.setattr(retrain.subprocess, "run", lambda argv, **kw: calls.append(("table", Path(argv[1]).name)))
    assert retrain.run(["resnet18", "birealnet34", "reactnet_a"]) == 1  # one target failed
    assert calls == [("train", "resnet18"), ("publish", "resnet18"), ("table", "zoo_table.py"),
                     ("resume", "birealnet34"), ("publish", "birealnet34"),
                     ("rm", "reactnet_a-fashion_mnist"), ("restart", "reactnet_a")]
    assert all(not left for left in steps.values())


def test_a_run_of_an_older_plan_is_set_aside_and_trained_anew(tmp_path, monkeypatch):
    monkeypatch.setattr(retrain, "RUNS", tmp_path)
    target = retrain.get_target("birealnet34")
    run = target.run_dir
    run.mkdir()
    argv = retrain.train_argv(target)
    moved = [a if a != str(run) else "/elsewhere/birealnet34-fashion_mnist" for a in argv]
    (run / "config.json").write_text(json.dumps({"command": "zoo " + shlex.join(moved)}))
    (run / "results.json").write_text("{}")
    assert retrain.next_action(target, {})[0] == "publish"  # the checkout moved: same run
    older = [a if a != "8" else "3" for a in argv]  # the plan had 3 epochs then
    (run / "config.json").write_text(json.dumps({"command": "zoo " + shlex.join(older)}))
    assert retrain.next_action(target, {}) == ("replace", argv)

    monkeypatch.setattr(retrain, "_records", lambda: {})
    trained = []

    def zoo(argv):  # the new run: config, results; then publishing fails (stop there)
        if argv[0] == "train":
            run.mkdir()
            (run / "config.json").write_text(json.dumps({"command": "zoo " + shlex.join(argv)}))
            (run / "results.json").write_text("{}")
        trained.append(argv[0])
        return 0 if argv[0] == "train" else 1

    monkeypatch.setattr(retrain, "_zoo", zoo)
    assert retrain.run(["birealnet34"]) == 1 and trained == ["train", "publish"]
    old = tmp_path / "birealnet34-fashion_mnist.old1"
    assert json.loads((old / "config.json").read_text())["command"] == "zoo " + shlex.join(older)
    assert (old / "results.json").is_file()  # set aside, not lost
    assert retrain.set_aside(run).name == "birealnet34-fashion_mnist.old2"
