"""The config's sections: frozen dataclasses that hold every default, each checking its
own values (`dmml_tf.config.loading` checks what spans sections)."""

import dataclasses

from dmml_tf.config.checks import (PRECISIONS, SCHEDULES, STRATEGIES, TEACHERS, check_choice,
                                   check_metric_options)
from dmml_tf.errors import ConfigError
from dmml_tf.losses.metric_losses import METRIC_LOSSES
from dmml_tf.losses.relational import RELATIONAL
from dmml_tf.losses.triplet import MINERS, REDUCTIONS


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # emoji_styles, icon_concepts (embedded), cub200, cars196, or folder:PATH (one subfolder
    # per class).
    dataset: str = "emoji_styles"
    # cub200, cars196: the folder holding the dataset's files (null: $DMML_DATA_DIR/<dataset>,
    # else ~/.cache/dmml_tf/<dataset>).
    data_dir: str | None = None
    # cub200, cars196: `official` (the extracted layout), `tfds` (the TFDS builder on the
    # archives in data_dir) or `auto` (official if present, else tfds).
    source: str = "auto"
    image_size: int = 64
    # Share of the classes held out for test where a dataset has no fixed split.
    test_fraction: float = 0.5
    classes_per_batch: int = 16
    images_per_class: int = 4
    # Use only this many classes (0: all); for smoke runs.
    max_classes: int = 0
    # `test` evaluates on the test classes; `validation` holds out validation_fraction of
    # the training classes instead and never touches the test classes (for tuning).
    split: str = "test"
    validation_fraction: float = 0.2
    # Streamed datasets (cub200, cars196, folder:). Training: a random crop of this area
    # fraction and width/height ratio, resized to image_size, flipped if horizontal_flip.
    crop_scale: tuple = (0.25, 1.0)
    crop_ratio: tuple = (0.75, 1.3333333333333333)
    horizontal_flip: bool = False
    # Evaluation: the shorter side resized to this, then the centre image_size square
    # (0: image_size).
    resize_size: int = 0

    def __post_init__(self):
        if self.split not in ("test", "validation"):
            raise ConfigError("Config key `data.split` supports: test, validation. "
                              f"Received: data.split={self.split!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError("Config key `data.validation_fraction` must be in (0, 1). "
                              f"Received: data.validation_fraction={self.validation_fraction}")
        if self.source not in ("auto", "official", "tfds"):
            raise ConfigError("Config key `data.source` supports: auto, official, tfds. "
                              f"Received: data.source={self.source!r}")
        for key, value, upper in (("crop_scale", self.crop_scale, 1.0),
                                  ("crop_ratio", self.crop_ratio, float("inf"))):
            numbers = len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
            if not numbers or not 0.0 < value[0] <= value[1] <= upper:
                raise ConfigError(f"Config key `data.{key}` must be [low, high] with 0 < low <= "
                                  f"high{' <= 1' if upper == 1.0 else ''}. "
                                  f"Received: data.{key}={list(value)}")
        if self.resize_size and self.resize_size < self.image_size:
            raise ConfigError("Config key `data.resize_size` must be 0 or at least "
                              f"data.image_size ({self.image_size}). "
                              f"Received: data.resize_size={self.resize_size}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    # One backbone for every member, or a list with one per member (a heterogeneous
    # cohort), e.g. [mobilenet_v2, efficientnet_b0]; names in dmml_tf/models/backbones.py.
    backbone: str | tuple = "mobilenet_v2"
    # Pretrained weights, one for all members or a list with one per member:
    # `torchvision` (mobilenet_v2, offline), `imagenet` (keras.applications; the file must
    # already be in ~/.keras/models) or null (random initialisation).
    weights: str | None | tuple = "torchvision"
    embedding_dim: int = 128
    # Backbone BatchNorm in inference mode (frozen statistics, gamma/beta trained).
    freeze_batchnorm: bool = True
    # With freeze_batchnorm off, under a strategy of several replicas: BatchNorm's batch
    # statistics over the global batch (all replicas), as on one device; off, each
    # replica normalises its own slice.
    sync_batchnorm: bool = True
    # Dropout rate before each member's head, seeded per member: members that start from
    # one pretrained network differ from the first step (as in Deep Mutual Learning).
    dropout: float = 0.0

    def __post_init__(self):
        for key, value in (("backbone", self.backbone), ("weights", self.weights)):
            if isinstance(value, tuple) and not all(isinstance(v, (str, type(None))) for v in value):
                raise ConfigError(f"Config key `model.{key}` lists one name per member. "
                                  f"Received: model.{key}={list(value)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("Config key `model.dropout` must be in [0, 1). "
                              f"Received: model.dropout={self.dropout}")

    def backbone_of(self, member):
        """The backbone name of member `member`."""
        return self.backbone[member] if isinstance(self.backbone, tuple) else self.backbone

    def weights_of(self, member):
        """The pretrained weights of member `member`."""
        return self.weights[member] if isinstance(self.weights, tuple) else self.weights


@dataclasses.dataclass(frozen=True)
class CohortConfig:
    members: int = 2
    # Members get their own seeds (heads and randomly initialised backbones); off, all
    # start alike. Model diversity is own seeds with the peers as teachers.
    own_seeds: bool = True
    # Who teaches each member: its peers (model diversity), every member's shadow
    # (temporal diversity), or both.
    teachers: str = "both"
    # A member's relational loss is the weighted mean over its teachers: each peer weighs
    # peer_weight, each shadow shadow_weight (equal: the plain mean).
    peer_weight: float = 1.0
    shadow_weight: float = 1.0
    # Whether a member's own shadow (a copy of itself ~1 / (1 - tau) steps old) teaches it.
    own_shadow: bool = True
    view_diversity: bool = True
    # false: lambda = 0, the members train independently (the baseline).
    mutual: bool = True
    # tau of the shadows' moving average: a shadow averages about its member's last
    # 1 / (1 - tau) steps.
    ema_decay: float = 0.99
    # That window grows linearly from 1 step to 1 / (1 - tau) over this many steps, so
    # early shadows follow closely; tau holds from then on (0: tau from the start).
    ema_warmup_steps: int = 100
    # Update the shadows every this many steps.
    ema_every_steps: int = 1

    def __post_init__(self):
        check_choice("cohort.teachers", self.teachers, TEACHERS)
        for key in ("peer_weight", "shadow_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"Config key `cohort.{key}` must be 0 or more. "
                                  f"Received: cohort.{key}={getattr(self, key)}")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    # Each member's metric loss: triplet (margin, mining, triplet_reduction below) or one
    # of dmml_tf.losses.METRIC_LOSSES (docs/losses.md), whose own keys go in
    # metric_options, e.g. {margin: 0.3} for arcface; unset keys keep its paper's defaults.
    metric: str = "triplet"
    metric_options: dict = dataclasses.field(default_factory=dict)
    # Proxy losses: the proxies' learning rate as a multiple of the heads' (null: the
    # loss's paper, 100 for proxy_anchor, 1 for the softmax losses).
    proxy_lr_multiplier: float | None = None
    margin: float = 0.2
    # semi_hard | batch_hard | distance_weighted (dmml_tf.losses.triplet.MINERS).
    mining: str = "semi_hard"
    # The triplet loss is the mean over all mined pairs (`all`) or over those with a
    # positive loss (`nonzero`, whose gradient does not fade as more pairs are solved).
    triplet_reduction: str = "all"
    # The relational loss between a member and each teacher (dmml_tf.losses.relational):
    # rkd (distance_weight * RKD distance + angle_weight * RKD angle) or similarity_kl
    # (KL of the softmaxed cosine similarities at relational_temperature).
    relational: str = "rkd"
    # lambda: weight of the relational loss, the mean over a member's teachers.
    relational_weight: float = 10.0
    distance_weight: float = 1.0
    angle_weight: float = 0.0
    relational_temperature: float = 1.0

    def __post_init__(self):
        check_choice("loss.metric", self.metric, ("triplet", *METRIC_LOSSES))
        check_metric_options(self.metric, self.metric_options)
        if self.proxy_lr_multiplier is not None and self.proxy_lr_multiplier <= 0:
            raise ConfigError("Config key `loss.proxy_lr_multiplier` must be positive or null. "
                              f"Received: loss.proxy_lr_multiplier={self.proxy_lr_multiplier}")
        check_choice("loss.mining", self.mining, tuple(MINERS))
        check_choice("loss.triplet_reduction", self.triplet_reduction, REDUCTIONS)
        check_choice("loss.relational", self.relational, tuple(RELATIONAL))
        if self.relational_temperature <= 0:
            raise ConfigError("Config key `loss.relational_temperature` must be positive. "
                              f"Received: loss.relational_temperature={self.relational_temperature}")


    def uses_proxies(self):
        """Whether the metric loss trains proxies (one vector per training class)."""
        return self.metric != "triplet" and METRIC_LOSSES[self.metric].uses_proxies

    def proxy_multiplier(self):
        """The proxies' learning rate as a multiple of the heads'."""
        return self.proxy_lr_multiplier or METRIC_LOSSES[self.metric].proxy_lr_multiplier


@dataclasses.dataclass(frozen=True)
class ViewsConfig:
    # Each entry: {LayerName: {argument: value}}, a preprocessing layer of keras.layers
    # (or of keras_cv.layers when keras-cv is installed); see dmml_tf/data/views.py.
    policy: tuple = (
        {"RandomResizedCrop": {"scale": [0.5, 1.0]}},
        {"RandomColorJitter": {"value_range": [0, 255], "brightness_factor": 0.2,
                               "contrast_factor": 0.2, "saturation_factor": [0.4, 0.6]}},
    )
    # A stronger policy that `network_policies` can give some networks by its name.
    strong_policy: tuple = (
        {"RandomResizedCrop": {"scale": [0.25, 1.0]}},
        {"RandomRotation": {"factor": 0.03, "fill_mode": "constant", "fill_value": 255.0}},
        {"RandomColorJitter": {"value_range": [0, 255], "brightness_factor": 0.4,
                               "contrast_factor": 0.4, "saturation_factor": [0.2, 0.8]}},
    )
    # Own policies: one per member (its shadow uses the same) or one per network (members,
    # then shadows); each a policy or the name `policy` or `strong_policy`. Empty: every
    # network uses `policy`.
    network_policies: tuple = ()


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    # Adam learning rate of the members' heads, and of the backbones unless
    # backbone_learning_rate is set (null: the same optimizer trains everything).
    learning_rate: float = 1e-4
    backbone_learning_rate: float | None = None
    # The backbones stay as they are (learning rate 0) for the first this many steps, so
    # the random heads settle before the pretrained features move.
    backbone_frozen_steps: int = 0
    # Every learning rate rises linearly from 0 over this many steps (the backbones' from
    # the end of backbone_frozen_steps).
    warmup_steps: int = 0
    # Decoupled weight decay of every trainable weight (0: none).
    weight_decay: float = 0.0
    # constant | step (times step_factor after each number of epochs in step_epochs) |
    # cosine (to 0 at the last step).
    schedule: str = "constant"
    step_epochs: tuple = ()
    step_factor: float = 0.1
    # Save a checkpoint that a killed run resumes from every this many steps.
    checkpoint_every_steps: int = 50
    # Write the loss terms and learning rates to TensorBoard every this many steps.
    log_every_steps: int = 10
    # XLA-compile the train step: much slower on CPU (depthwise convolutions), and the
    # views' RandomResizedCrop has no XLA kernel (see benchmarks/train_step.py).
    jit_compile: bool = False
    # float32 | mixed_float16 | mixed_bfloat16: the backbones compute in 16 bits (for GPUs
    # and TPUs; slower on this CPU, README); heads, normalisation, losses, shadows and
    # exported signatures stay float32; mixed_float16 scales the loss.
    precision: str = "float32"
    # Stop each epoch after this many steps (0: a full pass); for smoke runs.
    max_steps_per_epoch: int = 0
    # mirrored (this machine's devices) | multi_worker (the hosts in TF_CONFIG; README:
    # Training on several machines); dmml_tf/training/distribute.py.
    strategy: str = "mirrored"

    def __post_init__(self):
        check_choice("train.schedule", self.schedule, SCHEDULES)
        check_choice("train.strategy", self.strategy, STRATEGIES)
        check_choice("train.precision", self.precision, PRECISIONS)
        if self.backbone_frozen_steps < 0 or self.warmup_steps < 0:
            raise ConfigError("Config keys `train.backbone_frozen_steps` and `train.warmup_steps` "
                              "must be 0 or more. Received: train.backbone_frozen_steps="
                              f"{self.backbone_frozen_steps}, train.warmup_steps={self.warmup_steps}")
        if self.precision == "mixed_float16" and self.backbones_apart():
            raise ConfigError("Config key `train.precision: mixed_float16` scales the loss of "
                              "one optimizer; set `train.backbone_learning_rate: null` and "
                              "`train.backbone_frozen_steps: 0`, or use mixed_bfloat16. "
                              f"Received: train.backbone_learning_rate={self.backbone_learning_rate}, "
                              f"train.backbone_frozen_steps={self.backbone_frozen_steps}")
        if any(not isinstance(e, int) or e < 1 for e in self.step_epochs):
            raise ConfigError("Config key `train.step_epochs` must list positive epochs. "
                              f"Received: train.step_epochs={list(self.step_epochs)}")


    def backbones_apart(self):
        """Whether the backbones get their own optimizer (own learning rate or frozen steps)."""
        return self.backbone_learning_rate is not None or self.backbone_frozen_steps > 0


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    recall_at: tuple = (1, 2, 4, 8)
    # "scann" or "exact"; ScaNN scores galleries under `exact_below` vectors exactly.
    backend: str = "scann"
    exact_below: int = 20000
    # ScaNN's recall against exact search is measured on this many queries.
    scann_check_queries: int = 1000
    batch_size: int = 64  # on 2 CPU cores faster than 256 (docs/configuration.md)
    # Evaluate during training every this many epochs (0: only after training).
    every_epochs: int = 4
    # The metric that picks the best epoch, `<network>/<metric>`.
    monitor: str = "ensemble/recall@1"
    # Whose weights a run reports (metrics.json) and exports: the last epoch's, or the
    # best evaluated epoch's by `monitor` (the last epoch included). Last by default: the
    # best picked on the test classes would flatter their metrics (use best with
    # data.split: validation).
    keep: str = "last"
    # The retrieval grid picture: this many queries, each with its nearest neighbours.
    grid_queries: int = 8
    grid_neighbors: int = 5


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    # Off: train and evaluate only (benchmarks/reproduce.py sweeps).
    enabled: bool = True
    directory: str = "saved_models"
    # The network whose embeddings the gallery index holds and `main.py search` uses.
    gallery_network: str = "ensemble"
    # Side of the gallery thumbnails kept with the index for search pictures, in px.
    thumbnail_size: int = 48
    # Matches printed and drawn by `main.py search`.
    search_k: int = 5
