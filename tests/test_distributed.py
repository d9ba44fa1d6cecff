"""Distributed training: `zoo train --strategy mirrored` on 2 logical CPU devices and
`--strategy multiworker` with two worker processes on 127.0.0.1 give the same weights
as single-device training with the same seed; strategy errors are one clear line.

How the comparison is made exact: each global batch of 2B images is built as a batch
of B images followed by the same B images again (and without random flips). A
2-replica step then sees those B images on each replica, so every replica's batch-norm
statistics equal the whole batch's, and the mean of the two replicas' gradients equals
the single-device gradient on the 2B batch. Without that, batch norm would normalise
each half with its own statistics and the runs would differ by design (not a bug:
the papers' DataParallel code does the same). What remains is float summation order
(all-reduce of two half-batch gradients vs. one reduction), ~1e-7 relative per step,
which a binary network can amplify where an activation sits within that distance of
its sign threshold: hence the tolerances below.

This file is also the entry point of the training processes
(``python tests/test_distributed.py mirrored|worker ...``).
"""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# one tiny BinaryNet (BN after every layer, ste_sign activations) on 192 Fashion-MNIST
# images: one epoch of 3 steps of 64 images. Longer runs drift apart: a binary network
# turns float-rounding differences into different signs wherever an activation sits at
# a sign or STE-clip threshold, and those grow step by step (after a second epoch here,
# ~0.5% of the distance the weights travelled; Bop then flips ~1% of its kernels
# differently). Three steps keep the comparison tight.
TINY = {"filters": 8, "dense_units": 32}
COMMON = dict(dataset="fashion_mnist", epochs=1, batch_size=64, limit=192, eval_limit=100,
              image_size=28, seed=3, verbose=0)
RUNS = {
    # SGD (its steps scale with the gradient, unlike Adam's: a wrongly scaled loss shows),
    # weight decay, label smoothing, linear LR decay, latent kernels with weight clipping
    "sgd": dict(recipe="birealnet_adam", learning_rate=0.05, model_overrides=TINY,
                stage_overrides={"optimizer": "sgd", "weight_decay": 1e-4}),
    # Bop (larq CaseOptimizer: Bop for the +-1 kernels, Adam for the rest) inside the
    # distillation wrapper, with the "sgd" run as teacher
    "bop_kd": dict(recipe="binarynet_bop", learning_rate=5e-3,
                   model_overrides={**TINY, "binary_weights": "latent_free"},
                   stage_overrides={"distill": True, "label_weight": 0.5,
                                    "optimizer_args": {"threshold": 1e-6, "gamma": 1e-2}}),
}


# ----------------------------------------------------------------------------- process side


def _duplicate_halves():
    """Training batches of 2B = B fresh images + the same B again (no random flips)."""
    import zoo.data as zdata

    original = zdata.make_dataset

    def make_dataset(spec, split, input_shape, batch_size, training=False, augment=None, **kwargs):
        if not training:
            return original(spec, split, input_shape, batch_size, training=False, augment=augment, **kwargs)
        assert batch_size % 2 == 0
        half = original(spec, split, input_shape, batch_size // 2, training=True, augment="none", **kwargs)
        import tensorflow as tf

        return half.map(lambda x, y: (tf.concat([x, x], 0), tf.concat([y, y], 0)))

    zdata.make_dataset = make_dataset


def _train(name, output, strategy, teacher=None):
    from zoo.training import train

    settings = {**COMMON, **RUNS[name]}
    if teacher is not None:
        settings["teacher"] = str(teacher)
    return train(output=output, strategy=strategy, model="binarynet", **settings)


def _mirrored_main(out: Path):
    """Single-device and 2-replica MirroredStrategy runs of every RUNS entry."""
    import zoo  # noqa: F401
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    _duplicate_halves()
    from zoo.training import loop

    build, initial = loop._stage_model, {}

    def stage_model(*args, **kwargs):  # keeps a copy of each run's initial weights
        net = build(*args, **kwargs)
        if initial.get("path"):
            net.save_weights(initial.pop("path"))
        return net

    loop._stage_model = stage_model
    timings = {}
    for name in RUNS:
        for strategy in ("default", "mirrored"):
            initial["path"] = str(out / f"{name}-{strategy}-init.h5")
            start = time.time()
            _train(name, out / f"{name}-{strategy}", strategy,
                   teacher=out / "sgd-default" if name == "bop_kd" else None)
            timings[f"{name}-{strategy}"] = round(time.time() - start, 1)
    (out / "timings.json").write_text(json.dumps(timings))


def _worker_main(out: Path, index: int, ports):
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
        "task": {"type": "worker", "index": index}})
    import zoo  # noqa: F401

    _duplicate_halves()
    _train("sgd", out / "sgd-multiworker", "multiworker")


if __name__ == "__main__":
    if sys.argv[1] == "mirrored":
        _mirrored_main(Path(sys.argv[2]))
    else:
        _worker_main(Path(sys.argv[2]), int(sys.argv[3]), [int(p) for p in sys.argv[4].split(",")])
    sys.exit(0)


# ----------------------------------------------------------------------------- tests

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import assert_one_error_line, invoke, needs_fmnist  # noqa: E402

import zoo  # noqa: E402,F401


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Starts the mirrored process and the two workers together, waits for all three."""
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "ZOO_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    script = str(Path(__file__).resolve())
    ports = ",".join(map(str, _free_ports(2)))
    commands = {"mirrored": [sys.executable, script, "mirrored", str(out)]}
    for index in range(2):
        commands[f"worker{index}"] = [sys.executable, script, "worker", str(out), str(index), ports]
    started = {}
    for key, command in commands.items():
        scratch = out / f"tmp-{key}"  # the workers' temporary folders land here
        scratch.mkdir()
        started[key] = subprocess.Popen(command, cwd=REPO, env={**env, "TMPDIR": str(scratch)},
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = {}
    for key, proc in started.items():
        try:
            stdout, stderr = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for other in started.values():
                other.kill()
            raise
        done[key] = (proc.returncode, stderr)
    return out, done


def _arrays(path):
    import h5py

    # Keras' HDF5 layout: layers in model order, then their weights. Keyed by position and
    # short name: layer names get numbered suffixes when one process builds several models
    with h5py.File(path, "r") as handle:
        arrays = [(weight.split("/")[-1], handle[layer][weight][()])
                  for layer in handle.attrs["layer_names"]
                  for weight in handle[layer].attrs["weight_names"]]
    return {f"{index}:{name}": value for index, (name, value) in enumerate(arrays)}


def _check_ok(done, *keys):
    failed = {key: done[key][1][-3000:] for key in keys if done[key][0] != 0}
    assert not failed, "\n\n".join(f"{key} failed:\n{stderr}" for key, stderr in failed.items())


# Fused batch norm (after the convolutions) keeps the moving variance with Bessel's
# correction n / (n - 1), n = images x height x width of the batch it saw: a replica
# sees half the images, so its factor is larger. The smallest n here: the last conv
# block, 3x3 pixels, 32 images per replica vs. 64 on one device (+ 5e-4 for rounding).
_N = 32 * 3 * 3
MOVING_VARIANCE_RTOL = (_N / (_N - 1)) / (2 * _N / (2 * _N - 1)) - 1 + 5e-4  # 0.00225
# Everything else: 1e-4 is 0.2% of one SGD step of a unit gradient (lr 0.05) and a
# fiftieth of one Adam step (lr 5e-3); observed here: at most 1.3e-6. A wrongly scaled
# loss (gradients x2) would be off by whole steps. The BN offsets start at 0 and move by
# more than 10x the tolerance (observed 0.018), so a run that did not train would fail.
WEIGHT_ATOL = 1e-4


def _compare(reference_dir, other_dir):
    """Checks the weights of two runs agree; returns (differing ±1 kernel entries, all)."""
    ref, other = _arrays(reference_dir / "weights.h5"), _arrays(other_dir / "weights.h5")
    assert list(ref) == list(other) and len(ref) > 30
    worst, worst_var, flipped, binary = 0.0, 0.0, 0, 0
    for key, value in ref.items():
        if "moving_variance" in key:
            worst_var = max(worst_var, float(np.abs(other[key] / value - 1).max()))
        elif np.isin(value, (-1.0, 1.0)).all() and value.size > 1:  # latent-free kernels
            flipped += int((value != other[key]).sum())
            binary += value.size
        else:
            worst = max(worst, float(np.abs(value - other[key]).max()))
    assert worst < WEIGHT_ATOL, worst
    assert worst_var < MOVING_VARIANCE_RTOL, worst_var
    moved = max(float(np.abs(v).max()) for k, v in ref.items() if k.endswith("beta:0"))
    assert moved > 10 * WEIGHT_ATOL, moved
    return flipped, binary


def _results(out, *names):
    return [json.loads((out / name / "results.json").read_text()) for name in names]


def _summary(run):
    lines = (run / "summary.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]


@needs_fmnist
def test_mirrored_matches_single_device(runs):
    out, done = runs
    _check_ok(done, "mirrored")
    assert "batch 64 (32 per replica, MirroredStrategy with 2 replica(s))" in done["mirrored"][1]
    _compare(out / "sgd-default", out / "sgd-mirrored")
    single, mirrored = _results(out, "sgd-default", "sgd-mirrored")
    assert single["loss"] == pytest.approx(mirrored["loss"], rel=1e-3)
    assert single["top1"] == pytest.approx(mirrored["top1"], abs=1.0)  # <= 1 of 100 images
    [row_single], [row] = _summary(out / "sgd-default"), _summary(out / "sgd-mirrored")
    assert float(row["loss"]) == pytest.approx(float(row_single["loss"]), rel=1e-5)


@needs_fmnist
def test_bop_and_distillation_under_mirrored_strategy(runs):
    out, done = runs
    _check_ok(done, "mirrored")
    config = json.loads((out / "bop_kd-mirrored" / "config.json").read_text())
    [stage] = config["recipe"]["stages"]
    assert stage["optimizer"] == "bop" and stage["distill"] is True
    assert config["teacher"] == str(out / "sgd-default")
    flipped, binary = _compare(out / "bop_kd-default", out / "bop_kd-mirrored")
    assert binary > 20000
    # Bop flips a weight when its gradient average passes the threshold: the same flips
    # in both runs (a weight sitting at the threshold could differ: allow 0.1%)
    assert flipped <= binary // 1000, (flipped, binary)
    # both runs started from the same weights, and Bop did flip many of them (with this
    # threshold and gamma, about half of the kernels in the first steps)
    init = _arrays(out / "bop_kd-mirrored-init.h5")
    for key, value in _arrays(out / "bop_kd-default-init.h5").items():
        np.testing.assert_array_equal(value, init[key])
    final = _arrays(out / "bop_kd-mirrored" / "weights.h5")
    changed = sum(int((init[k] != final[k]).sum()) for k in final
                  if np.isin(final[k], (-1.0, 1.0)).all() and final[k].size > 1)
    assert changed > binary // 10, changed
    single, mirrored = _results(out, "bop_kd-default", "bop_kd-mirrored")
    assert single["loss"] == pytest.approx(mirrored["loss"], rel=1e-3)
    [row_single], [row] = _summary(out / "bop_kd-default"), _summary(out / "bop_kd-mirrored")
    assert float(row["loss"]) == pytest.approx(float(row_single["loss"]), rel=1e-5)


@needs_fmnist
def test_multiworker_matches_single_device(runs):
    out, done = runs
    _check_ok(done, "worker0", "worker1", "mirrored")
    run = out / "sgd-multiworker"
    # the chief (worker 0) wrote the run directory; worker 1 the same steps, no files kept
    for name in ("config.json", "summary.csv", "weights.h5", "results.json", "checkpoints/epoch001.h5"):
        assert (run / name).is_file(), name
    for key in ("worker0", "worker1"):
        assert "MultiWorkerMirroredStrategy with 2 replica(s)" in done[key][1]
    assert not any((out / "tmp-worker1").iterdir())  # its copy of the files was removed
    _compare(out / "sgd-default", run)
    single, multi = _results(out, "sgd-default", "sgd-multiworker")
    assert multi["loss"] == pytest.approx(single["loss"], rel=1e-3)
    assert multi["examples"] == single["examples"] == 100


# ----------------------------------------------------------------------------- errors


def test_multiworker_without_tf_config_is_one_line(tmp_path, monkeypatch):
    from zoo.cli import cli

    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = invoke(cli, "train", "binarynet", "--strategy", "multiworker", "--output", tmp_path / "run")
    assert_one_error_line(result, "TF_CONFIG", '"worker"')
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tf_config, needle", [
    ("not json", "not valid"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}', "worker:3"),
    ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "no workers"),
])
def test_bad_tf_config(tf_config, needle):
    from zoo.training.distributed import parse_tf_config

    with pytest.raises(zoo.InvalidInputError, match=needle):
        parse_tf_config(tf_config)
    cluster, task, index = parse_tf_config(
        '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}')
    assert cluster == {"worker": ["a:1", "b:2"]} and (task, index) == ("worker", 1)


def test_tpu_without_tpu_is_one_line(tmp_path, monkeypatch):
    from zoo.cli import cli

    monkeypatch.delenv("TPU_NAME", raising=False)
    result = invoke(cli, "train", "binarynet", "--strategy", "tpu", "--output", tmp_path / "run")
    assert_one_error_line(result, "TPU_NAME", "--strategy mirrored")
    assert not (tmp_path / "run").exists()


def test_batch_smaller_than_replicas():
    from zoo.training.distributed import per_replica_batch

    class Four:
        num_replicas_in_sync = 4

    assert per_replica_batch(Four(), 256) == 64
    with pytest.raises(zoo.InvalidInputError, match="smaller than the 4 replicas"):
        per_replica_batch(Four(), 2)
