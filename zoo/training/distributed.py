"""Distribution strategies for ``zoo train --strategy``.

- ``default``: one device (TensorFlow's default strategy).
- ``mirrored``: synchronous data parallelism over the GPUs of this machine (over its
  logical CPU devices when it has no GPU), one model replica per device.
- ``multiworker``: the same over several machines; each runs the same command with
  its own ``TF_CONFIG`` (the cluster's ``worker`` addresses and this task's index).
  Worker 0 (the chief) writes the run directory; the others train the same steps
  and write their copies of the files to a temporary folder that is removed.
- ``tpu``: a Cloud TPU, named by ``TPU_NAME`` (``local`` on a TPU VM).

``--batch-size`` is the global batch: every step, each of the N replicas gets
``batch / N`` images and the gradients are summed over the replicas of the
per-replica loss divided by N, so one step equals a single-device step on the
whole batch (up to float summation order). Batch normalisation computes its
statistics per replica (the papers' PyTorch DataParallel code does the same), on
``batch / N`` images.
"""
from __future__ import annotations

import json
import sys
from typing import Dict, Optional, Tuple

import tensorflow as tf

from zoo import settings
from zoo.errors import InvalidInputError, ZooError

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")

_CACHE: Dict[str, tf.distribute.Strategy] = {}


def parse_tf_config(text: Optional[str] = None) -> Tuple[Dict, str, int]:
    """``(cluster, task_type, task_index)`` of a ``TF_CONFIG`` (default: the environment's)."""
    text = settings.tf_config() if text is None else text
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not text.strip():
        raise InvalidInputError(
            f"--strategy multiworker needs TF_CONFIG in the environment of every worker, e.g. {example}.")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        task_type, index = str(task["type"]), int(task["index"])
        workers = list(cluster.get("worker", [])) + list(cluster.get("chief", []))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InvalidInputError(f"TF_CONFIG is not valid ({error}); it should look like {example}.") from error
    if not workers:
        raise InvalidInputError(f"TF_CONFIG lists no workers; it should look like {example}.")
    if task_type not in cluster or not 0 <= index < len(cluster[task_type]):
        raise InvalidInputError(
            f"TF_CONFIG task {task_type}:{index} is not in its cluster {sorted(cluster)}; {example}.")
    return cluster, task_type, index


def _mirrored() -> tf.distribute.Strategy:
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


HEARTBEAT_TIMEOUT_S = 120  # TensorFlow's 10 s declares a busy worker dead on loaded CPU hosts


def _configure_coordination(cluster: Dict) -> None:
    """The coordination service MultiWorkerMirroredStrategy would set up, with a longer
    heartbeat timeout (private TensorFlow API: skipped if it moved)."""
    try:
        from tensorflow.core.protobuf import coordination_config_pb2
        from tensorflow.python.distribute import multi_worker_util
        from tensorflow.python.eager import context

        if context.context().coordination_service is not None:
            return
        spec = tf.train.ClusterSpec(cluster)
        jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
                for job in ("chief", "worker") if job in spec.jobs]
        context.context().configure_coordination_service(
            service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
            coordinated_jobs=jobs, heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_S * 1000)
    except (ImportError, AttributeError, TypeError):
        pass


def _multiworker() -> tf.distribute.Strategy:
    cluster, _, _ = parse_tf_config()
    _configure_coordination(cluster)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:
        if "startup" in str(error):
            raise ZooError("--strategy multiworker must start before TensorFlow runs anything in this "
                           "process: run `zoo train` in a fresh process.") from error
        raise


def _tpu() -> tf.distribute.Strategy:
    name = settings.tpu_name()
    hint = ("Set TPU_NAME to the TPU's name or grpc:// address (`local` on a Cloud TPU VM), or use "
            "--strategy mirrored.")
    if not name:
        raise ZooError(f"--strategy tpu: no TPU named (TPU_NAME is not set). {hint}")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except Exception as error:  # noqa: BLE001 - every failure here means "no TPU reachable"
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ZooError(f"--strategy tpu: TPU {name!r} is not reachable ({first}). {hint}") from error


def check_strategy_name(name: Optional[str]) -> str:
    key = (name or "default").strip().lower()
    if key not in STRATEGIES:
        raise InvalidInputError(f"Unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}.")
    return key


def get_strategy(name: Optional[str] = None) -> tf.distribute.Strategy:
    """The strategy ``name`` (one of STRATEGIES; None: default), created once per process."""
    key = check_strategy_name(name)
    if key == "default":
        return tf.distribute.get_strategy()
    if key not in _CACHE:
        _CACHE[key] = {"mirrored": _mirrored, "multiworker": _multiworker, "tpu": _tpu}[key]()
    return _CACHE[key]


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory (always, except non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None or task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def describe(strategy: tf.distribute.Strategy) -> str:
    kinds = [(tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"),
             (tf.distribute.MirroredStrategy, "MirroredStrategy"), (tf.distribute.TPUStrategy, "TPUStrategy")]
    kind = next((label for cls, label in kinds if isinstance(strategy, cls)), type(strategy).__name__)
    return f"{kind} with {strategy.num_replicas_in_sync} replica(s)"


def per_replica_batch(strategy: tf.distribute.Strategy, batch_size: int) -> int:
    """Each replica's share of the global batch; warns when it does not divide evenly."""
    replicas = strategy.num_replicas_in_sync
    if batch_size < replicas:
        raise InvalidInputError(
            f"batch size {batch_size} is smaller than the {replicas} replicas: use --batch-size >= {replicas}.")
    if batch_size % replicas:
        print(f"(batch {batch_size} does not divide over {replicas} replicas: some replicas get one "
              f"image more than others)", file=sys.stderr)
    return batch_size // replicas


def _smallest_bad_batch(batch_size: int, replicas: int) -> int:
    """A batch of this many images or fewer leaves the last replica without any: the
    global batch is split in order, ``batch_size // replicas`` per replica."""
    return batch_size - batch_size // replicas


def distribute_dataset(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy,
                       batch_size: Optional[int] = None, examples: Optional[int] = None) -> tf.data.Dataset:
    """Prepares a batched pipeline for ``strategy``.

    Multi-worker: shards by data, not by file: every worker reads the same seeded
    pipeline and keeps its part of each global batch. Several replicas and
    ``batch_size`` given: drops a last partial batch so small that a replica would
    get no image (TensorFlow's CPU convolution fails on an empty batch); at most
    ``batch_size - batch_size // replicas`` images of an epoch."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = dataset.with_options(options)
    replicas = strategy.num_replicas_in_sync
    if replicas > 1 and batch_size:
        smallest = _smallest_bad_batch(batch_size, replicas)
        rest = examples % batch_size if examples else None
        if rest is None or 0 < rest <= smallest:
            if rest:
                print(f"(the last {rest} images of each epoch are skipped: too few for "
                      f"{replicas} replicas)", file=sys.stderr)
            dataset = dataset.filter(lambda images, *_: tf.shape(images)[0] > smallest)
    return dataset


def eval_batch_size(examples: int, batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """An evaluation batch size near ``batch_size`` whose last batch still gives every
    replica an image (evaluation must see every example, it cannot drop any)."""
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return batch_size
    batch = max(replicas, batch_size - batch_size % replicas)
    while batch >= replicas:
        rest = examples % batch
        if rest == 0 or rest > _smallest_bad_batch(batch, replicas):
            return batch
        batch -= replicas
    return batch_size
