"""The DM2 model: a cohort of members that teach each other and their EMA shadows.

Diversified Mutual Metric Learning (Park et al., arXiv 2009.04170), as DESIGN.md §1
defines it. Each training step:

1. views: every network (member or shadow) gets its own augmented view of the batch;
2. forward: members in training mode, shadows in inference mode (never differentiated);
   embeddings and labels are gathered from all replicas, so the losses see the global batch;
3. losses: per member, triplet loss on its embeddings plus lambda times the weighted
   mean relational loss towards each of its teachers (its peers, the shadows, or both);
   the ratio of the two terms' gradient norms at the member's embeddings is tracked;
4. one optimizer step (or two: heads and backbones with their own learning rates);
5. shadows move towards their members by an exponential moving average;
6. trackers: the total loss, every member's triplet and relational terms and their
   gradient ratio.
"""

import dataclasses

import keras
import tensorflow as tf

from dmml_tf.config import CohortConfig, LossConfig
from dmml_tf.losses.relational import relational_loss
from dmml_tf.losses.triplet import triplet_loss
from dmml_tf.models.embedder import ensemble

def make_shadow(member):
    """A copy of `member` with the same weights, never trained by gradients."""
    shadow = keras.models.clone_model(member)
    shadow.set_weights(member.get_weights())
    shadow.trainable = False
    return shadow


def gather_global(value):
    """Concatenate `value` from all replicas (differentiably); identity on one device."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    gathered = context.all_gather(value, axis=0)
    gathered.set_shape([None, *value.shape[1:]])
    return gathered


@keras.saving.register_keras_serializable(package="dmml_tf")
class DM2Model(keras.Model):
    """Diversified Mutual Metric Learning for a cohort of embedding models.

    Args:
        members: list of keras.Model. Embedders mapping images in [0, 255] to unit-length
            vectors; each gets an EMA shadow with the same architecture.
        views: list of keras layers or None. Augmentation per network: members first,
            then shadows (length 2 * len(members)); each must accept `training=`.
            `None` means no augmentation. Defaults to `None`.
        loss: `dmml_tf.config.LossConfig` or None. The triplet and relational losses'
            settings (margin, mining, triplet_reduction, relational, relational_weight,
            ...); `None`: its defaults, those of a default run.
        cohort: `dmml_tf.config.CohortConfig` or None. Teachers and shadows (teachers,
            peer_weight, shadow_weight, own_shadow, view_diversity, mutual, ema_decay,
            ema_warmup_steps, ema_every_steps); `None`: its defaults.
        seed: int. Seed of the sampling miners (with the step count, so the stream
            resumes exactly from a checkpoint). Defaults to `0`.
        **kwargs: any field of `LossConfig` or `CohortConfig` by name (e.g.
            `relational_weight=10.0, teachers="peers"`) overrides `loss` or `cohort`, and
            is checked as the config checks it; the rest go to `keras.Model`.

    Call `compile(optimizer=...)` as usual; `compile(optimizer=..., backbone_optimizer=...)`
    trains each member's layer named `head` with `optimizer` and everything else with
    `backbone_optimizer` (e.g. a smaller learning rate for pretrained backbones).

    Example:
    ```python
    members = [build_embedder(build_backbone("tiny_cnn", None, 32), 16, seed=s) for s in (0, 1)]
    model = DM2Model(members, relational_weight=10.0, teachers="peers")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(class_balanced_dataset(images, labels, 8, 4, seed=0), steps_per_epoch=10)
    ```
    """

    def __init__(self, members, views=None, loss=None, cohort=None, seed=0, **kwargs):
        members = list(members)
        settings = {}
        for name, config, default in (("loss", loss, LossConfig), ("cohort", cohort, CohortConfig)):
            fields = {f.name for f in dataclasses.fields(default)} - {"members"}
            chosen = {key: kwargs.pop(key) for key in list(kwargs) if key in fields}
            config = config or default()
            settings[name] = dataclasses.replace(config, **chosen)
        super().__init__(**kwargs)
        self.loss_config = settings["loss"]
        self.cohort_config = dataclasses.replace(settings["cohort"], members=len(members))
        self.members = members
        self.shadows = [make_shadow(member) for member in self.members]
        networks = 2 * len(self.members)
        self.views = list(views) if views is not None else [keras.layers.Identity()] * networks
        if len(self.views) != networks:
            raise ValueError(f"`views` needs one entry per network ({networks}). "
                             f"Received: len(views)={len(self.views)}")
        self.seed = seed
        self.backbone_optimizer = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.term_trackers = {
            f"member{m}_{term}": keras.metrics.Mean(name=f"member{m}_{term}")
            for m in range(len(self.members))
            for term in ("triplet", "relational", "gradient_ratio")
        }
        self.built = True  # members, shadows and views are built when constructed

    def compile(self, optimizer="adam", backbone_optimizer=None, **kwargs):
        """`keras.Model.compile`, plus an optional second optimizer for the backbones.

        Args:
            optimizer: keras optimizer or str. Trains every weight, or only the members'
                `head` layers when `backbone_optimizer` is given. Defaults to `"adam"`.
            backbone_optimizer: keras optimizer, str or None. Trains every weight outside
                the `head` layers. Defaults to `None`.
        """
        super().compile(optimizer=optimizer, **kwargs)
        self.backbone_optimizer = None if backbone_optimizer is None else keras.optimizers.get(backbone_optimizer)
        if backbone_optimizer is not None:
            for member in self.members:
                if "head" not in [layer.name for layer in member.layers]:
                    raise ValueError("With a `backbone_optimizer`, every member needs a layer "
                                     f"named `head`. Received: member {member.name!r} with "
                                     f"layers {[layer.name for layer in member.layers]}")
            for optimizer, variables in self.optimizer_groups():
                optimizer.build(variables)

    def optimizer_groups(self):
        """`[(optimizer, variables)]`: all weights, or heads and backbones apart."""
        if self.backbone_optimizer is None:
            return [(self.optimizer, self.trainable_weights)]
        heads = [v for member in self.members for v in member.get_layer("head").trainable_weights]
        head_ids = {id(v) for v in heads}
        backbones = [v for v in self.trainable_weights if id(v) not in head_ids]
        return [(self.optimizer, heads), (self.backbone_optimizer, backbones)]

    @property
    def metrics(self):
        return [self.loss_tracker, *self.term_trackers.values()]

    def call(self, images, training=False):
        """The online ensemble's embedding of `images`."""
        outputs = [member(images, training=training) for member in self.members]
        joined = tf.concat(outputs, axis=-1)
        return tf.math.l2_normalize(joined, axis=-1)

    def networks(self):
        """Every network and ensemble by name, for evaluation and export."""
        named = {f"member{m}": member for m, member in enumerate(self.members)}
        named |= {f"shadow{m}": shadow for m, shadow in enumerate(self.shadows)}
        named["ensemble"] = ensemble(self.members, name="ensemble")
        named["shadow_ensemble"] = ensemble(self.shadows, name="shadow_ensemble")
        return named

    def make_views(self, images):
        """One augmented view per network that runs: the members, then the shadows when
        they teach."""
        networks = len(self.views) if self.shadows_teach() else len(self.members)
        if not self.cohort_config.view_diversity:
            return [self.views[0](images, training=True)] * networks
        return [view(images, training=True) for view in self.views[:networks]]

    def shadows_teach(self):
        cohort = self.cohort_config
        return cohort.mutual and cohort.teachers in ("shadows", "both")

    def teachers_of(self, m, member_embeddings, shadow_embeddings):
        """`[(weight, embeddings)]`: the teachers of member m, its peers (each weighing
        `peer_weight`) and the shadows (`shadow_weight`; its own only with `own_shadow`)
        as `teachers` says; none when `mutual` is off."""
        cohort = self.cohort_config
        if not cohort.mutual:
            return []
        peers = [(cohort.peer_weight, z) for n, z in enumerate(member_embeddings) if n != m]
        shadows = [(cohort.shadow_weight, z) for n, z in enumerate(shadow_embeddings)
                   if n != m or cohort.own_shadow]
        return {"peers": peers, "shadows": shadows, "both": peers + shadows}[cohort.teachers]

    def cohort_losses(self, labels, member_embeddings, shadow_embeddings, step=0):
        """Total loss and each member's terms, on the global batch.

        Args:
            step: int or int tensor. Seeds the sampling miners with the member index.
        """
        loss = self.loss_config
        terms = {}
        for m, z in enumerate(member_embeddings):
            seed = tf.stack([tf.constant(self.seed + m, "int64"), tf.cast(step, "int64")])
            terms[f"member{m}_triplet"] = triplet_loss(labels, z, loss.margin, loss.mining, seed,
                                                       loss.triplet_reduction)
            teachers = [(weight, teacher) for weight, teacher
                        in self.teachers_of(m, member_embeddings, shadow_embeddings) if weight > 0]
            relational = [weight * relational_loss(z, teacher, loss.relational, loss.distance_weight,
                                                   loss.angle_weight, loss.relational_temperature)
                          for weight, teacher in teachers]
            terms[f"member{m}_relational"] = (
                tf.add_n(relational) / sum(weight for weight, _ in teachers) if relational else 0.0)
        total = sum(terms[f"member{m}_triplet"] + loss.relational_weight * terms[f"member{m}_relational"]
                    for m in range(len(member_embeddings)))
        return total, terms

    def train_step(self, data):
        images, labels = data
        labels = gather_global(labels)
        # 1. views: one augmented view of the local batch per network (members, then shadows).
        views = self.make_views(images)
        # 2. forward, gathered over replicas; shadows only when they teach (have views).
        shadow_embeddings = [gather_global(tf.stop_gradient(shadow(view, training=False)))
                             for shadow, view in zip(self.shadows, views[len(self.members):])]
        groups = self.optimizer_groups()
        with tf.GradientTape() as tape:
            member_embeddings = [gather_global(member(view, training=True))
                                 for member, view in zip(self.members, views)]
            # 3. losses on the global batch.
            with tf.GradientTape(persistent=True) as loss_tape:  # for the gradient ratios
                loss_tape.watch(member_embeddings)
                total, terms = self.cohort_losses(labels, member_embeddings, shadow_embeddings,
                                                  self.optimizer.iterations)
            # Every replica computes the global loss and the optimizer sums their gradients;
            # under mixed_float16 the optimizer scales the loss (and unscales in `apply`).
            scaled = self.optimizer.scale_loss(
                total / tf.distribute.get_strategy().num_replicas_in_sync)
        terms |= self.gradient_ratios(loss_tape, terms, member_embeddings)
        # 4. optimizer step(s).
        gradients = tape.gradient(scaled, [variables for _, variables in groups])
        for (optimizer, variables), group_gradients in zip(groups, gradients):
            optimizer.apply(group_gradients, variables)
        # 5. shadows follow their members.
        self.update_shadows()
        # 6. trackers.
        self.loss_tracker.update_state(total)
        for name, value in terms.items():
            self.term_trackers[name].update_state(value)
        return {metric.name: metric.result() for metric in self.metrics}

    def gradient_ratios(self, loss_tape, terms, member_embeddings):
        """Per member: lambda * |d relational / d z| / |d triplet / d z| at its embeddings
        z, how strongly its teachers pull against its metric loss (0 without teachers)."""
        ratios = {}
        for m, z in enumerate(member_embeddings):
            relational = terms[f"member{m}_relational"]
            if not tf.is_tensor(relational):  # no teachers
                ratios[f"member{m}_gradient_ratio"] = 0.0
                continue
            pulls = [tf.norm(loss_tape.gradient(terms[f"member{m}_{term}"], z,
                                                unconnected_gradients="zero"))
                     for term in ("relational", "triplet")]
            ratios[f"member{m}_gradient_ratio"] = tf.math.divide_no_nan(
                self.loss_config.relational_weight * pulls[0], pulls[1])
        return ratios

    def shadow_decay(self):
        """tau_t at the optimizer step t just taken: the window 1 / (1 - tau_t) grows
        linearly from 1 at t = 0 to 1 / (1 - tau) at t = `ema_warmup_steps`, then stays;
        1 (no change) between updates when `ema_every_steps` > 1."""
        cohort = self.cohort_config
        step = tf.cast(self.optimizer.iterations, "float32")
        decay = tf.constant(cohort.ema_decay, "float32")
        if cohort.ema_warmup_steps:
            progress = tf.minimum(step / float(cohort.ema_warmup_steps), 1.0)
            window = 1.0 + (1.0 / (1.0 - cohort.ema_decay) - 1.0) * progress
            decay = tf.where(progress < 1.0, 1.0 - 1.0 / window, decay)
        due = tf.equal(tf.math.floormod(step, float(cohort.ema_every_steps)), 0.0)
        return tf.where(due, decay, 1.0)

    def update_shadows(self):
        """theta_shadow <- tau * theta_shadow + (1 - tau) * theta_member, for every weight
        (BatchNorm statistics included), on every replica alike."""
        decay = self.shadow_decay()
        pairs = [(shadow_weight.value, member_weight.value)
                 for member, shadow in zip(self.members, self.shadows)
                 for member_weight, shadow_weight in zip(member.weights, shadow.weights)]

        def move(shadow_weight, member_weight):
            if not shadow_weight.dtype.is_floating:  # counters (e.g. a Normalization's) are copied
                return shadow_weight.assign(member_weight)
            tau = tf.cast(decay, shadow_weight.dtype)
            return shadow_weight.assign(tau * shadow_weight + (1.0 - tau) * member_weight)

        def update_all(strategy):
            for shadow_weight, member_weight in pairs:
                strategy.extended.update(shadow_weight, move, args=(member_weight,), group=False)

        tf.distribute.get_replica_context().merge_call(update_all)

    def get_config(self):
        return {
            **super().get_config(),
            "members": [keras.saving.serialize_keras_object(m) for m in self.members],
            "views": [keras.saving.serialize_keras_object(v) for v in self.views],
            "loss": dataclasses.asdict(self.loss_config),
            "cohort": dataclasses.asdict(self.cohort_config),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config["members"] = [keras.saving.deserialize_keras_object(m) for m in config["members"]]
        config["views"] = [keras.saving.deserialize_keras_object(v) for v in config["views"]]
        config["loss"] = LossConfig(**config["loss"])
        config["cohort"] = CohortConfig(**config["cohort"])
        return cls(**config)
