"""One source for every default: the config dataclasses. Each constructor or function
default below must equal the config value a default run uses."""

import importlib.util
import inspect
import json

import pytest

from dmml_tf.config import Config, load_config
from dmml_tf.export import export_embedder
from dmml_tf.losses.relational import RelationalLoss, relational_loss, similarity_kl_loss
from dmml_tf.losses.triplet import TripletLoss, triplet_loss
from dmml_tf.models.backbones import tiny_cnn
from dmml_tf.models.embedder import build_embedder
from dmml_tf.retrieval.evaluate import retrieval_metrics
from dmml_tf.training.callbacks import ExportBest, RetrievalEvaluation
from dmml_tf.training.checkpoints import ResumableCheckpoint
from dmml_tf.training.dm2 import DM2Model
from tests.test_configs import CONFIGS

DOCS = CONFIGS.parent / "docs"

C = Config()
# (callable, parameter, the config value it must default to)
DEFAULTS = [
    (DM2Model, "log_every_steps", C.train.log_every_steps),
    (TripletLoss, "margin", C.loss.margin), (TripletLoss, "mining", C.loss.mining),
    (TripletLoss, "reduction", C.loss.triplet_reduction),
    (triplet_loss, "margin", C.loss.margin), (triplet_loss, "mining", C.loss.mining),
    (triplet_loss, "reduction", C.loss.triplet_reduction),
    (RelationalLoss, "relational", C.loss.relational),
    (RelationalLoss, "distance_weight", C.loss.distance_weight),
    (RelationalLoss, "angle_weight", C.loss.angle_weight),
    (RelationalLoss, "temperature", C.loss.relational_temperature),
    (relational_loss, "relational", C.loss.relational),
    (relational_loss, "distance_weight", C.loss.distance_weight),
    (relational_loss, "angle_weight", C.loss.angle_weight),
    (relational_loss, "temperature", C.loss.relational_temperature),
    (similarity_kl_loss, "temperature", C.loss.relational_temperature),
    (build_embedder, "freeze_batchnorm", C.model.freeze_batchnorm),
    (build_embedder, "dropout", C.model.dropout),
    (export_embedder, "resize_size", C.data.resize_size),
    (retrieval_metrics, "ks", C.evaluate.recall_at),
    (retrieval_metrics, "backend", C.evaluate.backend),
    (retrieval_metrics, "exact_below", C.evaluate.exact_below),
    (retrieval_metrics, "check_queries", C.evaluate.scann_check_queries),
    *[(RetrievalEvaluation, name, getattr(C.evaluate, name)) for name in
      ("every_epochs", "monitor", "recall_at", "backend", "exact_below",
       "scann_check_queries", "batch_size")],
    (ExportBest, "monitor", C.evaluate.monitor),
    (ExportBest, "network", C.export.gallery_network),
    (ExportBest, "resize_size", C.data.resize_size),
    (ResumableCheckpoint, "save_every_steps", C.train.checkpoint_every_steps),
]


@pytest.mark.parametrize("function, parameter, expected", DEFAULTS,
                         ids=[f"{f.__name__}.{p}" for f, p, _ in DEFAULTS])
def test_default_equals_the_config(function, parameter, expected):
    default = inspect.signature(function).parameters[parameter].default
    assert default == expected


def test_dm2_model_takes_its_defaults_from_the_config():
    members = [build_embedder(tiny_cnn((16, 16, 3), seed=s), 4, seed=s) for s in range(2)]
    model = DM2Model(members)
    assert model.loss_config == C.loss and model.cohort_config == C.cohort


def test_the_default_config_file_runs_the_package_defaults():
    # configs/emoji_styles.yaml lists every key; each value it lists is what runs without it.
    assert load_config(CONFIGS / "emoji_styles.yaml") == Config()


def reproduce():
    """benchmarks/reproduce.py as a module: its protocols' candidates."""
    path = CONFIGS.parent / "benchmarks" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_emoji_styles_config_is_its_sweeps_choice():
    # The package defaults with the relational sweep's winner by its rule.
    expected = load_config(None, reproduce().winner(DOCS / "results_validation.json")[1])
    assert load_config(CONFIGS / "emoji_styles.yaml") == expected


def test_icon_concepts_config_is_its_protocols_choice():
    # The package defaults on icon_concepts, at the schedule the grid chose for
    # independent training (step 1), with step 2's DM2 winner once every candidate has run.
    chosen = json.loads((DOCS / "results_icon_concepts_grid.json").read_text())["summary"]["chosen"]
    overrides = ["data.dataset=icon_concepts", f"train.learning_rate={chosen['learning_rate']}",
                 f"train.epochs={chosen['epochs']}"]
    validation = DOCS / "results_icon_concepts_validation.json"
    summary = json.loads(validation.read_text())["summary"] if validation.exists() else {}
    module = reproduce()
    if set(module.DIVERSITY) <= set(summary):
        overrides += module.DIVERSITY[module.chosen(summary)]
    assert load_config(CONFIGS / "icon_concepts.yaml") == load_config(None, overrides)
