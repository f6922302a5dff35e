"""Embed the test split with every network and report retrieval metrics in a table.

Memory stays flat on large galleries: queries are searched one block at a time, the
exact search scores one block of the gallery matrix at a time, and k-means assigns one
block of points at a time; no N x N matrix is ever formed.
"""

import sys
import time

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from dmml_tf.models.embedder import join_embeddings
from dmml_tf.retrieval.clustering import kmeans
from dmml_tf.retrieval.index import EXACT_BELOW, GalleryIndex
from dmml_tf.retrieval.metrics import (DEFAULT_KS, average_precision_at_r, check_ks,
                                       knn_votes, normalized_mutual_information, r_precision,
                                       recall_hits, reciprocal_ranks)

# Each block of queries holds at most this many neighbour indices (32 MB as int64).
_BLOCK_NEIGHBORS = 2**22


def image_batches(images, batch_size):
    """Float32 batches of `images`: an array in slices of `batch_size`, or a batched
    `tf.data.Dataset` of images or of `(images, labels)` pairs as it comes."""
    if isinstance(images, tf.data.Dataset):
        batches = (batch[0] if isinstance(batch, tuple) else batch for batch in images)
    else:
        batches = (images[i:i + batch_size] for i in range(0, len(images), batch_size))
    return (tf.cast(batch, tf.float32) for batch in batches)


def terminal_progress(description):
    """A tqdm wrapper for batch iterators on a terminal; None (no bar) in logs and CI."""
    if not sys.stderr.isatty():
        return None
    return lambda batches: tqdm(batches, desc=f"      {description}", unit="batch", leave=False)


def embed(network, images, batch_size):
    """Unit embeddings of `images` in inference mode.

    Args:
        network: callable. A `keras.Model` mapping float images to embeddings.
        images: array of shape `(N, H, W, 3)` with pixel values in [0, 255], or a
            batched `tf.data.Dataset` of such images or of `(images, labels)` pairs.
        batch_size: int. Batch size for arrays; a dataset keeps its own batches.

    Returns:
        float32 array of shape `(N, d)`.
    """
    return embed_networks({"network": network}, images, batch_size)["network"]


_COMPILED = {}  # the networks' ids -> their compiled forward, reused by later evaluations


def compiled_forward(networks):
    """One `tf.function` running every network of `{name: model}` on a batch, traced
    once per set of networks (a training run's evaluations share it)."""
    key = tuple((name, id(network)) for name, network in networks.items())
    if key not in _COMPILED:
        if len(_COMPILED) >= 8:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = tf.function(lambda batch: {
            name: network(batch, training=False) for name, network in networks.items()})
    return _COMPILED[key]


def embed_networks(networks, images, batch_size, ensembles=None, progress=None):
    """Embeddings of every network from one pass over `images`: each batch is decoded
    once and every network runs on it, in one compiled function.

    Args:
        networks: dict of name to `keras.Model`.
        images: as in `embed`.
        batch_size: int. As in `embed`.
        ensembles: dict of name to list of network names, or `None`. These networks are
            not run: their embedding is the parts' embeddings concatenated and
            re-normalised, which is what `dmml_tf.models.embedder.ensemble` computes.
            Defaults to `None`.
        progress: callable or None. Wraps the batch iterator (e.g. a tqdm bar).
            Defaults to `None`.

    Returns:
        dict of name to float32 array `(N, d)`, in the order of `networks`.
    """
    ensembles = ensembles or {}
    running = {name: network for name, network in networks.items() if name not in ensembles}
    forward = compiled_forward(running)
    outputs, full = [], None
    batches = image_batches(images, batch_size)
    for batch in progress(batches) if progress else batches:
        count = int(batch.shape[0])
        full = full or count
        if count < full:  # pad a short last batch: one traced shape, not a second trace
            batch = tf.pad(batch, [[0, full - count], [0, 0], [0, 0], [0, 0]])
        outputs.append({name: value.numpy()[:count] for name, value in forward(batch).items()})
    embeddings = {name: np.concatenate([o[name] for o in outputs]) for name in running}
    for name, parts in ensembles.items():
        embeddings[name] = keras.ops.convert_to_numpy(
            join_embeddings([embeddings[part] for part in parts]))
    return {name: embeddings[name] for name in networks}


def retrieval_metrics(embeddings, labels, ks=DEFAULT_KS, backend="scann",
                      exact_below=EXACT_BELOW, check_queries=1000, seed=0, seconds=None,
                      gallery=None):
    """Recall@K, MAP@R, R-Precision, MRR, k-NN accuracy and NMI of a set of embeddings.

    Leave-one-out by default: the set is its own gallery, a query never its own
    neighbour. With `gallery`, the embeddings are queries searching a separate gallery
    (In-Shop, SOP-style protocols). Queries whose class has no (other) gallery image are
    left out of the retrieval metrics (see `dmml_tf.retrieval.metrics`); NMI clusters
    every query.

    Args:
        embeddings: float array of shape `(N, d)`. Unit embeddings of the queries (of the
            test split, when it is its own gallery).
        labels: int array of shape `(N,)`. Their class labels.
        ks: sequence of int. The cut-offs K of Recall@K; k-NN accuracy votes among the
            max(ks) nearest. Defaults to `(1, 2, 4, 8)`.
        backend: str. `"scann"` or `"exact"`; see `GalleryIndex`. Defaults to `"scann"`.
        exact_below: int. ScaNN scores galleries smaller than this exactly.
            Defaults to `20000`.
        check_queries: int. With ScaNN, the recall of its top-max(K) against exact
            search is measured on this many queries. Defaults to `1000`.
        seed: int. Seed of k-means and of the checked queries. Defaults to `0`.
        seconds: dict or None. Gets the wall time of each part added (`search and
            metrics`, `nmi clustering`, `scann check`). Defaults to `None`.
        gallery: pair `(embeddings (M, d), labels (M,))` or None. A separate gallery.
            Defaults to `None` (leave-one-out).

    Returns:
        dict: `recall@K` for each K, `map@r`, `r_precision`, `mrr`, `knn_accuracy`, `nmi`
        and, with ScaNN, `scann_recall@K` (K = max(ks)), each a float in [0, 1].
    """
    labels = np.asarray(labels)
    if labels.shape != (len(embeddings),):
        raise ValueError("Expected one label per embedding. Received: "
                         f"labels.shape={labels.shape}, len(embeddings)={len(embeddings)}")
    gallery_embeddings, gallery_labels = (embeddings, labels) if gallery is None else gallery
    gallery_labels = np.asarray(gallery_labels)
    if gallery_labels.shape != (len(gallery_embeddings),):
        raise ValueError("Expected one label per gallery embedding. Received: "
                         f"gallery labels.shape={gallery_labels.shape}, "
                         f"len(gallery embeddings)={len(gallery_embeddings)}")
    own = gallery is None  # each query is also in the gallery, and never its own neighbour
    searchable = len(gallery_labels) - own
    check_ks(ks, searchable)
    classes, gallery_counts = np.unique(gallery_labels, return_counts=True)
    count_of = dict(zip(classes.tolist(), gallery_counts.tolist()))
    relevant_counts = np.array([count_of.get(label, 0) for label in labels.tolist()]) - own
    queries = np.flatnonzero(relevant_counts > 0)
    if len(queries) == 0:
        raise ValueError("No query has a same-class image in the gallery, so none has a "
                         f"correct answer. Received: {len(labels)} queries of "
                         f"{len(np.unique(labels))} classes, a gallery of {len(classes)} classes")
    clock = _Laps(seconds)
    index = GalleryIndex(gallery_embeddings, backend=backend, exact_below=exact_below)
    query_embeddings = index.embeddings if own else np.asarray(embeddings, dtype=np.float32)
    k = min(searchable, max(max(ks), int(relevant_counts.max())))
    parts = {"hits": [], "precisions": [], "average_precisions": [], "reciprocal": [], "knn": []}
    block = max(1, _BLOCK_NEIGHBORS // k)
    for start in range(0, len(queries), block):
        ids = queries[start:start + block]
        neighbors, _ = index.search(query_embeddings[ids], k, query_ids=ids if own else None)
        neighbor_labels, query_labels = gallery_labels[neighbors], labels[ids]
        parts["hits"].append(recall_hits(neighbor_labels, query_labels, ks))
        parts["precisions"].append(r_precision(neighbor_labels, query_labels, relevant_counts[ids]))
        parts["average_precisions"].append(
            average_precision_at_r(neighbor_labels, query_labels, relevant_counts[ids]))
        parts["reciprocal"].append(reciprocal_ranks(neighbor_labels, query_labels))
        parts["knn"].append(knn_votes(neighbor_labels, query_labels, max(ks)))
    hits = np.concatenate(parts["hits"])
    results = {f"recall@{cut}": float(hits[:, i].mean()) for i, cut in enumerate(ks)}
    results["map@r"] = float(np.concatenate(parts["average_precisions"]).mean())
    results["r_precision"] = float(np.concatenate(parts["precisions"]).mean())
    results["mrr"] = float(np.concatenate(parts["reciprocal"]).mean())
    results["knn_accuracy"] = float(np.concatenate(parts["knn"]).mean())
    clock.lap("search and metrics")
    # Exact Lloyd's k-means, one cluster per class: cheap at test-split sizes (see
    # benchmarks/evaluation.py for its share of an evaluation).
    clusters = kmeans(query_embeddings, len(np.unique(labels)), seed=seed)
    results["nmi"] = normalized_mutual_information(labels, clusters)
    clock.lap("nmi clustering")
    if backend == "scann":
        results[f"scann_recall@{max(ks)}"] = index.recall_against_exact(
            query_embeddings[queries], max(ks), queries if own else None, check_queries, seed)
        clock.lap("scann check")
    return results


class _Laps:
    """Adds the seconds since the last lap to `seconds[name]` (nothing if it is None)."""

    def __init__(self, seconds):
        self.seconds, self.last = seconds, time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        if self.seconds is not None:
            self.seconds[name] = self.seconds.get(name, 0.0) + now - self.last
        self.last = now


def evaluate_embeddings(all_embeddings, labels, evaluate_config, log=print, seconds=None,
                        gallery=None):
    """`retrieval_metrics` of each network's embeddings, one logged line per network.

    Args:
        all_embeddings: dict of name to float array `(N, d)`.
        labels: int array of shape `(N,)`.
        evaluate_config: `dmml_tf.config.EvaluateConfig`.
        log: callable taking one str. Defaults to `print`.
        seconds: dict or None. As in `retrieval_metrics`, summed over networks.
            Defaults to `None`.
        gallery: pair `({name: (M, d) array}, labels (M,))` or None. A separate gallery
            that each network's queries search; `None`: leave-one-out. Defaults to `None`.

    Returns:
        dict `{name: {metric: value}}`, in the order of `all_embeddings`.
    """
    results = {}
    for name, embeddings in all_embeddings.items():
        results[name] = retrieval_metrics(
            embeddings, labels, evaluate_config.recall_at, evaluate_config.backend,
            evaluate_config.exact_below, evaluate_config.scann_check_queries, seconds=seconds,
            gallery=None if gallery is None else (gallery[0][name], gallery[1]))
        log(f"      {name:<28}" + "  ".join(f"{k} {v:.4f}" for k, v in results[name].items()))
    return results


def results_table(results):
    """A fixed-width text table: one row per network, one column per metric."""
    metrics = list(next(iter(results.values())))
    widths = [max(11, len(metric) + 2) for metric in metrics]
    width = max(len(name) for name in results) + 2
    lines = [f"{'network':<{width}}" + "".join(f"{m:>{w}}" for m, w in zip(metrics, widths))]
    lines += [f"{name:<{width}}" + "".join(f"{values[m]:>{w}.4f}" for m, w in zip(metrics, widths))
              for name, values in results.items()]
    return "\n".join(lines)
