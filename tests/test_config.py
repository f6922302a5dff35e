"""Every config rule: a bad key or value raises a ConfigError naming the key, the value
received and what is allowed (dmml_tf/config/)."""

import re
import warnings
from pathlib import Path

import pytest

from dmml_tf.config import CohortConfig, Config, dataset_slug, load_config
from dmml_tf.errors import ConfigError

RULES = [
    ("loss.marginn=0.3", "Unknown config key `loss.marginn`"),
    ("cohort.members=two", "Config key `cohort.members` expects int. Received: cohort.members='two'"),
    ("data.image_size=0", "`data.image_size` must be at least 1. Received: data.image_size=0"),
    ("data.images_per_class=1", "`data.images_per_class` must be at least 2"),
    ("data.test_fraction=1.5", "`data.test_fraction` must be in (0, 1)"),
    ("data.split=train", "`data.split` supports: test, validation. Received: data.split='train'"),
    ("data.validation_fraction=0", "`data.validation_fraction` must be in (0, 1)"),
    ("data.source=zip", "`data.source` supports: auto, official, tfds"),
    ("data.crop_scale=[0.5, 0.2]", "`data.crop_scale` must be [low, high]"),
    ("data.resize_size=32", "`data.resize_size` must be 0 or at least data.image_size (64)"),
    ("data.dataset=imagenette", "`data.dataset` supports: emoji_styles, icon_concepts, cub200, cars196, "
     "folder:PATH. Received: data.dataset='imagenette'"),
    ("data.dataset='folder:'", "`data.dataset` supports"),
    ("model.backbone=resnet", "`model.backbone` supports: mobilenet_v2, tiny_cnn"),
    ("model.backbone=[mobilenet_v2]", "`model.backbone` lists 1 entries for 2 members"),
    ("cohort.teachers=teacher", "`cohort.teachers` supports: peers, shadows, both"),
    ("cohort.ema_decay=1.0", "`cohort.ema_decay` must be in [0, 1)"),
    ("cohort.ema_warmup_steps=-1", "`cohort.ema_warmup_steps` must be 0 or more"),
    ("cohort.ema_every_steps=0", "`cohort.ema_every_steps` must be at least 1"),
    ("loss.mining=hardest", "`loss.mining` supports: semi_hard, batch_hard, distance_weighted"),
    ("loss.relational=kl", "`loss.relational` supports: rkd, similarity_kl. "
     "Received: loss.relational='kl'"),
    ("loss.relational_temperature=0", "`loss.relational_temperature` must be positive"),
    ("train.schedule=linear", "`train.schedule` supports: constant, step, cosine"),
    ("train.strategy=tpu", "`train.strategy` supports: mirrored, multi_worker"),
    ("train.step_epochs=[0]", "`train.step_epochs` must list positive epochs"),
    ("train.precision=float16", "`train.precision` supports: float32, mixed_float16, mixed_bfloat16"),
    ("evaluate.backend=faiss", "`evaluate.backend` supports: scann, exact"),
    ("evaluate.every_epochs=-1", "`evaluate.every_epochs` must be 0 or more"),
    ("evaluate.recall_at=[0]", "`evaluate.recall_at` must list positive integers"),
    ("evaluate.monitor=ensembl/recall@1", "`evaluate.monitor` must be `<network>/<metric>` "
     "with a network of member0, member1, shadow0, shadow1, ensemble, shadow_ensemble"),
    ("evaluate.monitor=ensemble/recall@3", "and a metric of recall@1, recall@2, recall@4, "
     "recall@8, map@r, r_precision, mrr, knn_accuracy, nmi. Received: evaluate.monitor='ensemble/recall@3'"),
    ("evaluate.keep=first", "`evaluate.keep` supports: last, best. Received: evaluate.keep='first'"),
    ("evaluate.grid_queries=0", "`evaluate.grid_queries` must be at least 1"),
    ("export.gallery_network=member2", "`export.gallery_network` supports: member0, member1, "
     "shadow0, shadow1, ensemble, shadow_ensemble. Received: export.gallery_network='member2'"),
]


@pytest.mark.parametrize("override, message", RULES, ids=[o.partition("=")[0] + "=" + o.partition("=")[2][:12] for o, _ in RULES])
def test_bad_value_names_key_value_and_choices(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert message in str(error.value)


def test_monitor_and_gallery_follow_the_number_of_members():
    config = load_config(None, ["cohort.members=3", "evaluate.monitor=shadow2/map@r",
                                "export.gallery_network=member2"])
    assert config.evaluate.monitor == "shadow2/map@r"


@pytest.mark.parametrize("old, value, new, expected", [
    ("ema_every", 3, "ema_every_steps", 3),
    ("ema_warmup", False, "ema_warmup_steps", 0),
    ("ema_warmup", True, "ema_warmup_steps", CohortConfig.ema_warmup_steps),
    ("model_diversity", False, "own_seeds", False),
], ids=["every", "warmup_off", "warmup_on", "model_diversity"])
def test_old_keys_load_with_a_deprecation_warning(old, value, new, expected):
    with pytest.warns(FutureWarning, match=f"`cohort.{old}` is deprecated: use `cohort.{new}`"):
        config = load_config(None, [f"cohort.{old}={value}"])
    assert getattr(config.cohort, new) == expected


def test_defaults_load_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config(None) == Config()


def test_folder_datasets_get_safe_distinct_folder_names(tmp_path):
    first, second = tmp_path / "a" / "My Birds:2024", tmp_path / "b" / "My Birds:2024"
    names = [dataset_slug(f"folder:{path}") for path in (first, second)]
    assert all(re.fullmatch(r"folder-My-Birds-2024-[0-9a-f]{8}", name) for name in names)
    assert names[0] != names[1]  # same folder name, different folders
    assert dataset_slug(f"folder:{first}/") == names[0]  # the same folder, written otherwise
    config = load_config(None, [f"data.dataset=folder:{first}", "run_directory=runs"])
    assert config.run_folder() == Path("runs") / names[0]
    assert config.export_folder() == Path("saved_models") / names[0]
    assert load_config(None).run_folder() == Path("runs/emoji_styles")


def test_float16_loss_scaling_needs_one_optimizer():
    with pytest.raises(ConfigError, match="scales the loss of one optimizer"):
        load_config(None, ["train.precision=mixed_float16", "train.backbone_learning_rate=1e-5"])


def test_keeping_the_best_epoch_needs_evaluations_during_training():
    with pytest.raises(ConfigError, match="`evaluate.keep: best` picks among the epochs evaluated"):
        load_config(None, ["evaluate.keep=best", "evaluate.every_epochs=0"])


def test_exponent_floats_without_a_dot_load_as_floats():
    assert load_config(None, ["train.learning_rate=1e-5"]).train.learning_rate == 1e-5


def test_an_old_key_beside_its_new_name_is_an_error():
    with pytest.raises(ConfigError, match="`cohort.ema_every` .deprecated. and "
                                          "`cohort.ema_every_steps` are both given"):
        load_config(None, ["cohort.ema_every_steps=1", "cohort.ema_every=2"])
