"""Embeddings and naive references shared by the retrieval tests."""

import numpy as np


def unit_rows(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_unit(num_vectors, dim, seed):
    return unit_rows(np.random.default_rng(seed).normal(size=(num_vectors, dim)))


def clustered_embeddings(num_vectors, num_classes, dim, noise, seed):
    """Unit vectors around one random unit centre per class, plus their labels."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(num_classes, dim)))
    labels = rng.integers(0, num_classes, num_vectors)
    offsets = noise * rng.normal(size=(num_vectors, dim)) / np.sqrt(dim)
    return unit_rows(centres[labels] + offsets), labels


def naive_neighbors(queries, gallery, k, leave_one_out):
    """Every score computed on its own; best first, ties to the lower index."""
    neighbors = []
    for i, query in enumerate(queries):
        scored = [
            (-float(np.dot(query, item)), j)
            for j, item in enumerate(gallery)
            if not (leave_one_out and j == i)
        ]
        neighbors.append([j for _, j in sorted(scored)[:k]])
    return np.array(neighbors)


def naive_r_precision(neighbors, label, r):
    return sum(1 for j in range(r) if neighbors[j] == label) / r


def naive_average_precision(neighbors, label, r):
    """(1/R) * sum over the first R ranks i that match of (matches up to i) / i."""
    total, matches = 0.0, 0
    for i in range(1, r + 1):
        if neighbors[i - 1] == label:
            matches += 1
            total += matches / i
    return total / r
