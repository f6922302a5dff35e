"""K-means for the NMI metric, batched so memory stays flat on large galleries."""

import numpy as np
from scipy import sparse

# Points are assigned one block at a time: a block of (points x clusters) distances is
# at most 2**22 floats (16 MB), whatever the gallery and the number of classes.
_BLOCK_DISTANCES = 2**22


def assign(points, centroids):
    """Index of each point's nearest centroid (squared Euclidean; ties to the lower index).

    Args:
        points: float32 array of shape `(N, d)`.
        centroids: float32 array of shape `(C, d)`.

    Returns:
        int64 array of shape `(N,)`.
    """
    # ||x - c||^2 = ||x||^2 - 2 (x.c - ||c||^2 / 2); ||x||^2 is the same for every
    # centroid, so the nearest centroid has the largest x.c - ||c||^2 / 2 (computed in
    # place: one pass over each block of scores besides the product).
    half_norms = 0.5 * np.einsum("ij,ij->i", centroids, centroids)
    block = max(1, _BLOCK_DISTANCES // len(centroids))
    nearest = []
    for start in range(0, len(points), block):
        scores = points[start:start + block] @ centroids.T
        scores -= half_norms
        nearest.append(np.argmax(scores, axis=1))
    return np.concatenate(nearest).astype(np.int64)


def kmeans_plus_plus(points, num_clusters, rng):
    """k-means++ seeding: each next centroid is a point drawn with probability
    proportional to its squared distance to the nearest centroid so far.

    Args:
        points: float32 array of shape `(N, d)`.
        num_clusters: int. Between 1 and N.
        rng: `numpy.random.Generator`.

    Returns:
        float32 array of shape `(num_clusters, d)`: copies of distinct points (when the
        points are distinct).
    """
    squared_norms = np.einsum("ij,ij->i", points, points)

    def squared_distances(index):  # to points[index], as a mat-vec: no (N, d) temporary
        distances = np.maximum(squared_norms - 2.0 * (points @ points[index])
                               + squared_norms[index], 0.0)
        distances[index] = 0.0  # exactly: a chosen point is never drawn again
        return distances

    chosen = [int(rng.integers(len(points)))]
    nearest = squared_distances(chosen[0])
    for _ in range(1, num_clusters):
        # The draw of rng.choice(p=nearest / total), without its checks of p (most of the
        # seeding's time): the first point whose cumulative share exceeds a uniform draw.
        cumulative = np.cumsum(nearest, dtype=np.float64)
        total = cumulative[-1]
        candidate = (int(np.searchsorted(cumulative / total, rng.random(), side="right"))
                     if total > 0 else int(rng.integers(len(points))))
        chosen.append(candidate)
        nearest = np.minimum(nearest, squared_distances(candidate))
    return points[chosen].copy()


def lloyd(points, centroids, max_iterations):
    """Lloyd's iterations from `centroids`; returns each point's cluster.

    Args:
        points: float32 array of shape `(N, d)`.
        centroids: float32 array of shape `(C, d)`. Updated in place.
        max_iterations: int. Stops earlier when no assignment changes.

    Returns:
        int64 array of shape `(N,)`. A cluster that loses all its points keeps its
        previous centroid.
    """
    clusters = assign(points, centroids)
    for _ in range(max_iterations):
        # Each cluster's sum of points as one sparse product (np.add.at is ~10x slower).
        membership = sparse.csr_matrix((np.ones(len(points), np.float32),
                                        (clusters, np.arange(len(points)))),
                                       shape=(len(centroids), len(points)))
        sums = membership @ points
        counts = np.bincount(clusters, minlength=len(centroids))
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        updated = assign(points, centroids)
        if np.array_equal(updated, clusters):
            break
        clusters = updated
    return clusters


def kmeans(points, num_clusters, seed=0, max_iterations=30):
    """k-means: k-means++ seeding, then Lloyd's iterations.

    Args:
        points: float array of shape `(N, d)`.
        num_clusters: int. Number of clusters, between 1 and N.
        seed: int. Seed of the k-means++ draws. Defaults to `0`.
        max_iterations: int. Stops earlier when no assignment changes.
            Defaults to `30`.

    Returns:
        int64 array of shape `(N,)`: each point's cluster.
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    if not 1 <= num_clusters <= len(points):
        raise ValueError(f"num_clusters must be between 1 and the number of points "
                         f"({len(points)}). Received: num_clusters={num_clusters}")
    rng = np.random.default_rng(seed)
    return lloyd(points, kmeans_plus_plus(points, num_clusters, rng), max_iterations)
