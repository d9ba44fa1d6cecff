"""Repack published weight sets into the packed format, in place.

    python scripts/repack_weights.py MODEL.TAG [MODEL.TAG ...] [--batch 500]
    python scripts/repack_weights.py --float16-effect MODEL.TAG ...   (measures only)
    python scripts/repack_weights.py --report   (the storage table of every published set)

For each set of the manifest (``$ZOO_MANIFEST`` or weights/manifest.json): builds the
model with the set's recorded overrides, loads its Keras h5 files, writes one packed
file named by its hash (``zoo.publish.save_hashed``), and checks that the new file
gives the same weights bit for bit, the same body as the old no-top file, and the same
predictions on a batch of the set's real test images (argmax equal; the largest
softmax difference is printed). Then the record gets the new file (name, sha256,
size, URLs; same tag, same metrics), ``results.csv`` is rewritten, and the old files
are removed. A set whose binary kernels are not stored as sign x scale (latent
weights: packing them at one bit would change its outputs) is refused, and left as it
is. Prints per set: bits per binary weight (scales counted), file size against its
minimum (binary weights at 1 bit, real parameters at 32), old and new size.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


class Refused(Exception):
    pass


class AlreadyPacked(Exception):
    pass


def _probabilities(outputs: np.ndarray) -> np.ndarray:
    """Softmax outputs as they are; logits through a softmax."""
    if np.all(outputs >= 0) and np.allclose(outputs.sum(-1), 1.0, atol=1e-3):
        return outputs
    shifted = np.exp(outputs - outputs.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _binary_kernels_not_packed(model, layout_binary: set) -> list:
    """Names of 1-bit quantized kernels the packed file stores as floats."""
    missing = []
    for layer in model.submodules:
        quantizer = getattr(layer, "kernel_quantizer", None)
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and getattr(quantizer, "precision", None) == 1 \
                and kernel.name not in layout_binary:
            missing.append(layer.name)
    return missing


def repack(key: str, batch: int) -> dict:
    import tensorflow as tf

    import zoo
    from zoo import data as zdata
    from zoo import publish as zpublish
    from zoo.hub import packed
    from zoo.hub.cache import fetch
    from zoo.hub.spec import get_spec, manifest_path, read_manifest_json, thaw
    from zoo.runs import write_json_atomically

    spec = get_spec(key)
    folder = Path(spec.origin)
    old_files = [folder / wf.file for wf in spec.files()]
    if packed.is_packed(fetch(spec)):
        raise AlreadyPacked(f"already packed ({spec.top.file}), left as it is")
    overrides = thaw(spec.model_overrides)
    shape = tuple(spec.input_shape)
    dataset = zdata.get_dataset(spec.dataset)
    images = next(iter(zdata.make_dataset(dataset, "test", shape, batch, training=False)))[0]

    tf.keras.backend.clear_session()
    old = zoo.load(spec.model, weights=spec)  # the Keras h5 top file, overrides applied
    old_out = _probabilities(old(images, training=False).numpy())
    old_weights = old.get_weights()
    old_body = zoo.load(spec.model, weights=spec, include_top=False).get_weights() \
        if spec.notop is not None else None

    path, sha256, size = zpublish.save_hashed(old, folder, f"{spec.model}-{spec.tag}")
    created = path not in old_files
    try:
        stats = packed.summary(path)
        latent = _binary_kernels_not_packed(old, set(packed.binary_weight_names(path)))
        recorded = int(spec.costs.get("binary_params") or 0)  # larq's count of 1-bit weights
        if not latent and stats["binary_weights"] < recorded:
            latent = [f"{recorded - stats['binary_weights']} of {recorded} binary weights"]
        if latent:
            raise Refused(
                f"{key}: {len(latent)} binary kernel(s) are not stored as sign x scale per output "
                f"channel ({', '.join(latent[:4])}{' ...' if len(latent) > 4 else ''}): the set "
                f"holds latent weights, which one bit per weight cannot reproduce exactly. "
                f"Republish it with `zoo publish` (which compacts binary kernels) instead.")
        del old
        tf.keras.backend.clear_session()
        new = zoo.load(spec.model, weights=path, input_shape=shape, num_classes=spec.num_classes,
                       **overrides)
        changed = [i for i, (a, b) in enumerate(zip(old_weights, new.get_weights()))
                   if a.dtype != b.dtype or not np.array_equal(a, b)]
        new_out = _probabilities(new(images, training=False).numpy())
        diff = float(np.max(np.abs(new_out - old_out)))
        same_argmax = bool(np.array_equal(new_out.argmax(-1), old_out.argmax(-1)))
        if changed or not same_argmax or diff > 1e-6:
            raise Refused(f"{key}: the packed file differs from the old one ({len(changed)} weight "
                          f"arrays changed, argmax equal: {same_argmax}, max |softmax diff| "
                          f"{diff:.3g}); the set is left as it is.")
        if old_body is not None:
            body = zoo.load(spec.model, weights=path, include_top=False, input_shape=shape,
                            **overrides).get_weights()
            if len(body) != len(old_body) or not all(np.array_equal(a, b) for a, b in zip(body, old_body)):
                raise Refused(f"{key}: the body of the packed file differs from the old no-top file.")
    except BaseException:
        if created:
            path.unlink(missing_ok=True)
        raise

    mpath = manifest_path()
    with zpublish._manifest_lock(mpath):
        data = read_manifest_json(mpath)
        record = data["records"][key]
        old_top = record["files"]["top"]
        urls = [u.replace(old_top["file"], path.name) for u in old_top.get("urls") or []]
        record["files"] = {"top": {"file": path.name, "sha256": sha256, "size": size, "urls": urls},
                           "notop": None}
        write_json_atomically(mpath, data)
        named = {f["file"] for r in data["records"].values()
                 for f in (r.get("files") or {}).values() if f}
    zpublish.write_results_csv(mpath)
    old_size = sum(p.stat().st_size for p in old_files)
    for old_path in old_files:
        if old_path.name not in named:
            old_path.unlink(missing_ok=True)
    minimum = stats["binary_weights"] / 8 + 4 * stats["real_params"]
    return {"set": key, "file": path.name, "binary_weights": stats["binary_weights"],
            "real_params": stats["real_params"], "bits": stats["bits_per_binary_weight"],
            "size": size, "minimum": minimum, "old_size": old_size, "softmax_diff": diff,
            "examples": int(images.shape[0])}


def float16_effect(key: str, batch: int) -> str:
    """What rounding a set's real parameters to float16 would do to its outputs (measured
    only; nothing is written): the share of changed classes and the largest softmax change."""
    import zoo
    from zoo import data as zdata
    from zoo.hub import packed
    from zoo.hub.spec import get_spec

    spec = get_spec(key)
    net = zoo.load(key)
    images = next(iter(zdata.make_dataset(zdata.get_dataset(spec.dataset), "test",
                                          tuple(spec.input_shape), batch, training=False)))[0]
    before = _probabilities(net(images, training=False).numpy())
    net.set_weights([w if packed.binary_scales(w) is not None or w.dtype != np.float32
                     else w.astype(np.float16).astype(np.float32) for w in net.get_weights()])
    after = _probabilities(net(images, training=False).numpy())
    changed = int(np.sum(before.argmax(-1) != after.argmax(-1)))
    return (f"{key}: float16 real parameters change {changed} of {len(images)} classes "
            f"({100 * changed / len(images):.1f}%), max |softmax diff| {np.abs(after - before).max():.3g}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", metavar="MODEL.TAG")
    parser.add_argument("--batch", type=int, default=500, help="test images compared per set")
    parser.add_argument("--float16-effect", action="store_true",
                        help="only measure what float16 real parameters would change; write nothing")
    parser.add_argument("--report", action="store_true",
                        help="only print the storage table of every published set; write nothing")
    args = parser.parse_args(argv)
    if not args.sets and not args.report:
        parser.error("name the sets to repack (MODEL.TAG ...), or --report")
    sys.path.insert(0, str(ROOT))
    if args.report:
        from benchmarks.zoo_table import storage_table
        from zoo.hub.spec import manifest_path

        print(storage_table(manifest_path().parent))
        return 0
    import zoo.api  # noqa: F401  (registers the models and attaches the manifest)

    if args.float16_effect:
        for key in args.sets:
            print(float16_effect(key, args.batch), flush=True)
        return 0

    rows, refused = [], []
    header = (f"{'weight set':<42} {'bits/binary':>11} {'size':>10} {'minimum':>10} "
              f"{'x min':>6} {'old size':>10} {'new/old':>7} {'max|dsoftmax|':>13}")
    print(header)
    for key in args.sets:
        try:
            row = repack(key, args.batch)
        except AlreadyPacked as error:
            print(f"{key:<42} {error}", flush=True)
            continue
        except Refused as error:
            refused.append(key)
            print(f"{key:<42} refused: {error}", flush=True)
            continue
        rows.append(row)
        print(f"{key:<42} {row['bits']:>11.4f} {row['size']:>10,} {row['minimum']:>10,.0f} "
              f"{row['size'] / row['minimum']:>6.3f} {row['old_size']:>10,} "
              f"{row['size'] / row['old_size']:>7.3f} {row['softmax_diff']:>13.3g}", flush=True)
    if rows:
        new, old = sum(r["size"] for r in rows), sum(r["old_size"] for r in rows)
        minimum = sum(r["minimum"] for r in rows)
        print(f"{'total (' + str(len(rows)) + ' sets)':<42} {'':>11} {new:>10,} {minimum:>10,.0f} "
              f"{new / minimum:>6.3f} {old:>10,} {new / old:>7.3f}")
    if refused:
        print(f"Error: refused {len(refused)} set(s): {', '.join(refused)} (see above).", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
