"""Shared test setup: quiet TensorFlow, Keras 2 via ``import zoo``, the ``slow`` marker,
and the helpers several test files use (tests/ is no package: pytest puts this folder on
``sys.path``, so test modules import them with ``from conftest import ...``).

- ``needs_fmnist`` / ``needs_fmnist_files``: skip marks when Fashion-MNIST is missing;
- ``invoke(cli, *args)``: the ``zoo`` command line in this process (click's CliRunner);
- ``assert_one_error_line(result, *needles)``: a user error is one ``Error:`` line, exit 2;
- ``start_zoo`` / ``run_zoo``: the installed ``zoo`` script as a real process.
"""
import ctypes
import gc
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import zoo  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)
import zoo.api  # noqa: E402,F401  (registers every model and attaches the published weight sets)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")


import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from zoo.memory import forget_custom_gradients  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ZOO = str(Path(sys.executable).parent / "zoo")  # the installed console script

# ----------------------------------------------------------------------------- Fashion-MNIST

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
FMNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_FMNIST_FILES_INSTALLED = all((FMNIST_DIR / name).is_file() for name in FMNIST_FILES)

# the raw files themselves (tests that read or link them)
needs_fmnist_files = pytest.mark.skipif(
    not _FMNIST_FILES_INSTALLED,
    reason="Fashion-MNIST files not installed (apt-get install dataset-fashion-mnist)")
# any source zoo loads it from: the raw files, or a tfds folder prepared before
needs_fmnist = pytest.mark.skipif(
    not _FMNIST_FILES_INSTALLED and not (Path.home() / "tensorflow_datasets" / "fashion_mnist").is_dir(),
    reason="Fashion-MNIST not available")


# ----------------------------------------------------------------------------- command line


def invoke(cli, *args, env=None):
    """Runs the click command ``cli`` with ``args`` in this process; an exception other than
    click's exit is raised here (with its traceback) instead of hiding in an exit code."""
    result = CliRunner().invoke(cli, [str(arg) for arg in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def assert_one_error_line(result, *needles, alone=True):
    """A user error: exit status 2, nothing on stdout, no traceback and one ``Error: ...``
    line on stderr holding every needle; ``alone=False`` allows other stderr lines (progress
    printed before the error). Returns the line."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and (not alone or len(lines) == 1), result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def zoo_env(**extra):
    """The environment for a ``zoo`` process: offline, plus ``extra``."""
    return {**os.environ, "ZOO_OFFLINE": "1", **extra}


def start_zoo(*args, env=None):
    """Starts ``zoo ARGS`` in the repository (stdout and stderr piped, as text)."""
    return subprocess.Popen([ZOO, *map(str, args)], cwd=REPO, env=env or zoo_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_zoo(*args, env=None, timeout=600, returncode=0):
    """Runs ``zoo ARGS`` to the end and checks its exit status; returns the CompletedProcess."""
    done = subprocess.run([ZOO, *map(str, args)], cwd=REPO, env=env or zoo_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == returncode, (done.returncode, done.stderr[-3000:])
    return done


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def fresh_session():
    """A clean Keras session and a fixed seed around a test."""
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    yield
    tf.keras.backend.clear_session()


try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc
    _LIBC = None


@pytest.fixture(autouse=True)
def _free_models_after_each_test():
    """A worker builds hundreds of models: free each test's now, not at module end (the
    gradients larq's quantizers registered keep every kernel alive otherwise; see
    zoo.memory). Module-scoped fixtures' models go too: their graphs are traced by then."""
    yield
    forget_custom_gradients()


@pytest.fixture(autouse=True, scope="module")
def _free_models_after_each_module():
    """Drop Keras' global state and collect garbage after every test module: a worker runs
    hundreds of modules' models, and without this two workers outgrow 24 GiB."""
    yield
    tf.keras.backend.clear_session()
    gc.collect()
    if _LIBC is not None:  # hand the freed heap back to the system (glibc keeps it otherwise)
        _LIBC.malloc_trim(0)


def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (``--dist loadgroup``), the tests that share a module-scoped fixture
    (a trained run, a built supernet, a weights server) run on one worker, so each such
    fixture is built once; every other test goes to whichever worker is free."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        session = [name for name in info.name2fixturedefs if name in SHARED_SESSION_FIXTURES]
        shared = [name for name, defs in info.name2fixturedefs.items()
                  if defs and defs[-1].scope == "module"]
        if session:  # the trained run that test_publish and test_preprocessing share: one worker
            item.add_marker(pytest.mark.xdist_group("session-fixtures"))
        elif shared:
            item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}:module-fixtures"))


# ----------------------------------------------------------------------------- weight sets


@pytest.fixture
def isolated_weights(tmp_path, monkeypatch):
    """A private weights cache and manifest; the default manifest is re-attached afterwards."""
    from zoo.hub import spec as zspec

    default_manifest = zspec.manifest_path()
    for var in ("ZOO_CACHE_PATH", "ZOO_MIRROR", "ZOO_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("ZOO_MANIFEST", str(tmp_path / "manifest" / "manifest.json"))
    monkeypatch.setenv("ZOO_DOWNLOAD_TIMEOUT", "20")
    tf.keras.backend.clear_session()
    yield tmp_path
    zspec.attach_manifest(default_manifest)
    tf.keras.backend.clear_session()


def cache_files(root=None):
    """Every file under the writable weights cache ($ZOO_HOME) except lock files."""
    root = Path(root or os.environ["ZOO_HOME"])
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and ".locks" not in p.parts)


TRAINED_MODEL, TRAINED_SHAPE, TRAINED_CLASSES = "birealnet18", (28, 28, 3), 10
# session fixtures whose tests run on one xdist worker, so each is built once
SHARED_SESSION_FIXTURES = ("run_dir", "_published")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A one-epoch `zoo train birealnet18` run on 256 Fashion-MNIST images (once per worker)."""
    from zoo.training import train

    output = tmp_path_factory.mktemp("run") / "birealnet18-fmnist"
    tf.keras.backend.clear_session()
    train(TRAINED_MODEL, "fashion_mnist", epochs=1, batch_size=64, limit=256, eval_limit=200,
          output=output, verbose=0, command="zoo train birealnet18 --epochs 1 --limit 256")
    return output


@pytest.fixture(scope="session")
def _published(run_dir, tmp_path_factory):
    from zoo.publish import publish

    release = tmp_path_factory.mktemp("release")  # the manifest's folder, as weights/ is
    manifest = release / "manifest.json"
    spec = publish(run_dir, "fmnist_test", release_dir=release, manifest=manifest, eval_limit=200)
    return spec, release, manifest


@pytest.fixture
def published(_published, isolated_weights):
    """``(spec, release folder, manifest)`` of `run_dir` published as birealnet18.fmnist_test,
    its manifest attached (the default one again after the test)."""
    from zoo.hub import spec as zspec

    zspec.attach_manifest(_published[2])
    return _published


TINY_BINARYNET = '{"filters": 8, "dense_units": 32}'  # a BinaryNet small enough for seconds per epoch


def summary_rows(run):
    """The rows of a run directory's summary.csv."""
    import csv

    with open(Path(run) / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------- every model

# Deeper / wider variants with the same downsampling as a model that is checked at its
# minimum size already: building them there again would only cost time.
SAME_SPATIAL_LAYOUT_AS = {
    "birealnet34": "birealnet18", "birealnet101": "birealnet50", "birealnet152": "birealnet50",
    "resnet34": "resnet18", "reactnet_b": "reactnet_a", "reactnet_c": "reactnet_a",
}


def model_names(at_min_size=False):
    """Every registered model (the parametrization of the every-model tests); with
    ``at_min_size``, without the variants whose downsampling a twin already covers."""
    from zoo.api import MODELS, get_entry, list_models

    names = []
    for name in list_models():
        if at_min_size and name in SAME_SPATIAL_LAYOUT_AS:
            twin = SAME_SPATIAL_LAYOUT_AS[name]
            if twin in MODELS and get_entry(twin).min_input_size == get_entry(name).min_input_size:
                continue
        names.append(name)
    return names
