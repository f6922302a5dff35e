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

# Pair and proxy metric losses, and the registry a config names them through.
from dmml_tf.losses.metric_losses import METRIC_LOSSES, MetricLoss, check_metric_loss
from dmml_tf.losses.pair_losses import (CircleLoss, ContrastiveLoss, MultiSimilarityLoss,
                                        SupConLoss, circle_loss, contrastive_loss,
                                        mine_multi_similarity, multi_similarity_loss,
                                        supcon_loss)
from dmml_tf.losses.proxy_losses import (ArcFaceLoss, CosFaceLoss, NormSoftmaxLoss, Proxies,
                                         ProxyAnchorLoss, arcface_loss, cosface_loss,
                                         margin_softmax_loss, normsoftmax_loss,
                                         proxy_anchor_loss)

__all__ += [
    "METRIC_LOSSES", "ArcFaceLoss", "CircleLoss", "ContrastiveLoss", "CosFaceLoss", "MetricLoss",
    "MultiSimilarityLoss", "NormSoftmaxLoss", "Proxies", "ProxyAnchorLoss", "SupConLoss",
    "arcface_loss", "check_metric_loss", "circle_loss", "contrastive_loss", "cosface_loss",
    "margin_softmax_loss", "mine_multi_similarity", "multi_similarity_loss", "normsoftmax_loss",
    "proxy_anchor_loss", "supcon_loss",
]
