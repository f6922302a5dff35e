"""The global batch under `tf.distribute`: mining and pair losses compare every image with
every other, so each replica gathers all replicas' embeddings and labels."""

import tensorflow as tf


def gather_global(value):
    """Concatenate `value` from all replicas (differentiably); identity on one device."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    gathered = context.all_gather(value, axis=0)
    gathered.set_shape([None, *value.shape[1:]])
    return gathered


def local_part(value):
    """This replica's slice of a gathered `value` (replicas hold equal slices, in order);
    identity on one device."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    size = tf.shape(value)[0] // context.num_replicas_in_sync
    return value[context.replica_id_in_sync_group * size:][:size]


def replica_share(loss):
    """`loss` divided by the number of replicas: every replica computes the global batch's
    loss and the optimizer sums their gradients, which then equal one device's."""
    return loss / tf.distribute.get_strategy().num_replicas_in_sync
