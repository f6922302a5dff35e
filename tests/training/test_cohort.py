import json

import keras
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


def tiny_cohort(*overrides):
    config = load_config(None, [*TINY, "model.backbone=tiny_cnn", "model.weights=null",
                                *overrides])
    return build_cohort(config, steps_per_epoch=5)


def tiny_batch():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (16, 32, 32, 3)).astype("float32"), np.repeat(np.arange(4), 4)


def batchnorm_statistics(network):
    return {w.path: w.numpy().copy() for w in network.weights
            if "moving_mean" in w.path or "moving_variance" in w.path}


@pytest.mark.parametrize("diversity", [True, False], ids=["own_seeds", "one_seed"])
def test_own_seeds_give_members_their_own_or_identical_starts(diversity):
    model = tiny_cohort(f"cohort.own_seeds={str(diversity).lower()}")
    first, second = (m.get_weights() for m in model.members)
    identical = all(np.array_equal(a, b) for a, b in zip(first, second))
    assert identical != diversity
    images, _ = tiny_batch()
    z0, z1 = (m(images, training=False).numpy() for m in model.members)
    assert np.array_equal(z0, z1) != diversity  # the same first-step embeddings without it


def test_frozen_batchnorm_keeps_its_statistics_while_gamma_and_beta_train():
    model = tiny_cohort("model.freeze_batchnorm=true", "train.learning_rate=0.01")
    before = batchnorm_statistics(model.members[0])
    gammas = [w.numpy().copy() for w in model.members[0].weights if "gamma" in w.path]
    images, labels = tiny_batch()
    model.fit(images, labels, batch_size=16, epochs=3, verbose=0)
    after = batchnorm_statistics(model.members[0])
    assert len(before) == 4  # two BatchNorm layers in tiny_cnn, mean and variance each
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert any(not np.array_equal(old, w.numpy())
               for old, w in zip(gammas, [w for w in model.members[0].weights if "gamma" in w.path]))


def test_shadow_batchnorm_statistics_follow_the_ema_of_the_member():
    model = tiny_cohort("model.freeze_batchnorm=false", "cohort.ema_decay=0.9",
                        "cohort.ema_warmup_steps=0")
    shadow_before = batchnorm_statistics(model.shadows[0])
    images, labels = tiny_batch()
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)  # one step
    member, shadow = batchnorm_statistics(model.members[0]), batchnorm_statistics(model.shadows[0])
    for (name, old), member_value, shadow_value in zip(shadow_before.items(), member.values(),
                                                       shadow.values()):
        assert not np.allclose(member_value, old), name  # training moved the member's statistics
        np.testing.assert_allclose(shadow_value, 0.9 * old + 0.1 * member_value, rtol=1e-5, atol=1e-7)


# float16 adds loss scaling to what bfloat16 checks; in the full suite only.
@pytest.mark.parametrize("precision", ["mixed_bfloat16",
                                       pytest.param("mixed_float16", marks=pytest.mark.slow)])
def test_mixed_precision_backbones_with_float32_heads_losses_and_shadows(precision):
    model = tiny_cohort(f"train.precision={precision}")
    member = model.members[0]
    compute = {layer.name: layer.dtype_policy.compute_dtype
               for layer in member.get_layer("frozen_batchnorm").layer.layers}
    assert precision.removeprefix("mixed_") in set(compute.values())
    assert member.get_layer("head").dtype_policy.compute_dtype == "float32"
    assert {w.dtype for w in model.weights} == {"float32"}  # variables, shadows included
    is_scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert is_scaled == (precision == "mixed_float16")
    images, labels = tiny_batch()
    before = [w.numpy().copy() for w in member.get_layer("head").weights]
    history = model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(before[0], member.get_layer("head").kernel.numpy())
    embeddings = model.members[0](images)
    assert embeddings.dtype == "float32"
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def test_head_dropout_is_seeded_per_member_and_off_in_inference():
    model = tiny_cohort("model.dropout=0.5")
    images, _ = tiny_batch()
    member0, member1 = model.members
    assert [m.get_layer("dropout").seed for m in model.members] == [0, 1]
    inference = member0(images, training=False).numpy()
    np.testing.assert_array_equal(inference, member0(images, training=False).numpy())
    assert not np.allclose(inference, member0(images, training=True).numpy())
    np.testing.assert_array_equal(inference, model.shadows[0](images, training=False).numpy())


def test_backbones_stay_frozen_for_their_first_steps_then_train():
    model = tiny_cohort("train.learning_rate=0.01", "train.backbone_frozen_steps=2")
    backbone = model.members[0].get_layer("frozen_batchnorm").layer
    head = model.members[0].get_layer("head")
    images, labels = tiny_batch()
    weights = lambda layer: [w.numpy().copy() for w in layer.trainable_weights]  # noqa: E731
    start_backbone, start_head = weights(backbone), weights(head)
    model.fit(images, labels, batch_size=16, epochs=2, verbose=0)  # steps 0 and 1: frozen
    assert all(np.array_equal(a, b) for a, b in zip(start_backbone, weights(backbone)))
    assert not np.array_equal(start_head[0], weights(head)[0])
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)  # step 2 trains the backbone
    assert not all(np.array_equal(a, b) for a, b in zip(start_backbone, weights(backbone)))


def test_a_proxy_loss_from_the_config_trains_its_proxies_at_their_own_rate():
    config = load_config(None, [*TINY, "model.backbone=tiny_cnn", "model.weights=null",
                                "loss.metric=proxy_anchor", "loss.metric_options={alpha: 16.0}",
                                "train.learning_rate=0.001"])
    model = build_cohort(config, steps_per_epoch=5, classes=[0, 1, 2, 3])
    assert float(model.proxy_optimizer.learning_rate) == pytest.approx(0.1)  # 100 x 0.001
    images, labels = tiny_batch()
    proxies = [p.vectors.numpy().copy() for p in model.proxies]
    history = model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["member0_proxy_anchor"][0])
    assert all(not np.allclose(a, p.vectors.numpy()) for a, p in zip(proxies, model.proxies))


def test_bad_metric_loss_options_stop_at_load():
    with pytest.raises(ConfigError, match=r"Unknown config key `loss.metric_options.gamma` for "
                                          r"loss.metric=arcface. Known keys: scale, margin"):
        load_config(None, ["loss.metric=arcface", "loss.metric_options={gamma: 2.0}"])


def test_before_training_is_the_members_own_start(tmp_path):
    from dmml_tf.data.registry import load_dataset
    from dmml_tf.retrieval.evaluate import embed, retrieval_metrics
    from dmml_tf.run import INITIAL_RESULTS, initial_results

    config = load_config(None, [*TINY, "model.backbone=tiny_cnn", "model.weights=null",
                                "data.max_classes=24", "evaluate.backend=exact",
                                "evaluate.recall_at=[1, 2]"])
    splits = load_dataset(config.data, config.seed, log=lambda line: None)
    model = build_cohort(config, steps_per_epoch=5)
    initial_results(config, model, tmp_path, splits, {})
    results = json.loads((tmp_path / INITIAL_RESULTS).read_text())["results"]
    assert list(results) == ["member0 before training", "member1 before training",
                             "ensemble before training"]
    for m, member in enumerate(model.members):  # these very networks, not another backbone
        expected = retrieval_metrics(embed(member, splits.test_images, 64), splits.test_labels,
                                     (1, 2), backend="exact")
        assert results[f"member{m} before training"] == pytest.approx(expected, abs=1e-6)
