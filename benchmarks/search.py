"""Nearest-neighbour search speed: ScaNN against exact TF search and faiss, in one run.

    python benchmarks/search.py                  # 10k, 100k and 1M vectors of dim 512
    python benchmarks/search.py --sizes 10000    # a quick look

For each gallery size it draws clustered synthetic unit vectors (a cluster per 100
vectors; a vector is its cluster's centre plus noise of the same length, so vectors of
one cluster have cosine similarity about 0.5, about 0 across clusters) and 1,000 queries
from the same clusters, then prints the queries per second of
ScaNN (a `dmml_tf.retrieval.index.GalleryIndex`, settings chosen from the gallery size),
exact TF search (matmul + top-k, `dmml_tf.retrieval.search.exact_neighbors`) and faiss
`IndexFlatIP` (exact), ScaNN's recall@10 against exact search, and the ratio of ScaNN's
speed to exact TF's. Goal at 1M: ScaNN >= 5x exact with recall >= 0.99. Each index is
built, measured and freed before the next, so memory holds the gallery and one copy.
"""

import argparse
import gc
import os
import resource
import time

import dmml_tf  # noqa: E402,F401  first: it quiets TensorFlow's GPU probe without a GPU

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from dmml_tf.retrieval.index import GalleryIndex  # noqa: E402
from dmml_tf.retrieval.search import exact_neighbors  # noqa: E402

K = 10
DIM = 512


def clustered(num_vectors, centres, rng, noise=1.0, chunk=100_000):
    """Unit vectors near random centres, made in chunks so float64 never holds them all."""
    out = np.empty((num_vectors, centres.shape[1]), np.float32)
    for start in range(0, num_vectors, chunk):
        n = min(chunk, num_vectors - start)
        x = centres[rng.integers(0, len(centres), n)]
        x += (noise / np.sqrt(centres.shape[1])) * rng.standard_normal(x.shape, np.float32)
        out[start:start + n] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def timed(function, repeats=1):
    """Result of `function()` and its best wall time over `repeats` runs."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return result, best


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(size, num_queries, noise, seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, size // 100), DIM), np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    gallery = clustered(size, centres, rng, noise)
    queries = clustered(num_queries, centres, rng, noise)
    repeats = 3 if size <= 100_000 else 1

    (exact, _), exact_seconds = timed(lambda: exact_neighbors(queries, gallery, K), repeats)
    gc.collect()

    flat = faiss.IndexFlatIP(DIM)
    flat.add(gallery)
    _, faiss_seconds = timed(lambda: flat.search(queries, K), repeats)
    del flat
    gc.collect()

    index = GalleryIndex(gallery, backend="scann")
    _, build_seconds = timed(lambda: index.search(queries[:1], K))  # builds the searcher
    (found, _), scann_seconds = timed(lambda: index.search(queries, K), repeats)
    recall = np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(found, exact)])
    mode = index.settings["mode"]
    del index
    gc.collect()
    return {
        "size": size, "mode": mode, "build_s": build_seconds,
        "scann_qps": num_queries / scann_seconds, "exact_qps": num_queries / exact_seconds,
        "faiss_qps": num_queries / faiss_seconds, "recall": recall,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=1.0,
                        help="length of the noise added to a cluster centre (1: cosine 0.5 "
                        "within a cluster)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"dim {DIM}, {args.queries} queries, top-{K}, noise {args.noise}, "
          f"{os.cpu_count()} CPU cores")
    header = (f"{'gallery':>10} {'scann mode':>12} {'build s':>8} {'scann q/s':>10} "
              f"{'exact TF q/s':>13} {'faiss q/s':>10} {'scann/exact':>12} {'recall@10':>10}")
    print(header)
    for size in args.sizes:
        row = measure(size, args.queries, args.noise, args.seed)
        print(f"{row['size']:>10,} {row['mode']:>12} {row['build_s']:>8.1f} "
              f"{row['scann_qps']:>10.0f} {row['exact_qps']:>13.0f} {row['faiss_qps']:>10.0f} "
              f"{row['scann_qps'] / row['exact_qps']:>11.1f}x {row['recall']:>10.4f}",
              flush=True)
    print(f"peak memory (RSS): {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
