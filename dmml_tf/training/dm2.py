"""The DM2 model: a cohort of members that teach each other and their EMA shadows.

Diversified Mutual Metric Learning (Park et al., arXiv 2009.04170), as docs/method.md
states it. Each training step:

1. views: every network (member or shadow) gets its own augmented view of the batch,
   drawn on the global batch so that several replicas augment as one device does;
2. forward: members in training mode, shadows in inference mode (never differentiated);
   embeddings and labels are gathered from all replicas, so the losses see the global batch;
3. losses: per member, its metric loss (triplet, or a pair or proxy loss of
   `dmml_tf.losses.METRIC_LOSSES`) on its embeddings plus lambda times the weighted
   mean relational loss towards each of its teachers (its peers, the shadows, or both);
   on logging steps, the ratio of the two terms' gradient norms at the member's
   embeddings is tracked;
4. one optimizer step (or more: heads, backbones and proxies with their own rates);
5. shadows move towards their members by an exponential moving average;
6. trackers: the total loss, every member's metric and relational terms and their
   gradient ratio.
"""

import dataclasses

import keras
import tensorflow as tf

from dmml_tf.config import CohortConfig, LossConfig, TrainConfig
from dmml_tf.losses.global_batch import gather_global, local_part, replica_share
from dmml_tf.losses.metric_losses import METRIC_LOSSES
from dmml_tf.losses.proxy_losses import Proxies
from dmml_tf.losses.relational import relational_loss
from dmml_tf.losses.triplet import triplet_loss
from dmml_tf.models.embedder import ensemble, join_embeddings

def make_shadow(member):
    """A copy of `member` with the same weights, never trained by gradients."""
    shadow = keras.models.clone_model(member)
    shadow.set_weights(member.get_weights())
    shadow.trainable = False
    return shadow


@keras.saving.register_keras_serializable(package="dmml_tf")
class DM2Model(keras.Model):
    """Diversified Mutual Metric Learning for a cohort of embedding models.

    Args:
        members: list of keras.Model. Embedders mapping images in [0, 255] to unit-length
            vectors; each gets an EMA shadow with the same architecture.
        views: list of keras layers or None. Augmentation per network: members first,
            then shadows (length 2 * len(members)); each must accept `training=`.
            `None` means no augmentation. Defaults to `None`.
        loss: `dmml_tf.config.LossConfig` or None. The metric and relational losses'
            settings (metric, metric_options, margin, mining, relational,
            relational_weight, ...); `None`: its defaults, those of a default run.
        cohort: `dmml_tf.config.CohortConfig` or None. Teachers and shadows (teachers,
            peer_weight, shadow_weight, own_shadow, view_diversity, mutual, ema_decay,
            ema_warmup_steps, ema_every_steps); `None`: its defaults.
        seed: int. Seed of the sampling miners (with the step count, so the stream
            resumes exactly from a checkpoint) and of member m's proxies (seed + m).
            Defaults to `0`.
        classes: sequence of int or None. A proxy loss's training classes (the labels
            the batches hold): member m gets its own `Proxies`, one vector per class.
            Defaults to `None` (needed only by a proxy loss).
        log_every_steps: int. Track the gradient ratios on every this many steps (they
            cost extra backward passes through the losses). Defaults to the config's.
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

    def __init__(self, members, views=None, loss=None, cohort=None, seed=0, classes=None,
                 log_every_steps=TrainConfig.log_every_steps, **kwargs):
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
        self.log_every_steps = log_every_steps
        self.classes = None if classes is None else sorted(int(c) for c in classes)
        self.proxies = self.build_proxies()
        self.backbone_optimizer = self.proxy_optimizer = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.term_trackers = {
            f"member{m}_{term}": keras.metrics.Mean(name=f"member{m}_{term}")
            for m in range(len(self.members))
            for term in (self.loss_config.metric, "relational", "gradient_ratio")
        }
        self.built = True  # members, shadows and views are built when constructed

    def build_proxies(self):
        """Per member its own `Proxies` (one vector per training class) when the metric
        loss has proxies, else an empty list."""
        if not self.loss_config.uses_proxies():
            return []
        if not self.classes:
            raise ValueError(f"The metric loss {self.loss_config.metric!r} trains proxies: give "
                             "`classes`, the training classes' labels. Received: classes=None")
        return [Proxies(len(self.classes), member.output_shape[-1],
                        self.loss_config.proxy_multiplier(), seed=self.seed + m,
                        name=f"proxies{m}") for m, member in enumerate(self.members)]

    def compile(self, optimizer="adam", backbone_optimizer=None, proxy_optimizer=None, **kwargs):
        """`keras.Model.compile`, plus optional optimizers of their own for the backbones
        and for the proxies.

        Args:
            optimizer: keras optimizer or str. Trains every weight, or all but those of
                the other optimizers. Defaults to `"adam"`.
            backbone_optimizer: keras optimizer, str or None. Trains every member weight
                outside the `head` layers. Defaults to `None`.
            proxy_optimizer: keras optimizer, str or None. Trains the proxies (e.g. at 100
                times the heads' learning rate for Proxy-Anchor). Defaults to `None`.
        """
        super().compile(optimizer=optimizer, **kwargs)
        self.backbone_optimizer = None if backbone_optimizer is None else keras.optimizers.get(backbone_optimizer)
        self.proxy_optimizer = None if proxy_optimizer is None else keras.optimizers.get(proxy_optimizer)
        optimizers = [o for o in (self.optimizer, self.backbone_optimizer, self.proxy_optimizer) if o]
        if len(optimizers) > 1 and any(isinstance(o, keras.optimizers.LossScaleOptimizer)
                                       for o in optimizers):
            raise ValueError("A LossScaleOptimizer (mixed_float16) scales the loss for its own "
                             "variables only: with a `backbone_optimizer` or `proxy_optimizer` the "
                             "others' gradients would stay scaled. Use one optimizer, or "
                             "mixed_bfloat16 (no loss scaling). Received: "
                             f"{[type(o).__name__ for o in optimizers]}")
        if self.proxy_optimizer is not None and not self.proxies:
            raise ValueError("`proxy_optimizer` needs a metric loss with proxies. Received: "
                             f"metric={self.loss_config.metric!r}")
        if backbone_optimizer is not None:
            for member in self.members:
                if "head" not in [layer.name for layer in member.layers]:
                    raise ValueError("With a `backbone_optimizer`, every member needs a layer "
                                     f"named `head`. Received: member {member.name!r} with "
                                     f"layers {[layer.name for layer in member.layers]}")
        if len(optimizers) > 1:
            for optimizer, variables in self.optimizer_groups():
                optimizer.build(variables)

    def optimizer_groups(self):
        """`[(optimizer, variables)]`: all weights with one optimizer, or the backbones
        and the proxies apart with their own."""
        proxies = [proxy.vectors for proxy in self.proxies] if self.proxy_optimizer else []
        backbones = []
        if self.backbone_optimizer is not None:
            heads = {id(v) for member in self.members for v in member.get_layer("head").trainable_weights}
            backbones = [v for member in self.members for v in member.trainable_weights
                         if id(v) not in heads]
        apart = {id(v) for v in proxies + backbones}
        groups = [(self.optimizer, [v for v in self.trainable_weights if id(v) not in apart]),
                  (self.backbone_optimizer, backbones), (self.proxy_optimizer, proxies)]
        return [(optimizer, variables) for optimizer, variables in groups if optimizer]

    @property
    def metrics(self):
        return [self.loss_tracker, *self.term_trackers.values()]

    def call(self, images, training=False):
        """The online ensemble's embedding of `images`."""
        return join_embeddings([member(images, training=training) for member in self.members])

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

    def metric_loss(self, m, labels, z, step):
        """Member m's metric loss on its embeddings `z`."""
        loss = self.loss_config
        if loss.metric == "triplet":
            seed = tf.stack([tf.constant(self.seed + m, "int64"), tf.cast(step, "int64")])
            return triplet_loss(labels, z, loss.margin, loss.mining, seed, loss.triplet_reduction)
        function = METRIC_LOSSES[loss.metric].function
        if not self.proxies:
            return function(labels, z, **loss.metric_options)
        classes = tf.constant(self.classes, labels.dtype)
        rows = tf.searchsorted(classes, labels)  # labels -> rows of the proxies
        tf.debugging.assert_equal(tf.gather(classes, tf.minimum(rows, len(self.classes) - 1)),
                                  labels, message="a label is not one of the proxies' classes")
        return function(rows, z, self.proxies[m].vectors, **loss.metric_options)

    def relational_term(self, m, member_embeddings, shadow_embeddings):
        """Member m's relational loss: the weighted mean over its teachers (0 without)."""
        loss = self.loss_config
        teachers = [(weight, teacher) for weight, teacher
                    in self.teachers_of(m, member_embeddings, shadow_embeddings) if weight > 0]
        relational = [weight * relational_loss(member_embeddings[m], teacher, loss.relational,
                                               loss.distance_weight, loss.angle_weight,
                                               loss.relational_temperature)
                      for weight, teacher in teachers]
        return tf.add_n(relational) / sum(weight for weight, _ in teachers) if relational else 0.0

    def cohort_losses(self, labels, member_embeddings, shadow_embeddings, step=0):
        """Total loss and each member's terms, on the global batch.

        Args:
            step: int or int tensor. Seeds the sampling miners with the member index.
        """
        loss = self.loss_config
        terms = {}
        for m, z in enumerate(member_embeddings):
            terms[f"member{m}_{loss.metric}"] = self.metric_loss(m, labels, z, step)
            terms[f"member{m}_relational"] = self.relational_term(m, member_embeddings,
                                                                  shadow_embeddings)
        total = sum(terms[f"member{m}_{loss.metric}"] + loss.relational_weight * terms[f"member{m}_relational"]
                    for m in range(len(member_embeddings)))
        return total, terms

    def train_step(self, data):
        images, labels = data
        labels = gather_global(labels)
        # 1. views: one augmented view per network (members, then shadows), drawn on the
        # global batch (the same random draws as on one device), of which each replica
        # keeps its own slice.
        views = [local_part(view) for view in self.make_views(gather_global(images))]
        # 2. forward, gathered over replicas; shadows only when they teach (have views).
        shadow_embeddings = [gather_global(tf.stop_gradient(shadow(view, training=False)))
                             for shadow, view in zip(self.shadows, views[len(self.members):])]
        groups = self.optimizer_groups()
        with tf.GradientTape() as tape:
            member_embeddings = [gather_global(member(view, training=True))
                                 for member, view in zip(self.members, views)]
            # 3. losses on the global batch.
            total, terms = self.cohort_losses(labels, member_embeddings, shadow_embeddings,
                                              self.optimizer.iterations)
            # Every replica computes the global loss and the optimizer sums their gradients;
            # under mixed_float16 the optimizer scales the loss (and unscales in `apply`).
            scaled = self.optimizer.scale_loss(replica_share(total))
        # On logging steps only: the ratios cost a backward pass per term and member.
        logging = tf.equal(tf.math.floormod(self.optimizer.iterations, self.log_every_steps), 0)
        ratios = tf.cond(logging, lambda: self.gradient_ratios(labels, member_embeddings,
                                                              shadow_embeddings),
                         lambda: tf.zeros([len(self.members)], member_embeddings[0].dtype))
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
        for m in range(len(self.members)):  # the mean over this epoch's logging steps
            self.term_trackers[f"member{m}_gradient_ratio"].update_state(
                ratios[m], sample_weight=tf.cast(logging, ratios.dtype))
        return {metric.name: metric.result() for metric in self.metrics}

    def gradient_ratios(self, labels, member_embeddings, shadow_embeddings):
        """Per member: lambda * |d relational / d z| / |d metric / d z| at its embeddings
        z, how strongly its teachers pull against its metric loss (0 without teachers)."""
        ratios = []
        step = self.optimizer.iterations
        for m in range(len(self.members)):
            z = tf.stop_gradient(member_embeddings[m])
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(z)
                others = [*member_embeddings[:m], z, *member_embeddings[m + 1:]]
                terms = (self.relational_term(m, others, shadow_embeddings),
                         self.metric_loss(m, labels, z, step))
            if not tf.is_tensor(terms[0]):  # no teachers
                ratios.append(tf.zeros([], z.dtype))
                continue
            pulls = [tf.norm(tape.gradient(term, z, unconnected_gradients="zero")) for term in terms]
            ratios.append(tf.math.divide_no_nan(self.loss_config.relational_weight * pulls[0],
                                                pulls[1]))
        return tf.stack(ratios)

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
            "classes": self.classes,
            "log_every_steps": self.log_every_steps,
        }

    @classmethod
    def from_config(cls, config):
        config["members"] = [keras.saving.deserialize_keras_object(m) for m in config["members"]]
        config["views"] = [keras.saving.deserialize_keras_object(v) for v in config["views"]]
        config["loss"] = LossConfig(**config["loss"])
        config["cohort"] = CohortConfig(**config["cohort"])
        return cls(**config)
