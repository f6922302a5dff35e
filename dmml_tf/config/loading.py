"""YAML and `--set section.key=value` overrides -> a validated `Config`; old keys that
still load; the resolved config written beside every run.

Unknown keys and wrongly typed values are rejected with the key's full path, so a typo
never silently falls back to a default.
"""

import dataclasses
import hashlib
import re
import typing
import warnings
from pathlib import Path

import yaml

from dmml_tf.config.checks import BACKENDS, DATASETS, KEEP, check_choice, check_value
from dmml_tf.config.sections import (CohortConfig, DataConfig, EvaluateConfig, ExportConfig,
                                     LossConfig, ModelConfig, TrainConfig, ViewsConfig)
from dmml_tf.errors import ConfigError
from dmml_tf.models.backbones import BACKBONES


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
            kwargs[name] = check_value(f"{prefix}{name}", value, field_type)
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
    check_choice("evaluate.backend", config.evaluate.backend, BACKENDS)
    if config.evaluate.every_epochs < 0:
        raise ConfigError("Config key `evaluate.every_epochs` must be 0 or more. "
                          f"Received: evaluate.every_epochs={config.evaluate.every_epochs}")
    check_choice("evaluate.keep", config.evaluate.keep, KEEP)
    if config.evaluate.keep == "best" and not config.evaluate.every_epochs:
        raise ConfigError("Config key `evaluate.keep: best` picks among the epochs evaluated "
                          "during training; set evaluate.every_epochs to 1 or more. "
                          "Received: evaluate.every_epochs=0")
    if any(not isinstance(k, int) or k < 1 for k in config.evaluate.recall_at):
        raise ConfigError("Config key `evaluate.recall_at` must list positive integers. "
                          f"Received: {config.evaluate.recall_at}")
    for member in range(config.cohort.members):
        check_choice("model.backbone", config.model.backbone_of(member), tuple(BACKBONES))
    kind, colon, argument = config.data.dataset.partition(":")
    if kind not in [name.partition(":")[0] for name in DATASETS] or \
            bool(colon) != (kind == "folder") or (colon and not argument):
        check_choice("data.dataset", config.data.dataset, DATASETS)
    network, _, metric = config.evaluate.monitor.partition("/")
    if network not in networks_of(config) or metric not in metrics_of(config):
        raise ConfigError("Config key `evaluate.monitor` must be `<network>/<metric>` with a "
                          f"network of {', '.join(networks_of(config))} and a metric of "
                          f"{', '.join(metrics_of(config))}. "
                          f"Received: evaluate.monitor={config.evaluate.monitor!r}")
    check_choice("export.gallery_network", config.export.gallery_network, networks_of(config))


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
