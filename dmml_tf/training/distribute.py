"""Distribution strategies: every device of one machine, or every worker of a cluster.

`train.strategy` picks one from `STRATEGIES`:

    mirrored       `tf.distribute.MirroredStrategy` over this machine's devices (default).
    multi_worker   `tf.distribute.MultiWorkerMirroredStrategy` over the workers that the
                   `TF_CONFIG` environment variable lists; every host runs the same command.

With several workers, every worker takes the same global P x K batch stream (same seed)
and keeps only its contiguous slice of each batch, so worker w's replicas hold rows
`[w * B / W, (w + 1) * B / W)` of global batch b: `DM2Model`'s all-gather (in replica,
hence worker, order) rebuilds exactly the single-machine batch, and every image is still
seen once per epoch. Every worker runs the same program, including the writing (saving may
run collective ops, as TensorFlow's multi-worker guide warns), but only the chief writes
where the user looks: `worker_outputs` points the other workers' run and export
directories into a temporary directory that is removed when they finish.

A killed job is started again as a whole, with the same command on every host. The run
directory must be one folder that every host sees (a shared file system): the chief
saves the resumable checkpoint there and the other workers start from a copy of it;
`SameStepCheck` stops the run if the workers restored different steps.
"""

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from dmml_tf.errors import ClusterError, ConfigError


class MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`tf.distribute.MultiWorkerMirroredStrategy` that Keras 3's `fit` can drive.

    Two gaps between Keras 3.15 and TensorFlow 2.20 (keras-team/keras#20585) are closed:
    `fit` passes `reduce` a nested batch and scalar logs with `axis=0`, which this
    strategy's `reduce` rejects, so nests are reduced leaf by leaf and scalars across
    replicas only; and the input batches reach the replica function without a device,
    which `ReplicaContext.all_gather` needs, so they are placed on the replica's device.
    """

    def reduce(self, reduce_op, value, axis=None):
        def reduce_leaf(leaf):
            scalar = self.experimental_local_results(leaf)[0].shape.rank == 0
            return super(MultiWorkerStrategy, self).reduce(reduce_op, leaf, None if scalar else axis)

        return tf.nest.map_structure(reduce_leaf, value)

    def run(self, fn, args=(), kwargs=None, options=None):
        def on_replica_device(*args, **kwargs):
            args, kwargs = tf.nest.map_structure(
                lambda x: tf.identity(x) if tf.is_tensor(x) else x, (args, kwargs))
            return fn(*args, **kwargs)

        return super().run(on_replica_device, args, kwargs, options)


def read_tf_config(environ=None):
    """The cluster and this task from the `TF_CONFIG` JSON, checked.

    Args:
        environ: mapping or None. Where to read `TF_CONFIG`; `None` uses `os.environ`.
            Defaults to `None`.

    Returns:
        dict with `cluster` (job name -> list of `host:port`) and `task` (`type`, `index`).
    """
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG", "")
    hint = ("Set TF_CONFIG on every host, e.g. "
            '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
            '"task": {"type": "worker", "index": 0}} (README: Training on several machines), '
            "or use train.strategy=mirrored on one machine.")
    if not text.strip():
        raise ConfigError(f"train.strategy=multi_worker reads the cluster from the TF_CONFIG "
                          f"environment variable, which is not set. {hint}")
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        hosts = cluster[task["type"]]
        valid = (isinstance(hosts, list) and isinstance(task["index"], int)
                 and 0 <= task["index"] < len(hosts) and set(cluster) <= {"chief", "worker"})
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise ConfigError("TF_CONFIG must name a cluster of `chief`/`worker` host lists and "
                          f"this host's task type and index in it. {hint} Received: TF_CONFIG={text}")
    return tf_config


def _mirrored():
    return tf.distribute.MirroredStrategy()


def _multi_worker():
    read_tf_config()
    return MultiWorkerStrategy()


# train.strategy -> () -> tf.distribute.Strategy
STRATEGIES = {"mirrored": _mirrored, "multi_worker": _multi_worker}


def build_strategy(name):
    """The strategy `name` (a key of `STRATEGIES`).

    Call it before any other TensorFlow op: collective ops must be configured at startup.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"Config key `train.strategy` supports: {', '.join(STRATEGIES)}. "
                          f"Received: train.strategy={name!r}")
    return STRATEGIES[name]()


def is_chief(strategy):
    """Whether this process writes checkpoints, logs and exports: the `chief` task, else
    worker 0; always on one machine."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().jobs:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and \
        "chief" not in resolver.cluster_spec().jobs


def worker_slices(dataset, global_batch_size, worker, workers, local_replicas=1):
    """Worker `worker`'s part of every global batch: its contiguous slice, cut into one
    element per local replica (replicas take a worker's elements in turn).

    Args:
        dataset: `tf.data.Dataset` of global batches (tuples of tensors, batch axis first).
        global_batch_size: int. Rows in each global batch.
        worker: int. This worker's index.
        workers: int. Number of workers.
        local_replicas: int. Replicas on this worker. Defaults to `1`.
    """
    if global_batch_size % (workers * local_replicas):
        raise ConfigError(f"The global batch of {global_batch_size} images must split evenly "
                          f"across {workers * local_replicas} replicas; change "
                          f"data.classes_per_batch. Received: global batch {global_batch_size}")
    worker_rows = global_batch_size // workers
    start = worker * worker_rows

    def cut(*batch):
        return tuple(tf.reshape(t[start:start + worker_rows],
                                [local_replicas, worker_rows // local_replicas, *t.shape[1:]])
                     for t in batch)

    return dataset.map(cut).unbatch()


def distribute_batches(strategy, make_dataset, global_batch_size):
    """What `fit` takes: the global batches, sliced per worker under `MultiWorkerStrategy`.

    Args:
        strategy: `tf.distribute.Strategy`.
        make_dataset: callable `() -> tf.data.Dataset` of global batches, the same stream on
            every worker.
        global_batch_size: int. Rows in each global batch.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return make_dataset()  # Keras splits each batch across local devices in order.

    def worker_dataset(context):
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        return worker_slices(make_dataset(), global_batch_size, context.input_pipeline_id,
                             context.num_input_pipelines, local_replicas)

    return strategy.distribute_datasets_from_function(worker_dataset)


@contextlib.contextmanager
def worker_outputs(config, strategy, log=print):
    """`config` on the chief; on other workers a copy that writes into a temporary folder.

    The copy's `run_directory` starts as a copy of the chief's run folder of this dataset
    (so a restarted worker resumes from the chief's checkpoint); the folder is removed on
    exit.

    Args:
        config: `dmml_tf.config.Config`.
        strategy: `tf.distribute.Strategy`.
        log: callable. Says where a non-chief worker writes. Defaults to `print`.
    """
    if is_chief(strategy):
        yield config
        return
    scratch = Path(tempfile.mkdtemp(prefix="dmml_tf_worker_"))
    log(f"      not the chief: this worker writes into {scratch} (removed at the end); "
        f"the chief writes {config.run_directory} and {config.export.directory}")
    try:
        copy = dataclasses.replace(
            config, run_directory=str(scratch / "runs"),
            export=dataclasses.replace(config.export, directory=str(scratch / "saved_models")))
        if config.run_folder().is_dir():
            shutil.copytree(config.run_folder(), copy.run_folder())
        yield copy
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def lost_worker_error(run_directory):
    """Turn the collective error that a lost peer causes into a `ClusterError` saying how
    to resume.

    Args:
        run_directory: str or Path. The chief's run folder, named in the message.
    """
    try:
        yield
    except tf.errors.UnavailableError as error:
        # The first two lines say which task stopped, after the failing op's name in {{...}}.
        cause = re.sub(r"\{\{.*?\}\}\s*", "", " ".join(error.message.strip().splitlines()[:2]))
        raise ClusterError(f"A worker of the cluster stopped ({cause}). Start the whole job "
                           "again with the same command on every host: training resumes from "
                           f"the last checkpoint in {run_directory}.") from None


class SameStepCheck(keras.callbacks.Callback):
    """Stop with a `ConfigError` when the workers start `fit` at different optimizer steps,
    i.e. restored different checkpoints. Put it after the checkpoint callback."""

    def on_train_begin(self, logs=None):
        strategy = self.model.distribute_strategy
        step = tf.reshape(tf.cast(self.model.optimizer.iterations, tf.int64), [1])
        steps = strategy.gather(strategy.experimental_distribute_values_from_function(
            lambda context: step), axis=0).numpy().tolist()
        if len(set(steps)) > 1:
            raise ConfigError(f"The workers restored different checkpoints (steps {steps}): "
                              "`run_directory` is not one folder that every host sees. Put it "
                              "on shared storage (NFS, a ReadWriteMany volume), then start the "
                              "whole job again.")
