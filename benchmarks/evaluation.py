"""Memory and time of a full evaluation (Recall@K, MAP@R, R-Precision, NMI) of a large gallery.

    python benchmarks/evaluation.py                          # 100k images, 1,000 classes
    python benchmarks/evaluation.py --images 20000 --backend exact

Draws clustered synthetic unit embeddings (one cluster per class, cosine about 0.3 within
a class), runs `dmml_tf.retrieval.evaluate.retrieval_metrics` on them as on a test split
and prints the metrics, the wall time and the process's peak memory next to the size an
N x N score matrix would have. Each backend is measured in its own process, so the peaks
do not mix.
"""

import argparse
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from dmml_tf.retrieval.evaluate import retrieval_metrics  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--noise", type=float, default=1.5,
                        help="noise length around a class centre (1.5: cosine about 0.3)")
    parser.add_argument("--backend", choices=("scann", "exact"), default="scann")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.classes, args.dim), np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, args.classes, args.images)
    embeddings = centres[labels] + rng.standard_normal((args.images, args.dim), np.float32) * (
        args.noise / np.sqrt(args.dim))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    started = time.perf_counter()
    results = retrieval_metrics(embeddings, labels, (1, 2, 4, 8), backend=args.backend)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    print(f"{args.images:,} images of {args.classes:,} classes, dim {args.dim}, "
          f"backend {args.backend}: {seconds:.0f} s")
    print("  ".join(f"{name} {value:.4f}" for name, value in results.items()))
    print(f"peak memory (RSS) {peak:.2f} GiB ({before:.2f} GiB before evaluating); an N x N "
          f"float32 score matrix alone would take {args.images**2 * 4 / 2**30:.0f} GiB")


if __name__ == "__main__":
    main()
