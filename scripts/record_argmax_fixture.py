"""Record the predicted class of every Fashion-MNIST test image for published weight sets.

    python scripts/record_argmax_fixture.py [SET...]

Writes ``tests/fixtures/fashion_mnist_argmax.npz``: one int8 array of 10,000 classes per
set (``"model.tag"``) and the sha256 of the file each was recorded with. The test suite
checks that the files the manifest names now still predict the same classes (the check
that the packed format, or any later migration, changed no prediction). Naming sets
records them anew and keeps the others: after a set was retrained (``zoo publish
--supersede``), record it again.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "fashion_mnist_argmax.npz"
DEFAULT_SETS = ("binarynet.fashion_mnist", "binary_alexnet.fashion_mnist",
                "binary_densenet28.fashion_mnist")


def predicted_classes(key: str) -> np.ndarray:
    """The argmax of ``key``'s outputs over its dataset's full test split, in order."""
    import zoo
    from zoo import data as zdata
    from zoo.hub.spec import get_spec

    spec = get_spec(key)
    net = zoo.load(key)
    dataset = zdata.get_dataset(spec.dataset)
    images = zdata.make_dataset(dataset, "test", tuple(spec.input_shape), 500, training=False)
    classes = [np.argmax(net(x, training=False).numpy(), axis=-1) for x, _ in images]
    return np.concatenate(classes).astype(np.int8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", default=DEFAULT_SETS, metavar="MODEL.TAG")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import zoo.api  # noqa: F401  (registers the models and attaches the manifest)
    from zoo.hub.spec import get_spec

    arrays = dict(np.load(FIXTURE)) if FIXTURE.is_file() else {}  # other sets stay as recorded
    for key in args.sets:
        arrays[key] = predicted_classes(key)
        arrays[f"{key}.sha256"] = np.array(get_spec(key).top.sha256)
        print(f"{key}: {arrays[key].size} images, class counts {np.bincount(arrays[key]).tolist()}")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, **arrays)
    print(f"wrote {FIXTURE.relative_to(ROOT)} ({FIXTURE.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
