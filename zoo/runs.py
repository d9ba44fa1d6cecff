"""The run directory: what ``zoo train`` (and ``zoo pretrain``) write, and how the
other commands read it back.

A run directory holds ``config.json`` (the resolved configuration), ``summary.csv``
(one row per epoch), ``logs/`` (TensorBoard), ``checkpoints/`` (weights after every
epoch, and ``state/<stage>/`` for ``--resume``), ``weights.h5`` (final weights, and
``<stage>_weights.h5`` per stage of a multi-stage recipe), ``results.json`` (final test
metrics, written last) and ``curves.png``. Every file is written atomically.
"""
from __future__ import annotations

import csv
import datetime
import functools
import io
import json
import os
import platform
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from zoo import data as zdata
from zoo._version import __version__
from zoo.api import get_entry, load
from zoo.errors import InvalidInputError, ZooError
from zoo.hub.loading import resolve_weights_path
from zoo.hub.spec import get_spec, is_tag, split_tag

CONFIG = "config.json"
WEIGHTS = "weights.h5"
RESULTS = "results.json"
SUMMARY = "summary.csv"


def versions() -> Dict[str, str]:
    """The library versions a run or a weight set was made with."""
    import larq
    import tensorflow as tf
    import tensorflow_datasets as tfds
    import tf_keras

    return {"zoo": __version__, "tensorflow": tf.__version__, "keras": tf_keras.__version__,
            "larq": larq.__version__, "tensorflow_datasets": tfds.__version__,
            "python": platform.python_version()}


def hardware() -> Dict[str, Any]:
    """The machine a run trains on, as its config records it: the CPU cores this process
    may use and the accelerators TensorFlow sees (what a training time is measured on)."""
    import tensorflow as tf

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpus": cpus, "gpus": len(tf.config.list_physical_devices("GPU")),
            "processor": platform.processor() or platform.machine()}


def training_time(run_dir: Path) -> Optional[Dict[str, Any]]:
    """What training a run cost: epochs trained (all stages), their wall-clock seconds
    (each epoch's test evaluation included) and seconds per epoch, from ``summary.csv``,
    with the machine its config recorded (None for runs older than that field, or resumed on
    another machine). None when the run has no summary rows."""
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle) if row.get("seconds")]
    if not seconds:
        return None
    config_path = Path(run_dir) / CONFIG
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    machines = [config.get("hardware")] + [r.get("hardware") for r in config.get("resumed") or ()]
    return {"epochs": len(seconds), "seconds": round(sum(seconds), 1),
            "seconds_per_epoch": round(sum(seconds) / len(seconds), 1),
            "hardware": machines[0] if all(m == machines[0] for m in machines) else None}


# ----------------------------------------------------------------------------- atomic writes


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file renamed into place."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()


def write_json_atomically(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written atomically (parent folders created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(Path(path), json.dumps(data, indent=2, default=str) + "\n")


def write_csv_atomically(path: Path, fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """A header of ``fields`` and ``rows`` (dicts) as CSV, written atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(Path(path), buffer.getvalue())


def append_csv_row(path: Path, fields: Sequence[str], row: Mapping[str, Any]) -> None:
    """Append ``row`` to the CSV file ``path``, writing the header of ``fields`` first when
    the file is new (a run's summary.csv, one row per epoch)."""
    path = Path(path)
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        if new:
            writer.writeheader()
        writer.writerow(row)


def save_weights_atomically(model, path) -> None:
    """``model.save_weights`` to a temporary file renamed into place: a killed run
    never leaves a half-written weights file under the final name."""
    path = str(path)
    model.save_weights(path + ".partial", save_format="h5")
    os.replace(path + ".partial", path)


# ----------------------------------------------------------------------------- output folders


_NEW_RUNS: list = []  # run directories the current call created (see no_partial_run)


def prepare_output_dir(output: Path) -> None:
    """Create a new run directory (remembered, so :func:`no_partial_run` can remove it
    when the run fails early); refuse one that already holds a run."""
    output = Path(output)
    missing = [folder for folder in (output, *output.parents) if not folder.exists()]
    # the top-most folder this call creates, or (an existing folder) what it held before
    before = None if missing else {p.name for p in output.iterdir()} if output.is_dir() else set()
    _NEW_RUNS.append((output, missing[-1] if missing else None, before))
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ZooError(f"Cannot write to output directory {output}: {error.strerror or error}. "
                       f"Choose another --output.") from error
    if (output / CONFIG).exists():
        raise ZooError(f"{output} already holds a training run ({CONFIG}); choose another --output.")


def has_saved_epoch(run_dir: Path) -> bool:
    """The run in ``run_dir`` saved at least one epoch's state: ``--resume`` continues it."""
    state = Path(run_dir) / "checkpoints" / "state"
    return state.is_dir() and any(state.rglob("checkpoint"))


def no_partial_run(function):
    """A run that fails (bad input or data, diverged loss, Ctrl-C, any error) before its
    first epoch was saved leaves nothing behind: the folders it created are removed."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        mark = len(_NEW_RUNS)
        try:
            return function(*args, **kwargs)
        except BaseException:
            for run_dir, top, before in _NEW_RUNS[mark:]:
                if has_saved_epoch(run_dir):
                    continue  # --resume continues the run
                if top is not None:
                    shutil.rmtree(top, ignore_errors=True)
                    continue
                for path in run_dir.iterdir() if run_dir.is_dir() else ():
                    if path.name in before:  # the user's, not the run's
                        continue
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink()
            raise
        finally:
            del _NEW_RUNS[mark:]

    return wrapper


def default_output(model: str, dataset: str) -> Path:
    """``runs/MODEL-DATASET-YYYYmmdd-HHMMSS``."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{model}-{dataset.replace(':', '_').replace('/', '_')}-{stamp}"


# ----------------------------------------------------------------------------- reading runs back


def run_config(weights_path: Path) -> Optional[Dict[str, Any]]:
    """The config.json of the `zoo train` run a weights file belongs to: next to it
    (weights.h5, <stage>_weights.h5) or one folder up (checkpoints/...); None if none."""
    weights_path = Path(weights_path)
    for folder in (weights_path.parent, weights_path.parent.parent):
        if (folder / CONFIG).is_file():
            return json.loads((folder / CONFIG).read_text())
    return None


def run_model_overrides(config: Dict[str, Any], weights_path: Path) -> Dict[str, Any]:
    """Builder arguments of the stage that wrote ``weights_path`` (matched by its
    ``<stage>_`` file-name prefix, default the last stage), plus the run's own."""
    overrides = dict(config.get("model_overrides") or {})
    stages = (config.get("recipe") or {}).get("stages") or []
    if stages:
        stage = next((st for st in stages if Path(weights_path).name.startswith(f"{st['name']}_")),
                     stages[-1])
        overrides = {**stage.get("model_overrides", {}), **overrides}
    return overrides


def load_for_evaluation(model: str, weights, dataset: Optional[str] = None,
                        image_size: Optional[int] = None) -> Tuple[Any, Any, Tuple[int, ...]]:
    """``(model, dataset spec, input shape)``: ``model`` (``NAME`` or ``NAME.TAG``) built
    the way it was trained, with ``weights`` loaded.

    ``weights``: a tag of the model (its own dataset and input shape), a weights file or a
    run directory (its config.json fixes the dataset, input shape and builder overrides;
    without one, the same rule as training picks them)."""
    model, name_tag = split_tag(model)
    entry = get_entry(model)
    if weights is None and name_tag:
        weights = name_tag
    if is_tag(entry, weights):  # a published weight set: its own dataset and input shape
        weight_spec = get_spec(entry, str(weights).strip().lower())
        net = load(entry.name, weights=weight_spec)
        return net, zdata.get_dataset(dataset or weight_spec.dataset), tuple(weight_spec.input_shape)
    if weights is None:
        raise InvalidInputError(f"Pass --weights: a weights file, a run directory or a tag of {entry.name}.")
    path = resolve_weights_path(weights, entry)
    config = run_config(path)
    if dataset is None and config is not None:
        dataset = config.get("dataset")
    spec = zdata.get_dataset(dataset or "fashion_mnist")
    input_shape = zdata.input_shape_for(spec, entry, image_size)
    overrides: Dict[str, Any] = {}
    if config is not None:
        if get_entry(config.get("model", entry.name)).name != entry.name:
            raise InvalidInputError(
                f"{path} holds weights of {config['model']}, not {entry.name}.")
        if image_size is None:
            input_shape = tuple(config.get("input_shape", input_shape))
        overrides = run_model_overrides(config, path)
    net = load(entry.name, weights=path, input_shape=input_shape, num_classes=spec.num_classes,
               **overrides)
    return net, spec, tuple(input_shape)


def split_reference(reference: str) -> Tuple[str, Optional[str]]:
    """``(model, weights)`` of a trained-model reference: a `zoo train` run directory,
    ``NAME:WEIGHTS`` (an entry and its weights file or tag) or ``NAME.TAG``."""
    text = str(reference)
    folder = Path(text).expanduser()
    if folder.is_dir():
        config = run_config(folder / WEIGHTS)
        if config is None:
            raise InvalidInputError(f"{text} holds no {CONFIG} of a `zoo train` run.")
        return config["model"], str(folder)
    if ":" in text:
        name, weights = text.split(":", 1)
        return name, weights
    return text, None
