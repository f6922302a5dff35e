"""Build a compiled `DM2Model` from the config: members, views, optimizers."""

import contextlib
import warnings

import keras
import tensorflow as tf

from dmml_tf.data.views import build_views
from dmml_tf.errors import WeightsError
from dmml_tf.models.backbones import build_backbone
from dmml_tf.models.embedder import build_embedder, synchronise_batchnorm
from dmml_tf.training.dm2 import DM2Model
from dmml_tf.training.optimizers import build_optimizers, build_proxy_optimizer


@contextlib.contextmanager
def dtype_policy(name):
    """Keras's global dtype policy set to `name` while the block builds layers."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_members(config):
    """One embedder per member, each with its own backbone in a heterogeneous cohort.
    With `cohort.own_seeds` each member's head (and dropout) gets its own seed. The backbones compute in
    `train.precision`."""
    with dtype_policy(config.train.precision):
        return [build_member(config, m) for m in range(config.cohort.members)]


def build_member(config, m):
    """Member m's embedder."""
    seed = config.seed + m if config.cohort.own_seeds else config.seed
    backbone = build_backbone(config.model.backbone_of(m), config.model.weights_of(m),
                              config.data.image_size, f"backbone{m}", seed)
    member = build_embedder(backbone, config.model.embedding_dim, seed,
                            config.model.freeze_batchnorm, config.model.dropout, name=f"member{m}")
    # Several replicas normalise training batches over the global batch, as one device
    # does (on one device the plain statistics: the same, without the all-reduce).
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if config.model.sync_batchnorm and not config.model.freeze_batchnorm and replicas > 1:
        synchronise_batchnorm(member)
    return member


def build_cohort(config, steps_per_epoch, classes=None):
    """A compiled `DM2Model`; call inside the distribution strategy's scope.

    Args:
        config: `dmml_tf.config.Config`.
        steps_per_epoch: int. Places the learning-rate schedule's milestones.
        classes: sequence of int or None. The training classes' labels, for a proxy
            loss's proxies. Defaults to `None`.
    """
    views = build_views(config.views, config.cohort.members, config.seed)
    model = DM2Model(build_members(config), views, loss=config.loss, cohort=config.cohort,
                     seed=config.seed, classes=classes,
                     log_every_steps=config.train.log_every_steps, name="dm2")
    optimizer, backbone_optimizer = build_optimizers(config.train, steps_per_epoch)
    multiplier = config.loss.proxy_multiplier() if config.loss.uses_proxies() else 1.0
    # Proxies at the heads' rate train with the heads; at another, with their own Adam.
    proxy_optimizer = (build_proxy_optimizer(config.train, steps_per_epoch, multiplier)
                       if multiplier != 1.0 else None)
    model.compile(optimizer=optimizer, backbone_optimizer=backbone_optimizer,
                  proxy_optimizer=proxy_optimizer, jit_compile=config.train.jit_compile)
    return model


def restore_cohort(config, run_directory, classes=None):
    """The cohort of a finished run, with the weights of its `dm2.weights.h5`.

    Args:
        config: `Config`. The run's config (its `config.yaml`).
        run_directory: `pathlib.Path`. The run's directory.
        classes: sequence of int or None. The training classes' labels (a proxy loss).
    """
    weights = run_directory / "dm2.weights.h5"
    if not weights.is_file():
        raise WeightsError(f"No trained weights at {weights}: train first with `python main.py`.")
    model = build_cohort(config, 1, classes)
    try:
        with warnings.catch_warnings():  # the optimizer's state is not needed here
            warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            model.load_weights(str(weights))
    except (ValueError, OSError) as error:
        raise WeightsError(f"{weights} does not fit the cohort described by "
                           f"{run_directory / 'config.yaml'}: {error}") from None
    return model
