"""The metric losses a config can name (besides the triplet loss): `METRIC_LOSSES` maps
each name to its pure function, its keyword defaults, its Keras wrapper and, for a proxy
loss, the proxies' learning-rate multiplier its paper uses.
"""

import dataclasses
import inspect
from typing import Callable

from dmml_tf.losses.pair_losses import (CircleLoss, ContrastiveLoss, MultiSimilarityLoss,
                                        SupConLoss, circle_loss, contrastive_loss,
                                        multi_similarity_loss, supcon_loss)
from dmml_tf.losses.proxy_losses import (ArcFaceLoss, CosFaceLoss, NormSoftmaxLoss,
                                         ProxyAnchorLoss, arcface_loss, cosface_loss,
                                         normsoftmax_loss, proxy_anchor_loss)


@dataclasses.dataclass(frozen=True)
class MetricLoss:
    """A metric loss as a config names it.

    Attributes:
        function: the pure loss, `function(labels, embeddings, **defaults)` for a pair
            loss, `function(labels, embeddings, proxies, **defaults)` for a proxy loss.
        wrapper: its `keras.losses.Loss` subclass; a proxy loss's takes the `Proxies`
            layer first.
        proxy_lr_multiplier: float or None. The proxies' learning rate as a multiple of the
            model's, None for a pair loss (it has no proxies).
    """

    function: Callable
    wrapper: type
    proxy_lr_multiplier: float | None = None

    @property
    def defaults(self):
        """The function's keyword arguments and their defaults, from its signature."""
        return {name: parameter.default
                for name, parameter in inspect.signature(self.function).parameters.items()
                if parameter.default is not inspect.Parameter.empty}

    @property
    def uses_proxies(self):
        return self.proxy_lr_multiplier is not None


METRIC_LOSSES = {
    "contrastive": MetricLoss(contrastive_loss, ContrastiveLoss),
    "multi_similarity": MetricLoss(multi_similarity_loss, MultiSimilarityLoss),
    "circle": MetricLoss(circle_loss, CircleLoss),
    "supcon": MetricLoss(supcon_loss, SupConLoss),
    # Proxy-Anchor trains its proxies at 100 times the backbone's learning rate; the
    # softmax losses' class weights are a classifier layer, trained at the network's rate.
    "proxy_anchor": MetricLoss(proxy_anchor_loss, ProxyAnchorLoss, proxy_lr_multiplier=100.0),
    "normsoftmax": MetricLoss(normsoftmax_loss, NormSoftmaxLoss, proxy_lr_multiplier=1.0),
    "cosface": MetricLoss(cosface_loss, CosFaceLoss, proxy_lr_multiplier=1.0),
    "arcface": MetricLoss(arcface_loss, ArcFaceLoss, proxy_lr_multiplier=1.0),
}


def check_metric_loss(name, **options):
    """Raise a ValueError unless `name` is a key of `METRIC_LOSSES` and every key of
    `options` one of its keyword arguments."""
    if name not in METRIC_LOSSES:
        raise ValueError(f"The metric loss must be one of {', '.join(METRIC_LOSSES)}. "
                         f"Received: name={name!r}")
    unknown = sorted(set(options) - set(METRIC_LOSSES[name].defaults))
    if unknown:
        received = ", ".join(f"{key}={options[key]!r}" for key in unknown)
        raise ValueError(f"{name} takes only {', '.join(METRIC_LOSSES[name].defaults)}. "
                         f"Received: {received}")
