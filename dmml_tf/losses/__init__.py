"""Losses of DM2: triplet with a choice of mining, and relational losses (RKD, similarity KL)."""

from dmml_tf.losses.mining import mine_batch_hard, mine_distance_weighted, mine_semi_hard
from dmml_tf.losses.relational import (RelationalLoss, relational_angle_loss,
                                       relational_distance_loss, relational_loss,
                                       similarity_kl_loss)
from dmml_tf.losses.triplet import MINERS, TripletLoss, triplet_loss

__all__ = [
    "MINERS", "RelationalLoss", "TripletLoss", "mine_batch_hard", "mine_distance_weighted",
    "mine_semi_hard", "relational_angle_loss", "relational_distance_loss", "relational_loss",
    "similarity_kl_loss", "triplet_loss",
]
