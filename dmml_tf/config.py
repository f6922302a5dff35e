"""One typed config: YAML -> frozen dataclasses that hold every default.

Unknown keys and wrongly typed values are rejected with the key's full path, so a typo
never silently falls back to a default. `--set section.key=value` overrides go through
the same checks. The resolved config is saved beside every run and export.
"""

import dataclasses
import hashlib
import re
import types
import typing
import warnings
from pathlib import Path

import yaml

from dmml_tf.errors import ConfigError
from dmml_tf.losses.metric_losses import METRIC_LOSSES
from dmml_tf.losses.relational import RELATIONAL
from dmml_tf.losses.triplet import MINERS, REDUCTIONS
from dmml_tf.models.backbones import BACKBONES

# Choices whose registries live in layers above config (tests/test_configs.py checks that
# they agree): data.registry.DATASETS, retrieval.index.BACKENDS,
# training.optimizers.SCHEDULES, training.distribute.STRATEGIES.
DATASETS = ("emoji_styles", "icon_concepts", "cub200", "cars196", "folder:PATH")
BACKENDS = ("scann", "exact")
KEEP = ("last", "best")
TEACHERS = ("peers", "shadows", "both")
SCHEDULES = ("constant", "step", "cosine")
STRATEGIES = ("mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")  # Keras dtype policies


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


def _check_choice(key, value, choices):
    if value not in choices:
        raise ConfigError(f"Config key `{key}` supports: {', '.join(choices)}. "
                          f"Received: {key}={value!r}")


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
        _check_choice("cohort.teachers", self.teachers, TEACHERS)
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
        _check_choice("loss.metric", self.metric, ("triplet", *METRIC_LOSSES))
        _check_metric_options(self.metric, self.metric_options)
        if self.proxy_lr_multiplier is not None and self.proxy_lr_multiplier <= 0:
            raise ConfigError("Config key `loss.proxy_lr_multiplier` must be positive or null. "
                              f"Received: loss.proxy_lr_multiplier={self.proxy_lr_multiplier}")
        _check_choice("loss.mining", self.mining, tuple(MINERS))
        _check_choice("loss.triplet_reduction", self.triplet_reduction, REDUCTIONS)
        _check_choice("loss.relational", self.relational, tuple(RELATIONAL))
        if self.relational_temperature <= 0:
            raise ConfigError("Config key `loss.relational_temperature` must be positive. "
                              f"Received: loss.relational_temperature={self.relational_temperature}")


    def uses_proxies(self):
        """Whether the metric loss trains proxies (one vector per training class)."""
        return self.metric != "triplet" and METRIC_LOSSES[self.metric].uses_proxies

    def proxy_multiplier(self):
        """The proxies' learning rate as a multiple of the heads'."""
        return self.proxy_lr_multiplier or METRIC_LOSSES[self.metric].proxy_lr_multiplier


def _check_metric_options(metric, options):
    """Each key a keyword of the metric loss, each value of its default's type."""
    defaults = {} if metric == "triplet" else METRIC_LOSSES[metric].defaults
    for key, value in options.items():
        name = f"loss.metric_options.{key}"
        if key not in defaults:
            known = ", ".join(defaults) or "none (its keys are margin, mining, triplet_reduction)"
            raise ConfigError(f"Unknown config key `{name}` for loss.metric={metric}. "
                              f"Known keys: {known}. Received: {name}={value!r}")
        expected = type(defaults[key])
        numeric = expected is float and isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (numeric or isinstance(value, expected)):
            raise ConfigError(f"Config key `{name}` expects {expected.__name__}. "
                              f"Received: {name}={value!r}")
        if key == "reduction":
            _check_choice(name, value, REDUCTIONS)


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
        _check_choice("train.schedule", self.schedule, SCHEDULES)
        _check_choice("train.strategy", self.strategy, STRATEGIES)
        _check_choice("train.precision", self.precision, PRECISIONS)
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


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    run_directory: str = "runs"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    cohort: CohortConfig = CohortConfig()
    loss: LossConfig = LossConfig()
    views: ViewsConfig = ViewsConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    export: ExportConfig = ExportConfig()

    def run_folder(self):
        """`<run_directory>/<dataset slug>`: this run's checkpoints, metrics and pictures."""
        return Path(self.run_directory) / dataset_slug(self.data.dataset)

    def export_folder(self):
        """`<export.directory>/<dataset slug>`: this run's SavedModels and gallery index."""
        return Path(self.export.directory) / dataset_slug(self.data.dataset)


def dataset_slug(dataset):
    """A folder name for `dataset`: itself, or for `folder:PATH` the folder's name and a
    short hash of its absolute path (two folders of one name do not collide).

    `"folder:/data/My Birds"` -> `"folder-My-Birds-1a2b3c4d"`.
    """
    kind, _, path = dataset.partition(":")
    if kind != "folder" or not path:
        return dataset
    absolute = Path(path).expanduser().resolve()
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", absolute.name).strip("-.") or "images"
    return f"folder-{name}-{hashlib.sha256(str(absolute).encode()).hexdigest()[:8]}"


def _check_value(key, value, annotation):
    """Return `value` converted to `annotation`, or raise a ConfigError naming `key`."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if option is tuple and isinstance(value, (list, tuple)):
            return tuple(value)
        if option is dict and isinstance(value, dict):
            return dict(value)
    if float in options and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-5 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    names = " or ".join("null" if o is type(None) else o.__name__ for o in options)
    raise ConfigError(f"Config key `{key}` expects {names}. Received: {key}={value!r}")


# Old key -> (its new key, the new value for an old one); an old key still loads, with a
# warning that names the new one.
RENAMED_KEYS = {
    "cohort.ema_every": ("cohort.ema_every_steps", lambda every: every),
    "cohort.model_diversity": ("cohort.own_seeds", lambda own: own),
    "cohort.ema_warmup": ("cohort.ema_warmup_steps",
                          lambda on: CohortConfig.ema_warmup_steps if on else 0),
}


def _rename_old_keys(values, prefix):
    for old, (new, convert) in RENAMED_KEYS.items():
        section, _, key = old.rpartition(".")
        if f"{section}." == prefix and key in values:
            new_key = new.rpartition(".")[2]
            value = values.pop(key)
            if new_key in values:
                raise ConfigError(f"Config keys `{old}` (deprecated) and `{new}` are both "
                                  f"given; give only `{new}`. Received: {old}={value!r}, "
                                  f"{new}={values[new_key]!r}")
            values[new_key] = convert(value)
            warnings.warn(f"Config key `{old}` is deprecated: use `{new}` "
                          f"({new}={values[new_key]!r}). Received: {old}={value!r}",
                          FutureWarning, stacklevel=2)
    return values


def _build(cls, values, prefix=""):
    if not isinstance(values, dict):
        raise ConfigError(f"Config section `{prefix or 'top level'}` must be a mapping. "
                          f"Received: {values!r}")
    values = _rename_old_keys(dict(values), prefix)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(f"Unknown config key `{key}`. Known keys in this section: "
                          f"{', '.join(sorted(fields))}. Received: {key}")
    kwargs = {}
    for name, value in values.items():
        field_type = typing.get_type_hints(cls)[name]
        if dataclasses.is_dataclass(field_type):
            kwargs[name] = _build(field_type, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_value(f"{prefix}{name}", value, field_type)
    return cls(**kwargs)


def _validate(config):
    positive = {
        "data.image_size": config.data.image_size,
        "data.classes_per_batch": config.data.classes_per_batch,
        "data.images_per_class": config.data.images_per_class,
        "model.embedding_dim": config.model.embedding_dim,
        "cohort.members": config.cohort.members,
        "cohort.ema_every_steps": config.cohort.ema_every_steps,
        "train.epochs": config.train.epochs,
        "train.checkpoint_every_steps": config.train.checkpoint_every_steps,
        "train.log_every_steps": config.train.log_every_steps,
        "evaluate.batch_size": config.evaluate.batch_size,
        "evaluate.scann_check_queries": config.evaluate.scann_check_queries,
        "evaluate.grid_queries": config.evaluate.grid_queries,
        "evaluate.grid_neighbors": config.evaluate.grid_neighbors,
        "evaluate.exact_below": config.evaluate.exact_below,
        "export.thumbnail_size": config.export.thumbnail_size,
        "export.search_k": config.export.search_k,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"Config key `{key}` must be at least 1. Received: {key}={value}")
    if config.data.images_per_class < 2:
        raise ConfigError("Config key `data.images_per_class` must be at least 2 (a triplet "
                          f"needs a positive). Received: {config.data.images_per_class}")
    if not 0.0 < config.data.test_fraction < 1.0:
        raise ConfigError("Config key `data.test_fraction` must be in (0, 1). "
                          f"Received: data.test_fraction={config.data.test_fraction}")
    if config.cohort.ema_warmup_steps < 0:
        raise ConfigError("Config key `cohort.ema_warmup_steps` must be 0 or more. "
                          f"Received: cohort.ema_warmup_steps={config.cohort.ema_warmup_steps}")
    if not 0.0 <= config.cohort.ema_decay < 1.0:
        raise ConfigError("Config key `cohort.ema_decay` must be in [0, 1). "
                          f"Received: cohort.ema_decay={config.cohort.ema_decay}")
    for key, value in (("backbone", config.model.backbone), ("weights", config.model.weights)):
        if isinstance(value, tuple) and len(value) != config.cohort.members:
            raise ConfigError(f"Config key `model.{key}` lists {len(value)} entries for "
                              f"{config.cohort.members} members (cohort.members); give one per "
                              f"member or a single value. Received: model.{key}={list(value)}")
    _check_choice("evaluate.backend", config.evaluate.backend, BACKENDS)
    if config.evaluate.every_epochs < 0:
        raise ConfigError("Config key `evaluate.every_epochs` must be 0 or more. "
                          f"Received: evaluate.every_epochs={config.evaluate.every_epochs}")
    _check_choice("evaluate.keep", config.evaluate.keep, KEEP)
    if config.evaluate.keep == "best" and not config.evaluate.every_epochs:
        raise ConfigError("Config key `evaluate.keep: best` picks among the epochs evaluated "
                          "during training; set evaluate.every_epochs to 1 or more. "
                          "Received: evaluate.every_epochs=0")
    if any(not isinstance(k, int) or k < 1 for k in config.evaluate.recall_at):
        raise ConfigError("Config key `evaluate.recall_at` must list positive integers. "
                          f"Received: {config.evaluate.recall_at}")
    for member in range(config.cohort.members):
        _check_choice("model.backbone", config.model.backbone_of(member), tuple(BACKBONES))
    kind, colon, argument = config.data.dataset.partition(":")
    if kind not in [name.partition(":")[0] for name in DATASETS] or \
            bool(colon) != (kind == "folder") or (colon and not argument):
        _check_choice("data.dataset", config.data.dataset, DATASETS)
    network, _, metric = config.evaluate.monitor.partition("/")
    if network not in networks_of(config) or metric not in metrics_of(config):
        raise ConfigError("Config key `evaluate.monitor` must be `<network>/<metric>` with a "
                          f"network of {', '.join(networks_of(config))} and a metric of "
                          f"{', '.join(metrics_of(config))}. "
                          f"Received: evaluate.monitor={config.evaluate.monitor!r}")
    _check_choice("export.gallery_network", config.export.gallery_network, networks_of(config))


def networks_of(config):
    """The names of the networks a run evaluates and exports."""
    members = range(config.cohort.members)
    return (*(f"member{m}" for m in members), *(f"shadow{m}" for m in members), "ensemble",
            "shadow_ensemble")


def metrics_of(config):
    """The metrics every evaluation reports (dmml_tf.retrieval.evaluate)."""
    return (*(f"recall@{k}" for k in config.evaluate.recall_at), "map@r", "r_precision", "mrr",
            "knn_accuracy", "nmi")


def _set_nested(values, dotted_key, value):
    *sections, last = dotted_key.split(".")
    node = values
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"Override `{dotted_key}`: `{section}` is not a section.")
    node[last] = value


def load_config(path=None, overrides=()):
    """Build a `Config` from a YAML file and `section.key=value` overrides.

    Args:
        path: str or Path or None. YAML file; `None` uses the defaults.
        overrides: iterable of str. Each `section.key=value`, the value parsed as YAML.
    """
    values = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"Config file {path} is not valid YAML: {error}") from None
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"Override must look like section.key=value. Received: {override!r}")
        _set_nested(values, key.strip(), yaml.safe_load(raw))
    config = _build(Config, values)
    _validate(config)
    return config


def config_to_dict(config):
    """Plain nested dict (tuples as lists), suitable for YAML and JSON."""
    def plain(value):
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(dataclasses.asdict(config))


def save_config(config, path):
    """Write the resolved config as YAML to `path`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
