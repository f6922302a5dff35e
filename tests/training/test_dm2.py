import dataclasses

import numpy as np
import keras
import pytest
import tensorflow as tf

from dmml_tf.config import ViewsConfig
from dmml_tf.data.views import build_view
from dmml_tf.losses.relational import relational_angle_loss, relational_distance_loss
from dmml_tf.losses.triplet import triplet_loss
from dmml_tf.models.backbones import tiny_cnn
from dmml_tf.models.embedder import build_embedder
from dmml_tf.training.dm2 import DM2Model

SIZE = 32


def make_model(views=None, members=2, **kwargs):
    members = [build_embedder(tiny_cnn((SIZE, SIZE, 3), seed=s), 8, seed=s, name=f"member{s}")
               for s in range(members)]
    return DM2Model(members, views, **kwargs)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, SIZE, SIZE, 3)).astype("float32")
    labels = np.repeat(np.arange(4), 4).astype("int32")
    return images, labels


@pytest.mark.parametrize("mining", ["semi_hard", "batch_hard", "distance_weighted"])
def test_total_loss_is_triplet_plus_lambda_times_mean_over_teachers(batch, mining):
    images, labels = batch
    model = make_model(relational_weight=3.0, angle_weight=0.5, mining=mining, seed=4)
    z = [member(images) for member in model.members]
    zbar = [shadow(images) for shadow in model.shadows]
    total, terms = model.cohort_losses(labels, z, zbar, step=7)
    expected = 0.0
    for m in range(2):
        teachers = [z[1 - m], *zbar]  # the peer, then both shadows
        relational = np.mean([relational_distance_loss(z[m], t).numpy()
                              + 0.5 * relational_angle_loss(z[m], t).numpy() for t in teachers])
        triplet = triplet_loss(labels, z[m], 0.2, mining, seed=(4 + m, 7)).numpy()
        np.testing.assert_allclose(terms[f"member{m}_relational"].numpy(), relational, rtol=1e-6)
        np.testing.assert_allclose(terms[f"member{m}_triplet"].numpy(), triplet, rtol=1e-6)
        expected += triplet + 3.0 * relational
    np.testing.assert_allclose(total.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "switches, expected",
    [({}, ["z1", "z2", "s0", "s1", "s2"]), ({"teachers": "peers"}, ["z1", "z2"]),
     ({"teachers": "shadows"}, ["s0", "s1", "s2"]), ({"mutual": False}, [])],
    ids=["both", "peers", "shadows", "not_mutual"],
)
def test_switches_select_teachers(switches, expected):
    model = make_model(members=3, **switches)
    assert model.teachers_of(0, ["z0", "z1", "z2"], ["s0", "s1", "s2"]) == [(1.0, t) for t in expected]


def test_teacher_weights_and_own_shadow():
    model = make_model(members=3, peer_weight=2.0, shadow_weight=0.5, own_shadow=False)
    assert model.teachers_of(1, ["z0", "z1", "z2"], ["s0", "s1", "s2"]) == [
        (2.0, "z0"), (2.0, "z2"), (0.5, "s0"), (0.5, "s2")]


def test_relational_term_is_the_weighted_mean_over_teachers(batch):
    images, labels = batch
    model = make_model(relational_weight=3.0, peer_weight=3.0, shadow_weight=1.0, own_shadow=False)
    z = [member(images) for member in model.members]
    zbar = [shadow(images) for shadow in model.shadows]
    _, terms = model.cohort_losses(labels, z, zbar)
    for m in range(2):  # the peer weighs 3, the other member's shadow 1, its own shadow 0
        expected = (3.0 * relational_distance_loss(z[m], z[1 - m]).numpy()
                    + relational_distance_loss(z[m], zbar[1 - m]).numpy()) / 4.0
        np.testing.assert_allclose(terms[f"member{m}_relational"].numpy(), expected, rtol=1e-6)


def test_settings_come_from_the_config_objects_and_keywords_override_them():
    from dmml_tf.config import CohortConfig, LossConfig

    model = make_model(loss=LossConfig(margin=0.3, relational_weight=5.0),
                       cohort=CohortConfig(teachers="peers"), relational_weight=7.0)
    assert (model.loss_config.margin, model.loss_config.relational_weight) == (0.3, 7.0)
    assert model.cohort_config.teachers == "peers" and model.cohort_config.members == 2


def test_unknown_teachers_are_rejected():
    with pytest.raises(ValueError, match="Received: cohort.teachers='shadow'"):
        make_model(teachers="shadow")


def test_teachers_receive_no_gradient_from_the_student(batch):
    images, labels = batch
    model = make_model()
    with tf.GradientTape(persistent=True) as tape:
        z = [member(images, training=True) for member in model.members]
        zbar = [shadow(images) for shadow in model.shadows]
        _, terms = model.cohort_losses(labels, z, zbar)
    # member0's relational term must not move member1 (its teacher), only member0.
    peer_grads = tape.gradient(terms["member0_relational"], model.members[1].trainable_weights)
    own_grads = tape.gradient(terms["member0_relational"], model.members[0].trainable_weights)
    assert all(g is None or np.all(g.numpy() == 0) for g in peer_grads)
    assert sum(float(np.abs(g.numpy()).sum()) for g in own_grads if g is not None) > 0
    assert not any(shadow.trainable_weights for shadow in model.shadows)


def reference_decay(step, tau, warmup_steps):
    """tau_t: the averaged window 1 / (1 - tau_t) grows linearly from 1 to 1 / (1 - tau)."""
    if warmup_steps == 0 or step >= warmup_steps:
        return tau
    window = 1 + (1 / (1 - tau) - 1) * step / warmup_steps
    return 1 - 1 / window


@pytest.mark.parametrize("warmup_steps", [0, 1, 40], ids=["off", "one_step", "forty_steps"])
def test_shadow_decay_per_step_follows_the_warmup_formula(warmup_steps):
    model = make_model(ema_decay=0.99, ema_warmup_steps=warmup_steps)
    model.compile(optimizer="sgd")
    decays = []
    for step in range(1, 61):
        model.optimizer.iterations.assign(step)
        decays.append(float(model.shadow_decay()))
    expected = [reference_decay(step, 0.99, warmup_steps) for step in range(1, 61)]
    np.testing.assert_allclose(decays, expected, rtol=1e-5)
    reached = next(step for step, d in enumerate(decays, start=1) if d == pytest.approx(0.99))
    assert reached == max(warmup_steps, 1)  # tau holds from the stated step on
    if warmup_steps > 1:
        assert decays[warmup_steps - 2] < 0.99 - 1e-4


@pytest.mark.parametrize("warmup_steps, decay", [(4, 1 - 1 / (1 + 9 / 4)), (0, 0.9)],
                         ids=["warmup", "no_warmup"])
def test_shadow_follows_ema(batch, warmup_steps, decay):
    images, labels = batch
    model = make_model(ema_decay=0.9, ema_warmup_steps=warmup_steps)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    before = [w.copy() for w in model.shadows[0].get_weights()]
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0, shuffle=False)
    after_member = model.members[0].get_weights()
    # One update at step t = 1: the window is 1 + 9 * 1/4 steps with a 4-step warm-up.
    moved = 0
    for old, member, shadow in zip(before, after_member, model.shadows[0].get_weights()):
        np.testing.assert_allclose(shadow, decay * old + (1 - decay) * member, rtol=1e-5, atol=1e-6)
        moved += int(not np.allclose(old, member))
    assert moved > 0


def test_ema_every_skips_updates_and_moves_the_shadows_when_due(batch):
    images, labels = batch
    model = make_model(ema_every_steps=2, ema_decay=0.5, ema_warmup_steps=0)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    before = model.shadows[0].get_weights()
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0, shuffle=False)  # step 1: odd
    for old, new in zip(before, model.shadows[0].get_weights()):
        np.testing.assert_array_equal(old, new)
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0, shuffle=False)  # step 2: due
    moved = False
    for old, member, shadow in zip(before, model.members[0].get_weights(),
                                   model.shadows[0].get_weights()):
        np.testing.assert_allclose(shadow, 0.5 * old + 0.5 * member, rtol=1e-5, atol=1e-7)
        moved |= not np.allclose(old, shadow)
    assert moved  # the members trained, and their shadows followed halfway


def test_shadows_run_in_inference_mode_inside_the_train_step(batch):
    """A shadow's forward pass leaves its BatchNorm statistics as they are (only the EMA,
    not due here, moves them) and draws no dropout."""
    images, labels = batch
    members = [build_embedder(tiny_cnn((SIZE, SIZE, 3), seed=s), 8, seed=s, freeze_batchnorm=False,
                              dropout=0.5, name=f"member{s}") for s in range(2)]
    model = DM2Model(members, ema_every_steps=1000)  # the shadow update is due at step 1000
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    flags = []  # the `training` flag of every shadow call while the step is traced
    for shadow in model.shadows:
        call = shadow.call
        shadow.call = lambda *args, call=call, **kwargs: flags.append(kwargs.get("training")) or call(*args, **kwargs)
    shadow_before = [w.numpy().copy() for w in model.shadows[0].weights]
    member_before = [w.numpy().copy() for w in model.members[0].non_trainable_weights]
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert len(flags) == 2 and not any(flags)
    for old, new in zip(shadow_before, model.shadows[0].weights):
        np.testing.assert_array_equal(old, new.numpy())
    # The members' own statistics did move: their forward pass trains BatchNorm.
    assert any(not np.array_equal(old, new.numpy())
               for old, new in zip(member_before, model.members[0].non_trainable_weights))


def policy_views(count):
    return [build_view(ViewsConfig().policy, seed=n, name=f"view{n}") for n in range(count)]


@pytest.mark.parametrize("switches, networks", [({}, 4), ({"teachers": "peers"}, 2)],
                         ids=["shadows_teach", "peers_only"])
def test_shadow_views_only_when_shadows_teach(batch, switches, networks):
    assert len(make_model(**switches).make_views(batch[0])) == networks


@pytest.mark.parametrize("view_diversity", [True, False], ids=["diverse", "shared"])
def test_views_differ_only_with_view_diversity(batch, view_diversity):
    images, _ = batch
    model = make_model(policy_views(4), view_diversity=view_diversity)
    views = [v.numpy() for v in model.make_views(images)]
    assert len(views) == 4
    assert not np.allclose(views[0], images)  # augmentation is active in training
    for other in views[1:]:
        assert np.array_equal(views[0], other) != view_diversity


def test_fit_logs_every_term_and_trains(batch):
    images, labels = batch
    model = make_model(relational_weight=10.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(images, labels, batch_size=16, epochs=3, verbose=0, shuffle=False)
    expected = {"loss", "member0_triplet", "member0_relational", "member0_gradient_ratio",
                "member1_triplet", "member1_relational", "member1_gradient_ratio"}
    assert expected <= set(history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]
    ensemble = model.networks()["ensemble"](images)
    np.testing.assert_allclose(np.linalg.norm(ensemble, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("members", [1, pytest.param(4, marks=pytest.mark.slow)],
                         ids=["M1", "M4"])  # four members trace four times: full suite only
def test_cohorts_of_one_to_four_members_train(batch, members):
    images, labels = batch
    model = make_model(members=members, relational_weight=10.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(images, labels, batch_size=16, epochs=2, verbose=0, shuffle=False)
    assert {f"member{members - 1}_triplet", f"member{members - 1}_relational"} <= set(history.history)
    assert len(model.shadows) == members
    assert all(np.isfinite(history.history["loss"]))


def test_backbone_optimizer_trains_backbones_at_their_own_rate(batch):
    images, labels = batch
    model = make_model()
    before = [v.numpy().copy() for v in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(0.1), backbone_optimizer=keras.optimizers.SGD(0.0))
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0, shuffle=False)
    head_ids = {id(v) for member in model.members for v in member.get_layer("head").weights}
    moved = [(id(v) in head_ids, not np.array_equal(old, v.numpy()))
             for old, v in zip(before, model.trainable_weights)]
    assert sorted(moved) == [(False, False)] * 16 + [(True, True)] * 4  # heads: 2 kernels, 2 biases
    assert int(model.backbone_optimizer.iterations) == int(model.optimizer.iterations) == 1


def test_a_nonzero_backbone_learning_rate_moves_backbones_by_their_own_step(batch):
    images, labels = batch
    model = make_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), backbone_optimizer=keras.optimizers.SGD(0.01))
    # SGD's step is lr x gradient: read the gradients off one step of a copy at lr 1.
    reference = make_model()
    reference.compile(optimizer=keras.optimizers.SGD(1.0))
    start = [v.numpy().copy() for v in reference.trainable_weights]
    reference.fit(images, labels, batch_size=16, epochs=1, verbose=0, shuffle=False)
    gradients = [old - v.numpy() for old, v in zip(start, reference.trainable_weights)]
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0, shuffle=False)
    head_ids = {id(v) for member in model.members for v in member.get_layer("head").weights}
    for old, gradient, v in zip(start, gradients, model.trainable_weights):
        rate = 0.1 if id(v) in head_ids else 0.01
        # atol: float32 rounding of w - step, for weights of magnitude ~1
        np.testing.assert_allclose(old - v.numpy(), rate * gradient, rtol=1e-4, atol=2e-7)
    assert max(np.abs(g).max() for g in gradients) > 1e-3  # real steps were compared


def test_backbone_optimizer_needs_a_head_layer():
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.UnitNormalization()(keras.layers.Dense(4)(keras.layers.Flatten()(inputs)))
    model = DM2Model([keras.Model(inputs, outputs, name="plain")])
    with pytest.raises(ValueError, match="needs a layer named `head`"):
        model.compile(optimizer="adam", backbone_optimizer="adam")


def test_config_round_trip_keeps_every_hyperparameter():
    options = dict(margin=0.3, mining="distance_weighted", relational_weight=5.0,
                   distance_weight=0.5, angle_weight=2.0, teachers="peers", view_diversity=False,
                   mutual=True, ema_decay=0.95, ema_warmup_steps=0, ema_every_steps=3, seed=7,
                   relational="similarity_kl", relational_temperature=0.3,
                   triplet_reduction="nonzero", peer_weight=2.0, shadow_weight=0.5,
                   own_shadow=False)
    restored = DM2Model.from_config(make_model(**options).get_config())
    settings = {**dataclasses.asdict(restored.loss_config),
                **dataclasses.asdict(restored.cohort_config), "seed": restored.seed}
    assert {key: settings[key] for key in options} == options
    assert len(restored.members) == len(restored.shadows) == 2


@pytest.mark.parametrize("mutual", [True, False], ids=["mutual", "independent"])
def test_gradient_ratio_is_lambda_times_the_norm_ratio_at_the_embeddings(batch, mutual):
    images, labels = batch
    model = make_model(relational_weight=7.0, mutual=mutual)
    model.compile(optimizer="adam")
    z = [member(images) for member in model.members]
    zbar = [shadow(images) for shadow in model.shadows]
    ratios = model.gradient_ratios(tf.constant(labels), z, zbar)
    for m in range(2):
        if not mutual:
            assert ratios[m] == 0.0
            continue
        # Reference: each term's gradient at z_m on its own, by separate tapes.
        norms = []
        for term in ("relational", "triplet"):
            with tf.GradientTape() as own:
                own.watch(z[m])
                zs = [z[m] if n == m else tf.stop_gradient(z[n]) for n in range(2)]
                value = model.cohort_losses(labels, zs, zbar)[1][f"member{m}_{term}"]
            norms.append(np.linalg.norm(own.gradient(value, z[m]).numpy()))
        assert norms[0] > 0 and norms[1] > 0
        np.testing.assert_allclose(float(ratios[m]), 7.0 * norms[0] / norms[1], rtol=1e-5)


def test_gradient_ratios_are_tracked_on_logging_steps_only(batch):
    images, labels = batch
    model = make_model(log_every_steps=1000)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    first = model.gradient_ratios(tf.constant(labels), [m(images) for m in model.members],
                                  [s(images) for s in model.shadows]).numpy()
    history = model.fit(np.concatenate([images] * 3), np.concatenate([labels] * 3),
                        batch_size=16, epochs=1, verbose=0, shuffle=False)  # steps 0, 1, 2
    # Only step 0 logs: the epoch's ratio is step 0's, not a mean over three steps.
    for m in range(2):
        assert first[m] > 0
        np.testing.assert_allclose(history.history[f"member{m}_gradient_ratio"][0], first[m],
                                   rtol=1e-5)


@pytest.mark.parametrize("metric", ["contrastive", "multi_similarity", "circle", "supcon"])
def test_a_pair_loss_is_each_members_metric_term(batch, metric):
    from dmml_tf.losses.metric_losses import METRIC_LOSSES

    images, labels = batch
    model = make_model(metric=metric, teachers="peers")
    z = [member(images) for member in model.members]
    total, terms = model.cohort_losses(tf.constant(labels), z, [])
    for m in range(2):
        expected = METRIC_LOSSES[metric].function(labels, z[m]).numpy()
        np.testing.assert_allclose(terms[f"member{m}_{metric}"].numpy(), expected, rtol=1e-6)
    assert set(model.term_trackers) == {f"member{m}_{t}" for m in range(2)
                                        for t in (metric, "relational", "gradient_ratio")}


@pytest.mark.parametrize("metric", ["proxy_anchor", "normsoftmax", "cosface", "arcface"])
def test_a_proxy_loss_gives_each_member_its_own_proxies_of_the_training_classes(batch, metric):
    from dmml_tf.losses.metric_losses import METRIC_LOSSES

    images, labels = batch
    classes = [3, 5, 8, 11, 20]  # the batch's labels 0..3 stand for the first four of them
    model = make_model(metric=metric, classes=classes)
    first, second = (p.vectors.numpy() for p in model.proxies)
    assert first.shape == (5, 8) and not np.allclose(first, second)
    assert {id(p.vectors) for p in model.proxies} <= {id(v) for v in model.trainable_weights}
    z = [member(images) for member in model.members]
    _, terms = model.cohort_losses(tf.constant(np.take(classes, labels)), z, [])
    for m in range(2):
        expected = METRIC_LOSSES[metric].function(labels, z[m], model.proxies[m].vectors).numpy()
        np.testing.assert_allclose(terms[f"member{m}_{metric}"].numpy(), expected, rtol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not one of the proxies' classes"):
        model.cohort_losses(tf.constant(labels + 100), z, [])


def test_a_proxy_loss_needs_the_training_classes():
    with pytest.raises(ValueError, match="give `classes`"):
        make_model(metric="proxy_anchor")


def test_proxies_train_with_their_own_optimizer_and_stay_out_of_the_members(batch):
    images, labels = batch
    model = make_model(metric="proxy_anchor", classes=range(4))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), proxy_optimizer=keras.optimizers.Adam(0.1))
    groups = model.optimizer_groups()
    assert [len(v) for _, v in groups][1] == 2  # the two members' proxies, apart
    proxies = [p.vectors.numpy().copy() for p in model.proxies]
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    assert all(not np.allclose(a, p.vectors.numpy()) for a, p in zip(proxies, model.proxies))
    assert int(model.proxy_optimizer.iterations) == 1
    member_weights = {id(w) for member in model.members for w in member.weights}
    assert not {id(p.vectors) for p in model.proxies} & member_weights  # exports hold members


def test_mixed_float16_with_a_second_optimizer_is_refused():
    model = make_model()
    with pytest.raises(ValueError, match="LossScaleOptimizer"):
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam()),
                      backbone_optimizer="adam")


def test_the_one_ensemble_is_the_re_normalised_concatenation_everywhere(batch):
    images, _ = batch
    model = make_model()
    parts = np.concatenate([member(images).numpy() for member in model.members], axis=1)
    expected = parts / np.linalg.norm(parts, axis=1, keepdims=True)
    np.testing.assert_allclose(model(images).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.networks()["ensemble"](images).numpy(), expected,
                               rtol=1e-5, atol=1e-6)
