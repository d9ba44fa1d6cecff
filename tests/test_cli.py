"""The ``zoo`` command line: listing, info, errors as one line with exit status 2,
and a tiny train -> evaluate round trip; plus the installed script and the
train.py / evaluate.py wrappers run as real processes."""
import json
import subprocess
import sys

import pytest
from conftest import REPO, assert_one_error_line, invoke, start_zoo, zoo_env

import zoo  # noqa: F401  (before TensorFlow: Keras 2)
from zoo.cli import cli  # noqa: E402

BIREAL = ["birealnet18", "birealnet34", "birealnet50", "birealnet101", "birealnet152"]


def table_names(stdout):
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines[0].split()[0] == "name" and set(lines[1].replace(" ", "")) == {"-"}
    return [line.split()[0] for line in lines[2:]]


# ----------------------------------------------------------------------------- list / info


def test_list_models_table():
    result = invoke(cli, "list")
    assert result.exit_code == 0 and result.stderr == ""
    names = table_names(result.stdout)
    assert "birealnet18" in names and "quicknet" in names and "resnet18" in names
    row = next(line for line in result.stdout.splitlines() if line.startswith("birealnet18 "))
    assert "1808.00278" in row and "56.4" in row


def test_list_models_json():
    result = invoke(cli, "list", "--format", "json")
    assert result.exit_code == 0
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert records["birealnet18"]["aliases"] == ["birealnet"]
    assert records["birealnet18"]["paper"] == "1808.00278"
    assert records["birealnet18"]["imagenet_top1"] == 56.4
    assert "quicknet" in records and records["quicknet"]["family"] == "larq_zoo"


def test_list_pattern():
    result = invoke(cli, "list", "birealnet*")
    assert result.exit_code == 0
    assert table_names(result.stdout) == BIREAL
    result = invoke(cli, "list", "birealnet*", "--format", "json")
    assert [r["name"] for r in json.loads(result.stdout)] == BIREAL
    empty = invoke(cli, "list", "nothing_like_this*", "--format", "json")
    assert empty.exit_code == 0 and json.loads(empty.stdout) == []


def test_list_other_kinds():
    recipes = invoke(cli, "list", "--kind", "recipes")
    assert recipes.exit_code == 0
    names = table_names(recipes.stdout)
    assert "birealnet_adam" in names and "birealnet_two_step" in names
    two_step = next(l for l in recipes.stdout.splitlines() if l.startswith("birealnet_two_step"))
    assert "birealnet" in two_step.split()[1]  # its alias

    datasets = invoke(cli, "list", "--kind", "datasets", "--format", "json")
    records = {r["name"]: r for r in json.loads(datasets.stdout)}
    assert "fashion_mnist" in records and records["fashion_mnist"]["aliases"] == ["fmnist"]
    assert records["fashion_mnist"]["description"].startswith("10 classes")
    assert "fashion_mnist" in table_names(invoke(cli, "list", "--kind", "datasets").stdout)

    optimizers = invoke(cli, "list", "--kind", "optimizers")
    assert {"adam", "sgd"} <= set(table_names(optimizers.stdout))

    bad = invoke(cli, "list", "--kind", "nonsense")
    assert bad.exit_code == 2 and "nonsense" in bad.stderr


def test_info_json():
    result = invoke(cli, "info", "birealnet18", "--format", "json")
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert record["name"] == "birealnet18"
    assert record["costs"]["params"] == 11699112
    assert record["costs"]["input_shape"] == [224, 224, 3]
    assert record["paper"]["arxiv"] == "1808.00278"
    assert record["reported"]["imagenet2012"]["top1"] == 56.4
    # the alias gives the same record
    assert json.loads(invoke(cli, "info", "birealnet", "--format", "json").stdout) == record


def test_info_table():
    result = invoke(cli, "info", "birealnet18")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("birealnet18")
    assert "arXiv:1808.00278" in out
    assert "OPs:" in out and "1.640e8" in out
    assert "11,699,112" in out
    assert "56.4%" in out


# ----------------------------------------------------------------------------- errors


def test_info_unknown_model_is_one_line():
    line = assert_one_error_line(invoke(cli, "info", "birealnet81"), "birealnet81", "birealnet18")
    assert "Did you mean" in line


def test_evaluate_missing_weights_is_one_line():
    assert_one_error_line(invoke(cli, "evaluate", "birealnet18", "--weights", "/nonexistent"),
                          "/nonexistent", "does not exist")


def test_evaluate_unknown_tag_lists_the_weight_sets():
    assert_one_error_line(invoke(cli, "evaluate", "birealnet18", "--weights", "cifar10"),
                          "'cifar10' is neither a file nor a weight set of birealnet18",
                          "fashion_mnist")


def test_train_unknown_model(tmp_path):
    assert_one_error_line(invoke(cli, "train", "nosuchmodel", "--output", str(tmp_path / "run")),
                          "nosuchmodel")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, needle", [
    (["--set", "nonsense=1"], "nonsense"),
    (["--set", "novalue"], "key=value"),
    (["--epochs", "0"], "epochs"),
    (["--recipe", "nosuchrecipe"], "nosuchrecipe"),
])
def test_train_bad_settings(tmp_path, args, needle):
    result = invoke(cli, "train", "birealnet18", "--output", str(tmp_path / "run"), *args)
    assert_one_error_line(result, needle)
    assert not (tmp_path / "run" / "config.json").exists()


def test_train_missing_dataset_names_the_file(tmp_path, monkeypatch):
    for name in ("data", "manual"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ZOO_MANUAL_DIR", str(tmp_path / "manual"))
    result = invoke(cli, "train", "birealnet18", "--dataset", "cifar10", "--output", tmp_path / "run")
    assert_one_error_line(result, "cifar10", "cifar-10-binary.tar.gz", "ZOO_MANUAL_DIR")
    assert not (tmp_path / "run" / "config.json").exists()


def test_train_into_existing_run_refuses(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert_one_error_line(invoke(cli, "train", "birealnet18", "--output", str(tmp_path)),
                          "already holds a training run")


def test_help():
    result = invoke(cli, "--help")
    assert result.exit_code == 0
    for command in ("list", "info", "train", "evaluate"):
        assert command in result.stdout
    result = invoke(cli, "train", "-h")
    assert result.exit_code == 0 and "--dataset" in result.stdout and "--set" in result.stdout


# ----------------------------------------------------------------------------- end to end


def test_train_then_evaluate(tmp_path):
    out = tmp_path / "run"
    trained = invoke(cli, "train", "birealnet18", "--epochs", "1", "--batch-size", "32",
                     "--limit", "256", "--eval-limit", "200", "--output", out, "--format", "json")
    assert trained.exit_code == 0, trained.stderr
    results = json.loads(trained.stdout)  # stdout holds the results only; progress is on stderr
    assert results["model"] == "birealnet18" and results["dataset"] == "fashion_mnist"
    assert results["examples"] == 200 and results["epochs"] == 1
    assert results["input_shape"] == [28, 28, 3]
    assert "stage 1/1" in trained.stderr
    assert json.loads((out / "results.json").read_text())["top1"] == results["top1"]
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["stages"][0]["batch_size"] == 32 and config["limit"] == 256

    evaluated = invoke(cli, "evaluate", "birealnet18", "--weights", out, "--limit", "200",
                       "--format", "json")
    assert evaluated.exit_code == 0, evaluated.stderr
    again = json.loads(evaluated.stdout)
    assert again["top1"] == results["top1"]
    assert again["top5"] == results["top5"]
    assert again["examples"] == 200
    assert again["weights"] == str(out)


# ----------------------------------------------------------------------------- real processes


@pytest.fixture(scope="module")
def processes():
    """Starts the commands together (each pays TensorFlow's import) and waits for all."""
    started = {"error": start_zoo("info", "birealnet81")}
    for script in ("train", "evaluate"):
        started[f"{script}_help"] = subprocess.Popen(
            [sys.executable, f"{script}.py", "--help"], cwd=REPO, env=zoo_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = {}
    for key, proc in started.items():
        stdout, stderr = proc.communicate(timeout=300)
        done[key] = (proc.returncode, stdout, stderr)
    return done


def test_console_script_error_is_one_line(processes):
    code, stdout, stderr = processes["error"]
    assert code == 2
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ") and "birealnet18" in lines[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("script, options", [
    ("train", ["--dataset", "--recipe", "--epochs", "--batch-size", "--lr", "--output", "--set"]),
    ("evaluate", ["--weights", "--dataset", "--batch-size", "--eval-limit"]),
])
def test_wrapper_scripts_help(processes, script, options):
    code, stdout, stderr = processes[f"{script}_help"]
    assert code == 0, stderr
    assert stdout.startswith(f"Usage: {script}.py [OPTIONS] NAME")
    for option in options:
        assert option in stdout


@pytest.mark.parametrize("args, needle", [
    (["train", "birealnet18", "--limit", "-5"], "'--limit': -5 is not in the range x>=1"),
    (["train", "birealnet18", "--epochs", "0"], "'--epochs': 0 is not in the range x>=1"),
    (["evaluate", "birealnet18", "--limit", "0"], "'--limit': 0 is not in the range x>=1"),
    (["predict", "birealnet18", "--top", "0", "x.png"], "'--top': 0 is not in the range x>=1"),
    (["convert", "binarynet", "--image-size", "0", "-o", "x.tflite"], "'--image-size': 0"),
    (["convert", "binarynet", "--input-size", "-3", "-o", "x.tflite"], "'--input-size': -3"),
])
def test_counts_and_sizes_must_be_positive(tmp_path, monkeypatch, args, needle):
    """One `Error:` line naming the option, before anything runs or is written."""
    monkeypatch.chdir(tmp_path)
    assert_one_error_line(invoke(cli, *args), needle)
    assert list(tmp_path.iterdir()) == []


def test_the_recorded_command_names_the_model_when_run_as_a_script(monkeypatch):
    """`python train.py NAME ...` records `zoo train NAME ...`, as `zoo train NAME ...` does."""
    import click
    from click.testing import CliRunner

    from zoo.cli._common import command_line

    @click.command()
    @click.argument("args", nargs=-1)
    def train(args):
        click.echo(command_line("train"))

    @click.group()
    def group():
        pass

    group.add_command(train)
    monkeypatch.setattr(sys, "argv", ["train.py", "birealnet18", "--epochs", "1"])
    assert CliRunner().invoke(train, ["birealnet18"]).output == "zoo train birealnet18 --epochs 1\n"
    monkeypatch.setattr(sys, "argv", ["zoo", "train", "birealnet18", "--epochs", "1"])
    assert CliRunner().invoke(group, ["train", "birealnet18"]).output == "zoo train birealnet18 --epochs 1\n"


def test_the_static_model_index_matches_the_registry():
    """`zoo list` reads zoo/models/index.json; it must say what the registry says."""
    from zoo.index import INDEX_FILE, registry_records

    assert json.loads(INDEX_FILE.read_text()) == registry_records(), (
        "zoo/models/index.json is out of date: regenerate it with "
        "python -c \"import zoo.api, zoo.index; zoo.index.write_index()\"")


def test_list_answers_without_tensorflow():
    """`zoo list` (models) imports neither TensorFlow nor a model file, and shows the
    same records as the registry with its weight tags."""
    code = ("import json, sys; from click.testing import CliRunner; from zoo.cli import cli; "
            "r = CliRunner().invoke(cli, ['list', '--format', 'json']); "
            "assert r.exit_code == 0, r.output; "
            "print(json.dumps([sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'larq', 'zoo') and m.startswith(('tensorflow', 'larq', 'zoo.models.'))), "
            "json.loads(r.stdout)]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=zoo_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported, listed = json.loads(done.stdout)
    assert imported == []
    from zoo import api

    assert [r["name"] for r in listed] == api.list_models()
    assert {r["name"]: r["weights"] for r in listed} == {
        name: sorted(api.get_entry(name).weights) for name in api.list_models()}
