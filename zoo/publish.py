"""``zoo publish``: a ``zoo train`` run directory becomes a verified weight set.

Writes one hash-named packed h5 file (:mod:`zoo.hub.packed`: binary kernels as the values
the forward pass uses, at one bit per weight plus a scale per output channel; the body of
the same file loads with ``include_top=False``), evaluates it through its new record on
the test split, and adds the record to the manifest (and ``results.csv`` beside it).
"""
from __future__ import annotations

import datetime
import hashlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from filelock import FileLock, Timeout

from zoo import data as zdata
from zoo.api import get_entry, load
from zoo.costs import model_costs
from zoo.settings import EVAL_BATCH_SIZE
from zoo.errors import InvalidInputError, WeightsError
from zoo.hub.cache import log, remove_files, sha256_file
from zoo.hub.loading import resolve_weights_path
from zoo.hub.packed import save_packed
from zoo.hub.spec import (
    MANIFEST_SCHEMA, TAG_RE, WeightSpec, manifest_path, read_manifest_json, record_published,
)
from zoo.runs import (run_config, run_model_overrides, training_time, write_csv_atomically,
                      write_json_atomically)
from zoo.training.evaluate import evaluate_model

DEFAULT_URL_TEMPLATE = "https://github.com/bnn-zoo/zoo/releases/download/{model}-{tag}/{file}"
DEFAULT_LICENSE = "Apache-2.0"


def _manifest_lock(path: Path):
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    return FileLock(os.path.join(tempfile.gettempdir(), f"zoo-manifest-{digest}.lock"), timeout=120)


RESULTS_FIELDS = ("model", "tag", "dataset", "split", "examples", "top1", "top5", "loss",
                  "params", "binary_params", "ops", "input_shape", "file", "recipe", "date")


def write_results_csv(manifest: Optional[os.PathLike] = None) -> Path:
    """``results.csv`` next to the manifest: one row per weight set evaluated by the zoo
    (records whose metrics came from `zoo publish`, not from a paper or larq-zoo)."""
    mpath = manifest_path(manifest)
    records = read_manifest_json(mpath)["records"]
    target = mpath.parent / "results.csv"
    rows = []
    for key, record in sorted(records.items()):
        metrics = record.get("metrics") or {}
        if "source" in metrics or "examples" not in metrics:  # reported, not evaluated here
            continue
        costs = record.get("costs") or {}
        rows.append({
            "model": record["model"], "tag": record["tag"], "dataset": metrics.get("dataset"),
            "split": metrics.get("split"), "examples": metrics.get("examples"),
            "top1": metrics.get("top1"), "top5": metrics.get("top5"), "loss": metrics.get("loss"),
            "params": costs.get("params"), "binary_params": costs.get("binary_params"),
            "ops": costs.get("ops"), "input_shape": "x".join(map(str, record.get("input_shape", []))),
            "file": record["files"]["top"]["file"],
            "recipe": (record.get("recipe") or {}).get("name"), "date": record.get("date"),
        })
    write_csv_atomically(target, RESULTS_FIELDS, rows)
    return target


def compact_binary_kernels(model) -> int:
    """Replace latent binary kernels by the values the forward pass uses, so that
    published files compress to a fraction of their float size.

    A kernel is replaced by ``q = kernel_quantizer(kernel)`` when ``q`` is binary (one
    magnitude per output channel: ``+-1``, ``sign(w) * mean|w|`` per channel or per
    layer, XNOR's clipped scale) and the quantizer maps ``q`` onto itself, so the
    model's outputs are unchanged (to float rounding): larq's sign quantizers, its
    ``MagnitudeAwareSign``, latent-free (Bop) kernels and function quantizers alike.
    Only the latent values that training would continue from are dropped; multi-bit
    and real-valued kernels are left alone. Returns the number of kernels replaced."""
    replaced, kept = 0, []
    for layer in model.layers:
        quantizer = getattr(layer, "kernel_quantizer", None)
        kernel = getattr(layer, "kernel", None)
        if quantizer is None or kernel is None:
            continue
        values = kernel.numpy()
        quantized = np.asarray(quantizer(tf.constant(values)), dtype=values.dtype)
        magnitudes = np.abs(quantized).reshape(-1, values.shape[-1])
        # q(q) differs from q by the float32 rounding of the per-channel mean, which grows
        # with the channel's length (3e-5 relative over a 3x3x1024 kernel): tolerate that
        rtol = max(1e-5, np.finfo(np.float32).eps * magnitudes.shape[0])
        binary = (  # one magnitude per channel, and the quantizer reproduces its own output
            np.allclose(magnitudes, magnitudes[:1], rtol=1e-5, atol=1e-7)
            and np.allclose(np.asarray(quantizer(tf.constant(quantized))), quantized,
                            rtol=rtol, atol=1e-7))
        if binary:
            kernel.assign(quantized)
            replaced += 1
        else:
            kept.append(layer.name)
    if kept:  # quantized kernels stored at full size: multi-bit ones, or a quantizer to check
        log(f"{len(kept)} quantized kernel(s) stored as float (not binary, or not reproduced "
             f"by their quantizer): {', '.join(kept[:8])}{' ...' if len(kept) > 8 else ''}")
    return replaced


def save_hashed(model, folder: Path, stem: str,
                created: Optional[List[Path]] = None) -> Tuple[Path, str, int]:
    """Save ``model``'s weights as a packed h5 file (:func:`zoo.hub.packed.save_packed`)
    named ``{stem}-{sha256[:8]}.h5``; returns (path, sha256, size). A new file is appended
    to ``created``; an existing file of that name is kept (same bytes) or refused."""
    tmp = folder / f".{stem}.{uuid.uuid4().hex[:8]}.h5"
    try:
        save_packed(model, tmp)
        digest = sha256_file(tmp)
        final = folder / f"{stem}-{digest[:8]}.h5"
        if final.exists() and sha256_file(final) != digest:
            raise WeightsError(f"{final} exists with other contents; it is never overwritten.")
        if not final.exists() and created is not None:
            created.append(final)
        os.replace(tmp, final)
    finally:
        remove_files(tmp)
    return final, digest, final.stat().st_size


def remove_unrecorded(paths: List[Path], mpath: Path) -> None:
    """Undo a failed publish: remove the files it wrote, except those a manifest record
    names. Files are named by their content's hash, so a concurrent publish of the same
    weights that won the manifest may have recorded the very file this one wrote."""
    try:
        with _manifest_lock(mpath):
            try:
                records = read_manifest_json(mpath)["records"].values()
            except Exception:  # an unreadable manifest names no file
                records = []
            recorded = {f.get("file") for r in records
                        for f in (r.get("files") or {}).values() if f}
            remove_files(*(p for p in paths if p.name not in recorded))
    except Timeout:  # another publish holds the manifest and may name them: leave them
        pass


def file_record(path: Path, sha256: str, size: int, urls: List[str]) -> Dict[str, Any]:
    return {"file": path.name, "sha256": sha256, "size": size, "urls": list(urls)}


def weight_set_record(model: str, tag: str, *, dataset: str, input_shape, num_classes: int,
                      top: Dict[str, Any], notop: Optional[Dict[str, Any]], preprocessing,
                      labels, model_overrides, costs, recipe, command, versions, license,
                      source: str, notes: Optional[str] = None,
                      metrics: Optional[Dict[str, Any]] = None,
                      release: Optional[Dict[str, Any]] = None,
                      training: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One manifest record (``zoo publish`` and ``zoo import`` write the same fields)."""
    record = {
        "model": model, "tag": tag, "dataset": dataset,
        "input_shape": list(input_shape), "num_classes": int(num_classes),
        "files": {"top": top, "notop": notop},
        "preprocessing": preprocessing, "labels": labels, "model_overrides": model_overrides,
        "metrics": metrics or {}, "costs": costs, "recipe": recipe, "command": command,
        "versions": versions, "license": license, "date": datetime.date.today().isoformat(),
        "source": source, "notes": notes,
    }
    if release:
        record["release"] = release
    if training:
        record["training"] = training
    return record


def add_record(mpath: Path, key: str, record: Dict[str, Any]) -> None:
    """Add ``record`` to the manifest ``mpath`` under its lock; an existing key is never
    overwritten."""
    with _manifest_lock(mpath):
        data = read_manifest_json(mpath)
        if key in data["records"]:
            raise WeightsError(f"{key} was published in {mpath} meanwhile; a record is never "
                               f"overwritten.")
        data["schema"] = MANIFEST_SCHEMA
        data["records"][key] = record
        data["records"] = dict(sorted(data["records"].items()))
        write_json_atomically(mpath, data)


def superseded_entry(record: Dict[str, Any]) -> Dict[str, Any]:
    """What a replaced record leaves in its successor's ``"supersedes"`` list."""
    return {"files": record["files"], "metrics": record.get("metrics"),
            "command": record.get("command"), "date": record.get("date"),
            "source": record.get("source"), "training": record.get("training")}


def _check_improves(key: str, previous: Dict[str, Any], metrics: Dict[str, Any]) -> None:
    old = previous.get("metrics") or {}
    same_images = (old.get("split"), old.get("examples")) == (metrics["split"], metrics["examples"])
    if not same_images:
        raise WeightsError(
            f"--supersede {key}: the published set was evaluated on {old.get('examples')} "
            f"{old.get('split')} images, the new one on {metrics['examples']} {metrics['split']} "
            f"images; evaluate the new one on the same images (drop --eval-limit).")
    if metrics["top1"] < old["top1"]:
        raise WeightsError(
            f"--supersede {key}: the new set scores {metrics['top1']:.2f}% top-1, below the "
            f"published {old['top1']:.2f}%; it is not published. Train it longer, or publish it "
            f"under a new tag.")


def replace_record(mpath: Path, key: str, record: Dict[str, Any],
                   previous: Dict[str, Any]) -> None:
    """Replace ``key``'s record by ``record`` under the manifest's lock, provided it is
    still ``previous`` (another publish may have replaced it meanwhile)."""
    with _manifest_lock(mpath):
        data = read_manifest_json(mpath)
        if data["records"].get(key) != previous:
            raise WeightsError(f"{key} was changed in {mpath} meanwhile; publish again.")
        data["records"][key] = record
        write_json_atomically(mpath, data)


def _urls(base_url: Optional[str], model: str, tag: str, file: str) -> List[str]:
    base = base_url or DEFAULT_URL_TEMPLATE
    if "{file}" in base:
        return [base.format(model=model, tag=tag, file=file)]
    return [base.rstrip("/") + "/" + file]


def _preprocessing_record(dataset, input_shape) -> Dict[str, Any]:
    return {
        "dataset": dataset.name,
        "native_shape": list(dataset.image_shape),
        "scale": 255.0,
        "mean": list(dataset.mean), "std": list(dataset.std),
        "resize": "shorter_side_center_crop" if dataset.large else (
            "none" if dataset.image_shape[0] == input_shape[0] else "pad_or_resize"),
        "crop_pct": 0.875 if dataset.large else None,
        "interpolation": "bilinear",
        "channels": int(input_shape[2]),
    }


def publish(
    run_dir: os.PathLike,
    tag: str,
    release_dir: Optional[os.PathLike] = None,
    base_url: Optional[str] = None,
    manifest: Optional[os.PathLike] = None,
    eval_limit: Optional[int] = None,
    batch_size: int = EVAL_BATCH_SIZE,
    license: str = DEFAULT_LICENSE,
    notes: Optional[str] = None,
    supersede: bool = False,
) -> WeightSpec:
    """Turn a ``zoo train`` run directory into a published weight set.

    Writes ``{model}-{tag}-{sha[:8]}.h5`` (packed weights; ``include_top=False`` loads its
    body) into ``release_dir`` (default: the manifest's folder), evaluates it on the
    dataset's test split through the new record, and adds the record to
    the manifest (``manifest``, ``$ZOO_MANIFEST`` or weights/manifest.json). An existing
    ``model.tag`` is never overwritten silently: ``supersede=True`` replaces it with a
    retrained set that scores at least as well on the same test images, keeps the old
    record's files, metrics and command under ``"supersedes"`` and removes its files from
    the release folder (files are named by their hash: a cached old file never passes
    for the new one). Returns the new spec (attached to the registry when ``manifest``
    is the attached one).
    """
    run = Path(os.path.expanduser(str(run_dir)))
    weights_path = resolve_weights_path(run)
    config = run_config(weights_path)
    if config is None:
        raise WeightsError(f"{run} has no config.json: publish a run directory written by `zoo train`.")
    entry = get_entry(config["model"])
    tag = str(tag).strip().lower()
    if not TAG_RE.match(tag):
        raise InvalidInputError(f"Tag {tag!r} must be lowercase letters, digits and '_' (e.g. fashion_mnist).")
    key = f"{entry.name}.{tag}"
    mpath = manifest_path(manifest)
    previous = read_manifest_json(mpath)["records"].get(key)
    if previous is not None and not supersede:
        raise WeightsError(f"{key} is already published in {mpath}; a published weight set is never "
                           f"overwritten: choose a new tag (e.g. {tag}_v2), or --supersede to "
                           f"replace it with a retrained set (its record is kept as history).")
    if previous is None and supersede:
        raise InvalidInputError(f"--supersede: {key} is not published in {mpath}; nothing to replace "
                                f"(publish it without --supersede).")
    folder = Path(os.path.expanduser(str(release_dir))) if release_dir else mpath.parent
    folder.mkdir(parents=True, exist_ok=True)

    dataset = zdata.get_dataset(config["dataset"])
    input_shape = tuple(int(d) for d in config["input_shape"])
    num_classes = int(config.get("num_classes", dataset.num_classes))
    overrides = run_model_overrides(config, weights_path)

    top = load(entry.name, weights=weights_path, input_shape=input_shape, num_classes=num_classes,
               **overrides)
    compact_binary_kernels(top)
    costs = model_costs(top)
    created: List[Path] = []  # a failed or interrupted publish (SIGTERM too, see zoo.cli)
    try:  # removes the files it wrote (temporaries: save_hashed) and writes no record
        top_path, top_sha, top_size = save_hashed(top, folder, f"{entry.name}-{tag}", created)
        del top

        record = weight_set_record(
            entry.name, tag, dataset=dataset.name, input_shape=input_shape,
            num_classes=num_classes,
            top=file_record(top_path, top_sha, top_size,
                            _urls(base_url, entry.name, tag, top_path.name)),
            notop=None,  # the body of the packed top file
            preprocessing=_preprocessing_record(dataset, input_shape),
            labels=list(zdata.class_names(dataset)), model_overrides=overrides, costs=costs,
            recipe=config.get("recipe"), command=config.get("command"),
            versions=config.get("versions") or {}, license=license,
            source=f"zoo publish {run.name}", notes=notes, training=training_time(run))
        spec = WeightSpec.from_dict(key, record, str(folder.resolve()))
        # evaluate what a user gets: the verified top file, through the record, on the test split
        net = load(entry.name, weights=spec, input_shape=input_shape, num_classes=num_classes,
                   **overrides)
        results = evaluate_model(net, dataset, input_shape, batch_size=batch_size, limit=eval_limit)
        record["metrics"] = {"dataset": dataset.name, "split": dataset.test_split,
                             "examples": results["examples"], "top1": round(results["top1"], 4),
                             "top5": round(results["top5"], 4), "loss": round(results["loss"], 6)}
        if previous is None:
            add_record(mpath, key, record)  # published from here on
        else:
            _check_improves(key, previous, record["metrics"])
            record["supersedes"] = [superseded_entry(previous)] + list(previous.get("supersedes") or [])
            replace_record(mpath, key, record, previous)
    except BaseException:
        remove_unrecorded(created, mpath)
        raise
    if previous is not None:
        remove_unrecorded([folder / f["file"] for f in previous["files"].values() if f], mpath)
    write_results_csv(mpath)
    spec = WeightSpec.from_dict(key, record, str(folder.resolve()))
    if mpath.resolve() == manifest_path().resolve():
        record_published(spec)
    return spec
