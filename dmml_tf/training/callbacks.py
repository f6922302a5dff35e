"""Callbacks for `fit`: retrieval evaluation during training, and export of the best model.

Both work with a `DM2Model` (every member, shadow and ensemble is evaluated) and with any
other embedding `keras.Model` (evaluated as `model`). Put `RetrievalEvaluation` before
`ExportBest`, `CSVLogger` and `TensorBoard` in the callback list: it adds metrics to
the epoch's logs, as `"<network>/<metric>"` (e.g. `"ensemble/recall@1"`), and the
callbacks after it see them.
"""

import json
import time
from pathlib import Path

import keras

from dmml_tf.config import DataConfig, EvaluateConfig, ExportConfig
from dmml_tf.errors import ConfigError
from dmml_tf.export import export_embedder
from dmml_tf.retrieval.evaluate import embed_networks, evaluate_embeddings, terminal_progress
from dmml_tf.training.checkpoints import save_weights_whole
from dmml_tf.training.dm2 import DM2Model


def evaluated_networks(model):
    """The networks to evaluate and the ensembles among them (see `embed_networks`)."""
    if not isinstance(model, DM2Model):
        return {"model": model}, {}
    networks = model.networks()
    ensembles = {"ensemble": [name for name in networks if name.startswith("member")],
                 "shadow_ensemble": [name for name in networks if name.startswith("shadow")
                                     and name != "shadow_ensemble"]}
    return networks, ensembles


class RetrievalEvaluation(keras.callbacks.Callback):
    """Computes retrieval metrics on held-out images every few epochs and tracks the best.

    Each evaluation embeds `images` with every network in inference mode and computes
    Recall@K, MAP@R, R-Precision and NMI (`dmml_tf.retrieval.evaluate.retrieval_metrics`);
    all go into `history`, the `logged_metrics` and `monitor` into the epoch's logs (and so
    into Keras' progress line, `History`, `CSVLogger`, `TensorBoard`), and one line is
    printed.

    Args:
        images: array of shape `(N, H, W, 3)` in [0, 255], or a batched
            `tf.data.Dataset` of images or `(images, labels)`. Test or validation images,
            of classes not trained on: the queries, and the gallery unless `gallery`.
        labels: int array of shape `(N,)`. Their class labels.
        every_epochs: int. Evaluate after every this many epochs; 0 never evaluates
            during training. Defaults to `4`.
        monitor: str. `"<network>/<metric>"` that picks the best epoch (higher is
            better). Defaults to `"ensemble/recall@1"`; use `"model/recall@1"` for a
            plain embedding model.
        recall_at: sequence of int. The K of Recall@K. Defaults to `(1, 2, 4, 8)`.
        backend: str. `"scann"` or `"exact"`. Defaults to `"scann"`.
        exact_below: int. ScaNN scores galleries smaller than this exactly.
            Defaults to `20000`.
        scann_check_queries: int. Queries on which ScaNN's recall against exact search is
            measured. Defaults to `1000`.
        batch_size: int. Embedding batch size for arrays. Defaults to `64`.
        logged_metrics: sequence of str. The metrics of every network put into the logs.
            Defaults to `("recall@1",)`.
        history_path: str or `Path` or `None`. A JSON file that gets `history` after each
            evaluation; `resume` reads it back. Defaults to `None`.
        best_weights_path: str or `Path` or `None`. A `.weights.h5` file that gets the
            model's weights (and optimizer state) whenever `monitor` improves.
            Defaults to `None`.
        log: callable taking one str. Defaults to `print`.
        gallery: pair `(images, labels)` or None. A separate gallery (as `images` and
            `labels`) that the queries search, for In-Shop and SOP-style protocols;
            `None`: leave-one-out over `images`. Defaults to `None`.

    Attributes:
        history: list of `{"epoch": int, "results": {network: {metric: float}}}`, with
            the epochs before a `resume`.
        last: dict or `None`. The latest evaluation: `step` (the optimizer step),
            `embeddings` (`{network: array}`) and `results`.
        best: float or `None`. Best value of `monitor` so far; a later epoch must beat it
            (a tie keeps the earlier epoch).
        best_epoch: int or `None`. The epoch (counted from 1) that reached it.
        best_evaluation: dict or `None`. The evaluation of `best_epoch`, as `last`;
            `None` when that epoch was evaluated before a `resume`.
        seconds: float. Wall time of this run's evaluations at epoch ends.

    Example:

    ```python
    evaluation = RetrievalEvaluation(test_images, test_labels, every_epochs=2)
    model.fit(dataset, epochs=8, steps_per_epoch=100, callbacks=[evaluation])
    print(evaluation.best_epoch, evaluation.best)
    ```
    """

    def __init__(self, images, labels, every_epochs=EvaluateConfig.every_epochs,
                 monitor=EvaluateConfig.monitor, recall_at=EvaluateConfig.recall_at,
                 backend=EvaluateConfig.backend, exact_below=EvaluateConfig.exact_below,
                 scann_check_queries=EvaluateConfig.scann_check_queries,
                 batch_size=EvaluateConfig.batch_size, logged_metrics=("recall@1",),
                 history_path=None, best_weights_path=None, log=print, gallery=None):
        super().__init__()
        if not isinstance(every_epochs, int) or every_epochs < 0:
            raise ConfigError("every_epochs must be a non-negative integer. "
                              f"Received: every_epochs={every_epochs}")
        self.images = images
        self.labels = labels
        self.every_epochs = every_epochs
        self.monitor = monitor
        self.settings = EvaluateConfig(recall_at=tuple(recall_at), backend=backend,
                                       exact_below=exact_below, batch_size=batch_size,
                                       scann_check_queries=scann_check_queries)
        self.logged_metrics = tuple(logged_metrics)
        self.history_path = None if history_path is None else Path(history_path)
        self.best_weights_path = None if best_weights_path is None else Path(best_weights_path)
        self.log = log
        self.gallery = gallery
        self.history = []
        self.best = None
        self.best_epoch = None
        self.best_evaluation = None
        self.last = None
        self.seconds = 0.0

    def resume(self, epochs_done):
        """Goes on with a run whose first `epochs_done` epochs are trained: `history` gets
        their entries from `history_path` (later ones were trained again), `best` and
        `best_epoch` the best among them."""
        earlier = []
        if self.history_path is not None and self.history_path.is_file():
            earlier = json.loads(self.history_path.read_text())
        self.history = [entry for entry in earlier if entry["epoch"] <= epochs_done]
        for entry in self.history:
            self.track_best(entry["epoch"], self.monitored(entry["results"]))

    def evaluate(self):
        """Metrics of every network of the model now: `{network: {metric: value}}`. The
        embeddings and the optimizer step they belong to are kept in `last`."""
        networks, ensembles = evaluated_networks(self.model)
        embeddings = embed_networks(networks, self.images, self.settings.batch_size, ensembles,
                                    progress=terminal_progress("evaluating"))
        gallery = None
        if self.gallery is not None:
            gallery_images, gallery_labels = self.gallery
            gallery = (embed_networks(networks, gallery_images, self.settings.batch_size, ensembles),
                       gallery_labels)
        results = evaluate_embeddings(embeddings, self.labels, self.settings, log=lambda line: None,
                                      gallery=gallery)
        self.last = {"step": int(self.model.optimizer.iterations.numpy()),
                     "embeddings": embeddings, "results": results}
        return results

    def on_epoch_end(self, epoch, logs=None):
        if self.every_epochs and (epoch + 1) % self.every_epochs == 0:
            self.evaluate_epoch(epoch, logs)

    def evaluate_epoch(self, epoch, logs=None):
        """Evaluates the model as it is after epoch `epoch` (counted from 0): the metrics
        go into `logs` and `history`, the best is tracked, one line is printed."""
        started = time.perf_counter()
        results = self.evaluate()
        score = self.monitored(results)
        flat = {f"{network}/{metric}": value
                for network, metrics in results.items() for metric, value in metrics.items()}
        if logs is not None:
            logs.update({key: value for key, value in flat.items()
                         if key == self.monitor or key.rpartition("/")[2] in self.logged_metrics})
        self.history.append({"epoch": epoch + 1, "results": results})
        if self.history_path is not None:
            self.write_history()
        if self.track_best(epoch + 1, score):
            self.best_evaluation = self.last
            if self.best_weights_path is not None:
                save_weights_whole(self.model, self.best_weights_path)
        recall_1 = "  ".join(f"{network} {metrics['recall@1']:.4f}"
                             for network, metrics in results.items() if "recall@1" in metrics)
        elapsed = time.perf_counter() - started
        self.seconds += elapsed
        self.log(f"      epoch {epoch + 1} evaluation ({elapsed:.0f} s): "
                 f"Recall@1 {recall_1}; {self.monitor} {score:.4f}, best {self.best:.4f} at "
                 f"epoch {self.best_epoch}")

    def monitored(self, results):
        """The value of `monitor` in `results` (`{network: {metric: value}}`)."""
        network, _, metric = self.monitor.partition("/")
        if metric not in results.get(network, {}):
            known = ", ".join(f"{name}/{key}" for name, metrics in results.items() for key in metrics)
            raise ConfigError(f"The monitored metric is not among the evaluation results: "
                              f"{known}. Received: monitor={self.monitor!r}")
        return results[network][metric]

    def track_best(self, epoch, value):
        """Makes `epoch` (counted from 1) the best if its `value` beats `best`; returns
        whether it did."""
        improved = self.best is None or value > self.best
        if improved:
            self.best, self.best_epoch = value, epoch
        return improved

    def write_history(self):
        """Writes `history` to `history_path`."""
        self.history_path.parent.mkdir(parents=True, exist_ok=True)
        self.history_path.write_text(json.dumps(self.history, indent=1) + "\n")


class ExportBest(keras.callbacks.Callback):
    """Exports a network as a new TF Serving version whenever `monitor` improves.

    TF Serving serves the highest version, so the served model is always the best so
    far. Needs a `RetrievalEvaluation` earlier in the callback list to put `monitor`
    into the logs; epochs without an evaluation are skipped.

    Args:
        export_dir: str or `Path`. The TF Serving model base directory.
        monitor: str. `"<network>/<metric>"`, higher is better.
            Defaults to `"ensemble/recall@1"`.
        network: str. Which network to export: a name from `DM2Model.networks()`
            (`"member0"`, `"shadow1"`, `"ensemble"`, ...), or `"model"` for a plain
            embedding model. Defaults to `"ensemble"`.
        resize_size: int. See `dmml_tf.export.export_embedder`. Defaults to `0`.
        metadata: dict or `None`. Written beside each export; the epoch and the
            monitored value are added. Defaults to `None`.
        log: callable taking one str. Defaults to `print`.

    Attributes:
        exported: list of `Path`, the versions written, the last one the best.
        best: float or `None`. The monitored value of the last export.

    Example:

    ```python
    callbacks = [RetrievalEvaluation(test_images, test_labels),
                 ExportBest("saved_models/mine/ensemble")]
    model.fit(dataset, epochs=8, steps_per_epoch=100, callbacks=callbacks)
    ```
    """

    def __init__(self, export_dir, monitor=EvaluateConfig.monitor,
                 network=ExportConfig.gallery_network, resize_size=DataConfig.resize_size, metadata=None, log=print):
        super().__init__()
        self.export_dir = export_dir
        self.monitor = monitor
        self.network = network
        self.resize_size = resize_size
        self.metadata = dict(metadata or {})
        self.log = log
        self.exported = []
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or (self.best is not None and value <= self.best):
            return
        networks, _ = evaluated_networks(self.model)
        if self.network not in networks:
            raise ConfigError(f"Unknown network to export; known: {', '.join(networks)}. "
                              f"Received: network={self.network!r}")
        embedder = networks[self.network]
        metadata = {**self.metadata, "epoch": epoch + 1, self.monitor: value}
        path = export_embedder(embedder, self.export_dir, embedder.input_shape[1],
                               self.resize_size, metadata=metadata)
        self.best = value
        self.exported.append(path)
        self.log(f"      exported {self.network} ({self.monitor} {value:.4f}) -> {path}")

    def on_train_end(self, logs=None):
        if not self.exported:
            self.log(f"      ExportBest: `{self.monitor}` never appeared in the logs, nothing "
                     "exported; put a RetrievalEvaluation before ExportBest in the callbacks.")
