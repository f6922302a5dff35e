"""Triplet loss with a choice of mining (see `dmml_tf.losses.mining`).

The loss is the mean, over the anchor-positive pairs the miner marks (`reduction="all"`)
or over those of them with a positive loss (`"nonzero"`), of
max(d(a, p) - d(a, n) + margin, 0) on Euclidean distances, n being the mined negative.
It is 0 when the batch has no valid pair (no positives or no negatives).
"""

import keras
import tensorflow as tf

from dmml_tf.losses.distances import pairwise_distances
from dmml_tf.losses.global_batch import gather_global, replica_share
from dmml_tf.losses.mining import mine_batch_hard, mine_distance_weighted, mine_semi_hard


def _semi_hard(distances, labels, embedding_dim, seed):
    return mine_semi_hard(distances, labels)


def _batch_hard(distances, labels, embedding_dim, seed):
    return mine_batch_hard(distances, labels)


def _distance_weighted(distances, labels, embedding_dim, seed):
    uniform = tf.random.stateless_uniform(tf.shape(distances), seed)
    return mine_distance_weighted(distances, labels, embedding_dim, uniform)


# name -> miner(distances, labels, embedding_dim, seed); only sampling miners use the
# last two.
MINERS = {
    "semi_hard": _semi_hard,
    "batch_hard": _batch_hard,
    "distance_weighted": _distance_weighted,
}


# all: the mean over every mined pair; nonzero: over the pairs with a positive loss
# (pytorch-metric-learning's default reducer), whose gradient does not fade as pairs are
# solved.
REDUCTIONS = ("all", "nonzero")


def check_mining(mining):
    """Raise a ValueError unless `mining` is a key of `MINERS`."""
    if mining not in MINERS:
        raise ValueError(f"`mining` must be one of {', '.join(MINERS)}. Received: mining={mining!r}")


def triplet_loss(labels, embeddings, margin=0.2, mining="semi_hard", seed=(0, 0),
                 reduction="all"):
    """Mean triplet hinge over the mined anchor-positive pairs.

    Args:
        labels: int tensor `(N,)`.
        embeddings: float tensor `(N, d)`, unit rows for `distance_weighted` mining.
        margin: float. Hinge margin. Defaults to `0.2`.
        mining: str. A key of `MINERS`: `"semi_hard"`, `"batch_hard"` or
            `"distance_weighted"`. Defaults to `"semi_hard"`.
        seed: pair of int or int tensor `(2,)`. Stateless seed of the sampling miners;
            the same seed samples the same negatives. Defaults to `(0, 0)`.
        reduction: str. `"all"`: the mean over the mined pairs; `"nonzero"`: over those
            with a positive loss. Defaults to `"all"`.
    """
    check_mining(mining)
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {', '.join(REDUCTIONS)}. "
                         f"Received: reduction={reduction!r}")
    embeddings = tf.convert_to_tensor(embeddings)
    distances = pairwise_distances(embeddings)
    negative_distances, pair_mask = MINERS[mining](distances, labels, tf.shape(embeddings)[-1], seed)
    hinge = tf.maximum(distances - negative_distances + margin, 0.0)
    if reduction == "nonzero":
        pair_mask = tf.logical_and(pair_mask, hinge > 0.0)
    mask = tf.cast(pair_mask, hinge.dtype)
    return tf.reduce_sum(hinge * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


@keras.saving.register_keras_serializable(package="dmml_tf")
class TripletLoss(keras.losses.Loss):
    """Keras wrapper of `triplet_loss`, for `compile(loss=...)` on a single embedder.

    `y_true` holds the integer labels, `y_pred` the embeddings of the whole batch.

    Args:
        margin: float. Hinge margin. Defaults to `0.2`.
        mining: str. `"semi_hard"`, `"batch_hard"` or `"distance_weighted"`.
            Defaults to `"semi_hard"`.
        seed: int or None. Seed of the sampling miners' random stream. Defaults to `None`.
        reduction: str. `"all"` or `"nonzero"` (see `triplet_loss`). Defaults to `"all"`.

    Example:
    ```python
    embedder.compile(optimizer="adam", loss=TripletLoss(margin=0.2, mining="batch_hard"))
    embedder.fit(class_balanced_dataset(images, labels, 8, 4, seed=0), steps_per_epoch=10)
    ```
    """

    def __init__(self, margin=0.2, mining="semi_hard", seed=None, reduction="all",
                 name="triplet", **kwargs):
        super().__init__(name=name, **kwargs)
        check_mining(mining)
        self.margin = margin
        self.mining = mining
        self.seed = seed
        self.triplet_reduction = reduction
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, y_true, y_pred):
        # Under a strategy: mined on the global batch, each replica's share of the loss.
        labels, embeddings = gather_global(tf.reshape(y_true, [-1])), gather_global(y_pred)
        return replica_share(triplet_loss(labels, embeddings, self.margin, self.mining,
                                          self.seed_generator.next(), self.triplet_reduction))

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "mining": self.mining,
                "seed": self.seed, "reduction": self.triplet_reduction}
