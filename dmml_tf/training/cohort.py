"""Build a compiled `DM2Model` from the config: members, views, optimizer."""

import keras

from dmml_tf.data.views import build_views
from dmml_tf.models.backbones import build_backbone
from dmml_tf.models.embedder import build_embedder
from dmml_tf.training.dm2 import DM2Model


def build_members(config):
    """One embedder per member. With model diversity each head gets its own seed."""
    members = []
    for m in range(config.cohort.members):
        seed = config.seed + m if config.cohort.model_diversity else config.seed
        backbone = build_backbone(config.model.backbone, config.model.weights,
                                  config.data.image_size, f"backbone{m}", seed)
        members.append(build_embedder(backbone, config.model.embedding_dim, seed,
                                      config.model.freeze_batchnorm, name=f"member{m}"))
    return members


def build_cohort(config):
    """A compiled `DM2Model`; call inside the distribution strategy's scope."""
    views = build_views(config.views, config.cohort.members, config.seed)
    model = DM2Model(
        build_members(config),
        views,
        margin=config.loss.margin,
        relational_weight=config.loss.relational_weight,
        model_diversity=config.cohort.model_diversity,
        temporal_diversity=config.cohort.temporal_diversity,
        view_diversity=config.cohort.view_diversity,
        mutual=config.cohort.mutual,
        ema_decay=config.cohort.ema_decay,
        ema_every=config.cohort.ema_every,
        name="dm2",
    )
    model.compile(optimizer=keras.optimizers.Adam(config.train.learning_rate))
    return model
