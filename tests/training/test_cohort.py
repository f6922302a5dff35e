import numpy as np
import pytest

from dmml_tf.config import load_config
from dmml_tf.errors import ConfigError
from dmml_tf.training.cohort import build_cohort

TINY = ["data.image_size=32", "data.classes_per_batch=4", "model.embedding_dim=16",
        "views.policy=[]"]


@pytest.mark.slow
def test_heterogeneous_cohort_with_backbone_learning_rate_trains():
    config = load_config(None, [*TINY, "model.backbone=[tiny_cnn, efficientnet_b0]",
                                "model.weights=[null, null]", "train.learning_rate=0.01",
                                "train.backbone_learning_rate=0.0", "loss.angle_weight=1.0"])
    model = build_cohort(config, steps_per_epoch=5)
    backbones = [member.get_layer("frozen_batchnorm").layer for member in model.members]
    assert [b.count_params() < 10_000 for b in backbones] == [True, False]  # tiny_cnn, EfficientNetB0
    before = [w.copy() for w in model.get_weights()]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 3)).astype("float32")
    history = model.fit(images, np.repeat(np.arange(4), 4), batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = {id(w): not np.array_equal(old, w.numpy())
               for old, w in zip(before, model.weights)}
    heads = [w for member in model.members for w in member.get_layer("head").weights]
    assert all(changed[id(w)] for w in heads)
    # Backbone learning rate 0: no backbone weight of a member moved.
    assert not any(changed[id(w)] for b in backbones for w in b.trainable_weights)


@pytest.mark.parametrize("members", [1, 4], ids=["M1", "M4"])
def test_cohort_size_from_config(members):
    config = load_config(None, [*TINY, "model.backbone=tiny_cnn", "model.weights=null",
                                f"cohort.members={members}"])
    model = build_cohort(config, steps_per_epoch=5)
    assert len(model.members) == len(model.shadows) == members
    assert len({id(m.get_layer("head").kernel) for m in model.members}) == members


def test_per_member_backbones_must_match_the_cohort_size():
    with pytest.raises(ConfigError, match="lists 3 entries for 2 members"):
        load_config(None, ["model.backbone=[tiny_cnn, tiny_cnn, tiny_cnn]"])
