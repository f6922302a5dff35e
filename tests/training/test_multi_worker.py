"""Training on several machines: MultiWorkerMirroredStrategy with real worker processes.

The slow tests start `python main.py --strategy multi_worker` twice on 127.0.0.1, with
ports chosen free at run time, as two hosts would; every subprocess has a timeout, so a
hung collective fails the test instead of blocking it.
"""

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from dmml_tf.config import load_config
from dmml_tf.data.sampler import batch_indices, steps_per_epoch
from dmml_tf.errors import ConfigError
from dmml_tf.training.distribute import is_chief, read_tf_config, worker_slices

ROOT = Path(__file__).resolve().parents[2]
# A tiny run whose views are deterministic (a 32 -> 32 px resize), so that one process
# and two workers see the very same pixels.
TINY = ("--smoke", "--set", "model.backbone=tiny_cnn", "--set", "model.weights=null",
        "--set", "evaluate.backend=exact", "--set", "evaluate.every_epochs=0",
        "--set", "views.policy=[{Resizing: {height: 32, width: 32}}]")
TIMEOUT_S = 240


def global_batches(batches, batch_size):
    """Batches whose rows are `(b * 100 + row, -row)`: each row says where it came from."""
    rows = np.arange(batches * batch_size).reshape(batches, batch_size)
    ids = rows // batch_size * 100 + rows % batch_size
    return tf.data.Dataset.from_tensor_slices((ids, -(ids % 100)))


@pytest.mark.parametrize("workers, local_replicas", [(2, 1), (4, 1), (2, 2)],
                         ids=["2_workers", "4_workers", "2_workers_2_replicas_each"])
def test_worker_slices_in_replica_order_rebuild_every_global_batch(workers, local_replicas):
    batch_size, batches = 16, 3
    parts = [list(worker_slices(global_batches(batches, batch_size), batch_size, w, workers,
                                local_replicas).as_numpy_iterator()) for w in range(workers)]
    replica_rows = batch_size // (workers * local_replicas)
    for b in range(batches):
        # Replica r of worker w takes that worker's elements r, r + L, r + 2L, ...
        gathered = [parts[w][b * local_replicas + r] for w in range(workers)
                    for r in range(local_replicas)]
        assert all(len(ids) == replica_rows for ids, _ in gathered)
        np.testing.assert_array_equal(np.concatenate([ids for ids, _ in gathered]),
                                      b * 100 + np.arange(batch_size))
        np.testing.assert_array_equal(np.concatenate([labels for _, labels in gathered]),
                                      -np.arange(batch_size))


LOCAL_REPLICAS_SCRIPT = """
import json, tensorflow as tf
from dmml_tf.training.distribute import worker_slices
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
batches = tf.data.Dataset.range(48).batch(8).map(lambda ids: (ids, -ids))
def per_worker(context):
    local = context.num_replicas_in_sync // context.num_input_pipelines
    return worker_slices(batches, 8, context.input_pipeline_id, context.num_input_pipelines, local)
@tf.function
def step(batch):
    return strategy.run(lambda ids, labels: tf.distribute.get_replica_context().all_gather(
        tf.identity(ids), axis=0), args=batch)
gathered = [strategy.experimental_local_results(step(batch))[0].numpy().tolist()
            for batch in strategy.distribute_datasets_from_function(per_worker)]
print(json.dumps(gathered))
"""


@pytest.mark.slow
def test_local_replicas_take_their_slices_in_order():
    """Two replicas on one worker (2 logical CPUs): the all-gather of their elements is the
    global batch, so elements reach local replicas in turn, as `worker_slices` assumes."""
    result = subprocess.run([sys.executable, "-c", LOCAL_REPLICAS_SCRIPT], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    gathered = json.loads(result.stdout.strip().splitlines()[-1])
    assert gathered == np.arange(48).reshape(6, 8).tolist()


def test_workers_together_see_every_image_of_an_epoch_once():
    labels = np.repeat(np.arange(7), [5, 4, 4, 9, 2, 6, 4])  # uneven classes
    classes_per_batch, images_per_class, workers = 4, 2, 2
    steps = steps_per_epoch(labels, classes_per_batch, images_per_class)
    stream = batch_indices(labels, classes_per_batch, images_per_class, seed=3)
    epoch = np.stack([next(stream) for _ in range(steps)])
    seen = [np.concatenate([ids for ids, _ in worker_slices(
        tf.data.Dataset.from_tensor_slices((epoch, epoch)), epoch.shape[1], w,
        workers).as_numpy_iterator()]) for w in range(workers)]
    assert len(seen[0]) == len(seen[1]) == epoch.size // 2
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.sort(epoch.ravel()))
    assert set(np.concatenate(seen)) == set(range(len(labels)))


def test_worker_slices_reject_a_batch_that_does_not_split():
    with pytest.raises(ConfigError, match="must split evenly across 3 replicas"):
        worker_slices(global_batches(1, 16), 16, 0, 3)


def tf_config(ports, index, task_type="worker", chief=None):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    if chief:
        cluster["chief"] = [f"127.0.0.1:{chief}"]
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize(
    "task_type, index, with_chief, expected",
    [("worker", 0, False, True), ("worker", 1, False, False), ("worker", 0, True, False),
     ("chief", 0, True, True)],
    ids=["worker0_is_chief", "worker1", "worker0_beside_a_chief", "chief"])
def test_is_chief_follows_tf_config(monkeypatch, task_type, index, with_chief, expected):
    monkeypatch.setenv("TF_CONFIG", tf_config([2001, 2002], index, task_type, 2000 if with_chief else None))
    strategy = types.SimpleNamespace(
        cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver())
    assert is_chief(strategy) is expected


def test_one_machine_is_always_chief():
    assert is_chief(tf.distribute.get_strategy())


@pytest.mark.parametrize(
    "text, message",
    [("", "which is not set"), ("{cluster", "TF_CONFIG must name a cluster"),
     (tf_config([2001, 2002], 2), "TF_CONFIG must name a cluster"),
     (tf_config([2001], 0, "ps"), "TF_CONFIG must name a cluster")],
    ids=["unset", "not_json", "index_out_of_range", "unknown_task_type"])
def test_bad_tf_config_is_a_config_error(text, message):
    with pytest.raises(ConfigError, match=message):
        read_tf_config({"TF_CONFIG": text})


def test_strategy_key_is_checked():
    assert load_config(None, ["train.strategy=multi_worker"]).train.strategy == "multi_worker"
    with pytest.raises(ConfigError, match="`train.strategy` supports: mirrored, multi_worker"):
        load_config(None, ["train.strategy=parameter_server"])


@pytest.mark.slow
def test_multi_worker_without_tf_config_says_what_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "--strategy", "multi_worker"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 2
    assert "error: train.strategy=multi_worker reads the cluster from the TF_CONFIG" in result.stderr
    assert "Traceback" not in result.stderr


def free_ports(count):
    """`count` distinct ports that 127.0.0.1 has free now (bound to port 0, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_job(cwd, args, name, worker_cwds=None):
    """Both workers of a 2-host job (worker 0 is the chief), output in `cwd/<name>.<i>.log`.

    The workers run in `cwd`, a folder both hosts share, or in `worker_cwds`.
    """
    ports = free_ports(2)
    workers = []
    for index, worker_cwd in enumerate(worker_cwds or [cwd, cwd]):
        log = open(cwd / f"{name}.{index}.log", "w")
        env = {**os.environ, "TF_CONFIG": tf_config(ports, index)}
        workers.append(subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), *TINY, *args, "--strategy", "multi_worker"],
            cwd=worker_cwd, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    return workers


def finish(workers, deadline):
    """Wait for every worker until `deadline` (time.monotonic); kill all on a hang."""
    try:
        return [worker.wait(timeout=max(deadline - time.monotonic(), 0.1)) for worker in workers]
    except subprocess.TimeoutExpired:
        for worker in workers:
            worker.kill()
            worker.wait()
        pytest.fail("a worker hung: killed after the timeout")


def losses(run_directory):
    with open(run_directory / "history.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def scratch_folder(log_text):
    """The temporary folder a non-chief worker says it writes into."""
    return Path(re.search(r"this worker writes into (\S+)", log_text).group(1))


@pytest.mark.slow
def test_two_workers_give_the_single_process_loss_and_only_the_chief_writes(tmp_path):
    # One optimizer step per epoch, so history.csv holds the loss of every step.
    args = ("--set", "train.epochs=4", "--set", "train.max_steps_per_epoch=1")
    single = tmp_path / "single"
    single.mkdir()
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), *TINY, *args], cwd=single,
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    job = tmp_path / "job"
    job.mkdir()
    codes = finish(start_job(job, args, "run"), time.monotonic() + TIMEOUT_S)
    logs = [(job / f"run.{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]

    expected, got = losses(single / "runs/emoji_styles"), losses(job / "runs/emoji_styles")
    assert len(expected) == 4 and len(set(expected)) == 4  # four different steps
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    print(f"per-step loss, 1 process: {expected}; 2 workers: {got}; largest relative "
          f"difference {np.max(np.abs(np.subtract(got, expected)) / np.abs(expected)):.1e}")
    # The chief wrote the outputs; the other worker's scratch folder is gone.
    def exported(root):
        return sorted(p.name for p in (root / "saved_models/emoji_styles").iterdir())

    assert "ensemble" in exported(single) and exported(job) == exported(single)
    assert (job / "runs/emoji_styles/metrics.json").is_file()
    assert "not the chief" not in logs[0]
    assert not scratch_folder(logs[1]).exists()


@pytest.mark.slow
def test_a_killed_worker_job_restarts_and_resumes_from_the_last_checkpoint(tmp_path):
    args = ("--set", "train.epochs=4", "--set", "train.checkpoint_every_steps=2")
    backup = tmp_path / "runs/emoji_styles/backup"
    workers = start_job(tmp_path, args, "first")
    deadline = time.monotonic() + TIMEOUT_S
    while not (backup / "latest.weights.h5").is_file():  # written whole, then renamed
        assert all(worker.poll() is None for worker in workers), "a worker stopped early"
        assert time.monotonic() < deadline, "no checkpoint before the timeout"
        time.sleep(0.05)
    workers[1].send_signal(signal.SIGKILL)  # mid-run: the first checkpoint was just saved
    workers[1].wait()
    killed = time.monotonic()
    # The chief misses the peer's heartbeats and stops with one error line; a scheduler
    # then starts the whole job again with the same command.
    chief_code = finish(workers[:1], time.monotonic() + 90)[0]
    chief_seconds = time.monotonic() - killed
    assert chief_code == 2
    assert "error: A worker of the cluster stopped" in (tmp_path / "first.0.log").read_text()
    assert not (tmp_path / "runs/emoji_styles/metrics.json").exists()  # it did not finish

    # Restarted where worker 1 cannot see the chief's run folder, the workers would start
    # from different steps: refused.
    elsewhere = tmp_path / "not_shared"
    elsewhere.mkdir()
    codes = finish(start_job(tmp_path, args, "unshared", [tmp_path, elsewhere]),
                   time.monotonic() + TIMEOUT_S)
    assert codes == [2, 2]
    assert "error: The workers restored different checkpoints (steps [" in \
        (tmp_path / "unshared.0.log").read_text()

    codes = finish(start_job(tmp_path, args, "again"), time.monotonic() + TIMEOUT_S)
    logs = [(tmp_path / f"again.{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    # Both workers restored the chief's checkpoint (saved every 2 steps).
    steps = [int(re.search(r"resuming from \S+: step (\d+)", log).group(1)) for log in logs]
    assert steps[0] == steps[1] >= 2 and steps[0] % 2 == 0
    assert (tmp_path / "runs/emoji_styles/metrics.json").is_file()
    assert not backup.exists()  # a finished run removes its checkpoint
    assert not (elsewhere / "runs").exists()  # worker 1 wrote only into its scratch folder
    print(f"chief exit code {chief_code}, {chief_seconds:.0f} s after its peer was killed; "
          f"resumed at step {steps[0]}")
