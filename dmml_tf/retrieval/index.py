"""A gallery index: unit embeddings with their labels and image references, searchable
with ScaNN (or exact TF search), saved to and loaded from a directory."""

import json
from pathlib import Path

import numpy as np

from dmml_tf.errors import ConfigError, DataError
from dmml_tf.files import atomic_directory
from dmml_tf.retrieval import search

BACKENDS = ("scann", "exact")
# Below this many vectors ScaNN scores the whole gallery exactly: the tree would score
# at least 20,000 vectors per query anyway (search.SCANN_MIN_SCORED).
EXACT_BELOW = 20_000
INDEX_FILE = "index.json"


class GalleryIndex:
    """Nearest-neighbour index over a gallery of unit embeddings.

    With the `"scann"` backend, ScaNN's settings follow the gallery size
    (`dmml_tf.retrieval.search.scann_settings`): brute-force scoring, which is exact,
    below `exact_below` vectors, a k-means tree with asymmetric hashing and exact
    rescoring above. `recall_against_exact` measures what the approximation costs.

    Args:
        embeddings: float array of shape `(G, d)`. Unit gallery vectors.
        labels: int array of shape `(G,)` or `None`. Their class labels.
            Defaults to `None`.
        references: sequence of str or `None`. What each gallery row shows (a file path,
            or `dataset:split/index` for in-memory datasets). Defaults to `None`.
        thumbnails: uint8 array of shape `(G, h, w, 3)` or `None`. Small pictures of the
            gallery images, for search results. Defaults to `None`.
        class_names: sequence of str or `None`. Names of the labels. Defaults to `None`.
        backend: str. `"scann"` or `"exact"` (batched TF matmul and top-k).
            Defaults to `"scann"`.
        exact_below: int. ScaNN scores galleries smaller than this exactly.
            Defaults to `20000`.

    Example:

    ```python
    index = GalleryIndex(gallery_embeddings, labels=gallery_labels)
    indices, scores = index.search(query_embeddings, k=5)
    index.save("saved_models/emoji_styles/gallery")
    ```
    """

    def __init__(self, embeddings, labels=None, references=None, thumbnails=None,
                 class_names=None, backend="scann", exact_below=EXACT_BELOW):
        if backend not in BACKENDS:
            raise ConfigError(f"Unknown search backend; expected one of {BACKENDS}. "
                              f"Received: backend={backend}")
        self.embeddings = _as_matrix(embeddings, "embeddings")
        size = len(self.embeddings)
        for name, value in (("labels", labels), ("references", references),
                            ("thumbnails", thumbnails)):
            if value is not None and len(value) != size:
                raise ValueError(f"Expected one entry of `{name}` per gallery vector "
                                 f"({size}). Received: len({name})={len(value)}")
        self.labels = None if labels is None else np.asarray(labels)
        self.references = None if references is None else list(references)
        self.thumbnails = thumbnails
        self.class_names = None if class_names is None else list(class_names)
        self.backend = backend
        self.exact_below = exact_below
        self.settings = search.scann_settings(size, exact_below) if backend == "scann" else {}
        self._searcher = None

    def __len__(self):
        return len(self.embeddings)

    @property
    def is_exact(self):
        """Whether every search scores the whole gallery exactly."""
        return self.backend == "exact" or self.settings["mode"] == "brute_force"

    def search(self, queries, k, query_ids=None):
        """Returns the `k` most similar gallery rows of every query, best first.

        Args:
            queries: float array of shape `(N, d)`. Unit query vectors.
            k: int. Neighbours per query.
            query_ids: int array of shape `(N,)` or `None`. When the queries are gallery
                rows, their row numbers: each query's own row is left out (leave-one-out
                retrieval). Defaults to `None`.

        Returns:
            Tuple `(indices, scores)`: int64 and float32 arrays of shape `(N, k)`; the
            score is the dot product, and `sqrt(2 - 2 * score)` the Euclidean distance.
        """
        queries = _as_matrix(queries, "queries")
        if queries.shape[1] != self.embeddings.shape[1]:
            raise ValueError("Queries and gallery must have the same dimension. Received: "
                             f"queries.shape={queries.shape}, "
                             f"gallery.shape={self.embeddings.shape}")
        max_k = len(self) - int(query_ids is not None)
        if not 1 <= k <= max_k:
            raise ConfigError(f"k must be between 1 and {max_k}, the number of gallery "
                              f"vectors a query can retrieve. Received: k={k}")
        if self.backend == "exact":
            return search.exact_neighbors(queries, self.embeddings, k, query_ids)
        if query_ids is None:
            return search.scann_search(self._scann(), self.settings, queries, k)
        indices, scores = search.scann_search(self._scann(), self.settings, queries, k + 1)
        return search.drop_self(indices, scores, k, query_ids)

    def _scann(self):
        if self._searcher is None:
            self._searcher = search.build_scann_searcher(self.embeddings, self.settings)
        return self._searcher

    def recall_against_exact(self, queries, k, query_ids=None, max_queries=1000, seed=0):
        """Share of the exact top-`k` that `search` returns, on a sample of queries.

        Args:
            queries: float array of shape `(N, d)`.
            k: int. Neighbours per query.
            query_ids: int array of shape `(N,)` or `None`. As in `search`.
            max_queries: int. At most this many queries, drawn at random, are checked.
                Defaults to `1000`.
            seed: int. Seed of the draw. Defaults to `0`.

        Returns:
            float in [0, 1]; 1.0 when the search is exact.
        """
        if self.is_exact:
            return 1.0
        queries = _as_matrix(queries, "queries")
        rows = np.random.default_rng(seed).permutation(len(queries))[:max_queries]
        ids = None if query_ids is None else np.asarray(query_ids)[rows]
        found, _ = self.search(queries[rows], k, ids)
        exact, _ = search.exact_neighbors(queries[rows], self.embeddings, k, ids)
        return float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(found, exact)]))

    def save(self, directory, metadata=None):
        """Writes the index to `directory` (which must not exist), atomically.

        Args:
            directory: str or `Path`.
            metadata: dict or `None`. JSON-serialisable data kept in `index.json`
                (e.g. the network and SavedModel that made the embeddings).
                Defaults to `None`.
        """
        description = {"backend": self.backend, "exact_below": self.exact_below,
                       "settings": self.settings, "size": len(self),
                       "dim": int(self.embeddings.shape[1]), "class_names": self.class_names,
                       "metadata": metadata or {}}
        text = json.dumps(description, indent=2)  # Fails early on unserialisable metadata.
        with atomic_directory(directory) as partial:
            np.save(partial / "embeddings.npy", self.embeddings)
            if self.labels is not None:
                np.save(partial / "labels.npy", self.labels)
            if self.references is not None:
                (partial / "references.json").write_text(json.dumps(self.references))
            if self.thumbnails is not None:
                np.save(partial / "thumbnails.npy", np.asarray(self.thumbnails, np.uint8))
            if self.backend == "scann":
                (partial / "scann").mkdir()
                self._scann().serialize(str(partial / "scann"), relative_path=True)
            (partial / INDEX_FILE).write_text(text + "\n")

    @classmethod
    def load(cls, directory):
        """Reads an index written by `save`; returns `(index, metadata)`."""
        directory = Path(directory)
        if not (directory / INDEX_FILE).is_file():
            raise DataError(f"No gallery index in {directory} (missing {INDEX_FILE}); "
                            "write one with `python main.py export`.")
        description = json.loads((directory / INDEX_FILE).read_text())

        def optional(name, read):
            path = directory / name
            return read(path) if path.exists() else None

        index = cls(
            np.load(directory / "embeddings.npy"),
            labels=optional("labels.npy", np.load),
            references=optional("references.json", lambda p: json.loads(p.read_text())),
            thumbnails=optional("thumbnails.npy", lambda p: np.load(p, mmap_mode="r")),
            class_names=description["class_names"],
            backend=description["backend"],
            exact_below=description["exact_below"],
        )
        if index.backend == "scann":
            from scann import scann_ops_pybind

            index._searcher = scann_ops_pybind.load_searcher(str(directory / "scann"))
        return index, description["metadata"]


def nearest_neighbors(embeddings, k, backend="scann", gallery=None, exact_below=EXACT_BELOW):
    """Indices of the `k` most similar gallery rows of every query.

    Args:
        embeddings: float array of shape `(N, d)`. The queries, unit length.
        k: int. Number of neighbours per query, best first.
        backend: str. `"scann"` or `"exact"`. Defaults to `"scann"`.
        gallery: float array of shape `(G, d)` or `None`. With `None`, the queries are
            also the gallery and each query's own row is excluded (leave-one-out).
            Defaults to `None`.
        exact_below: int. See `GalleryIndex`. Defaults to `20000`.

    Returns:
        int64 array of shape `(N, k)`: row indices into the gallery.

    Example:

    >>> x = np.eye(3, dtype="float32")[[0, 0, 1, 1]]
    >>> nearest_neighbors(x, k=1, backend="exact")
    array([[1],
           [0],
           [3],
           [2]])
    """
    leave_one_out = gallery is None
    index = GalleryIndex(embeddings if leave_one_out else gallery, backend=backend,
                         exact_below=exact_below)
    query_ids = np.arange(len(index)) if leave_one_out else None
    return index.search(embeddings, k, query_ids)[0]


def _as_matrix(array, name):
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (vectors x dims). "
                         f"Received: {name}.shape={array.shape}")
    return array
