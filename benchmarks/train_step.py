"""The DM2 train step against two independent single-member steps, and XLA on against off,
measured side by side in one run.

    python benchmarks/train_step.py                       # configs/emoji_styles.yaml: 64 px,
                                                          # 16 x 4 = 64 images, MobileNetV2
    python benchmarks/train_step.py --set model.backbone=tiny_cnn --set model.weights=null \
        --rounds 3                                        # tiny_cnn has no pretrained weights
    python benchmarks/train_step.py --skip xla precision    # the DM2 and fit steps only

Builds, from the config (with `model.weights=null` unless set: weights do not change the
speed), three cohorts under MirroredStrategy as `main.py` does:

- DM2: M members, shadows and views as configured (the default: 2 members, both teach);
- DM2 with the members' gradient ratios on every step (`train.log_every_steps=1`): the
  cost of the extra backward passes that logging steps alone now pay;
- single: one member, `cohort.mutual=false` (no teachers, so no shadow forward, no shadow
  view, no relational loss): training one model on its own (its shadow is still updated,
  as in the package's independent-training baseline);
- DM2 without views (`views.policy=[]`), with `train.jit_compile` off and on: XLA has no
  kernel for the views' crop (CropAndResize), so a step with views does not compile.

- DM2 under each `train.precision` (`mixed_bfloat16`, `mixed_float16`); and, with the
  config's weights, a short run of `--precision-steps` steps of `fit` per precision from
  the same seed, then the ensemble's Recall@1 on the test split: a precision that is
  faster must not be worse.

It then runs them in turns, `--steps` steps each per round, on one fixed batch already in
memory, and reports the median step time of each, then times the parts of a DM2 step that
single-member steps do not have. The DM2 goal is at most 1.20 times two single-member
steps: the extra work is one view and one inference forward per shadow and the small
relational loss terms.

Last, `--fit-steps` steps of `fit` as `python main.py` runs it (`dmml_tf.run`: the real
class-balanced pipeline and every callback; evaluation off), once without callbacks and
once with them, against the benchmark's DM2 step, measured in this run: step time is the
mean wall time between consecutive step ends, so input waits, checkpoints and logging
count. Prints `fit step / benchmark step: R` (goal: at most 1.1) and where the difference
goes.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import dmml_tf  # noqa: E402,F401  first: it quiets TensorFlow's GPU probe without a GPU

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dmml_tf.config import PRECISIONS, load_config  # noqa: E402
from dmml_tf.retrieval.evaluate import embed_networks, retrieval_metrics  # noqa: E402
from dmml_tf.run import (build_data, retrieval_evaluation, training_batches,  # noqa: E402
                         training_callbacks)
from dmml_tf.training.checkpoints import ResumableCheckpoint  # noqa: E402
from dmml_tf.training.cohort import build_cohort  # noqa: E402


class StepTimes(keras.callbacks.Callback):
    """Wall time of every train step but the first of each `fit`."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch > 0:
            self.times.append(time.perf_counter() - self.started)


class StepCycles(keras.callbacks.Callback):
    """Wall time between consecutive step ends: the step, its input and every callback."""

    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())

    def mean(self, skip=2):
        """Mean cycle after the first `skip` steps (tracing)."""
        return statistics.mean(np.diff(self.ends[skip:]))


def fit_cycles(args, strategy, splits, fixed_batches):
    """Mean step cycle of the benchmark's DM2 step on a fixed batch, of `fit` on the real
    pipeline without callbacks, and of `fit` as a run makes it."""
    config = load_config(args.config, ["model.weights=null", "evaluate.every_epochs=0",
                                       *args.overrides])
    with strategy.scope():
        model = build_cohort(config, steps_per_epoch=100, classes=np.unique(splits.train_labels))
    pipeline = training_batches(config, splits, strategy, start=0)  # as a new run
    cycles = {}
    with tempfile.TemporaryDirectory() as run_directory:
        evaluation = retrieval_evaluation(config, splits, Path(run_directory))
        checkpoint = ResumableCheckpoint(Path(run_directory) / "backup",
                                         config.train.checkpoint_every_steps)
        callbacks = training_callbacks(config, Path(run_directory), evaluation, checkpoint)
        for name, batches, extra in (("benchmark", fixed_batches, []), ("pipeline", pipeline, []),
                                     ("fit", pipeline, callbacks)):
            timer = StepCycles()
            model.fit(batches, epochs=1, steps_per_epoch=args.fit_steps + 2, shuffle=False,
                      verbose=0, callbacks=[*extra, timer])
            cycles[name] = timer.mean()
    return cycles


def precision_recalls(args, strategy, splits):
    """The ensemble's test Recall@1 after `--precision-steps` steps of `fit` per precision,
    each from the same seed and the config's (pretrained) weights."""
    recalls = {}
    for precision in PRECISIONS:
        print(f"short run: {args.precision_steps} steps of fit in {precision} ...", flush=True)
        config = load_config(args.config, [*args.overrides, f"train.precision={precision}"])
        keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            model = build_cohort(config, steps_per_epoch=args.precision_steps,
                                 classes=np.unique(splits.train_labels))
        model.fit(training_batches(config, splits, strategy, start=0), epochs=1, verbose=0,
                  steps_per_epoch=args.precision_steps, shuffle=False)
        ensemble = {"ensemble": model.networks()["ensemble"]}  # the one network scored
        embeddings = embed_networks(ensemble, splits.test_images, config.evaluate.batch_size)
        recalls[precision] = retrieval_metrics(embeddings["ensemble"], splits.test_labels,
                                               (1,), backend="exact")["recall@1"]
    return recalls


def build(args, strategy, splits, *overrides):
    """A compiled cohort for the benchmark's config with more `overrides` (a proxy loss
    gets proxies for the training classes of `splits`)."""
    config = load_config(args.config, ["model.weights=null", *args.overrides, *overrides])
    with strategy.scope():
        return build_cohort(config, steps_per_epoch=100, classes=np.unique(splits.train_labels))


def time_in_turns(models, batches, steps, rounds):
    """Median step time of each model, the models taking turns `rounds` times."""
    timers = {name: StepTimes() for name in models}
    for model in models.values():  # trace every step function before timing
        model.fit(batches, epochs=1, steps_per_epoch=2, shuffle=False, verbose=0)
    for _ in range(rounds):
        for name, model in models.items():
            model.fit(batches, epochs=1, steps_per_epoch=steps + 1, shuffle=False, verbose=0,
                      callbacks=[timers[name]])
    return {name: statistics.median(timer.times) for name, timer in timers.items()}


def median_time(function, *args, repeats=10):
    """Median wall time of `function(*args)` after one call that traces it."""
    function(*args)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def dm2_parts(model, strategy, images, labels):
    """Seconds of the parts of a DM2 step that M single-member steps do not have, and of
    the EMA update, which both have (the single member's shadow is still updated)."""
    members = len(model.members)
    views = tf.function(lambda x: model.views[0](x, training=True))
    shadow = tf.function(lambda x: model.shadows[0](x, training=False))
    embeddings = [member(images) for member in model.members]
    shadow_embeddings = [s(images) for s in model.shadows]

    @tf.function
    def losses():
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            total, _ = model.cohort_losses(labels, embeddings, shadow_embeddings)
        return tape.gradient(total, embeddings)

    ema = tf.function(lambda: strategy.run(model.update_shadows))
    return {
        f"{members} shadow forwards (inference)": members * median_time(shadow, images),
        f"{members} shadow views": members * median_time(views, images),
        "all losses and their gradients": median_time(losses),
        f"(both: EMA update of {members} shadows)": median_time(ema),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path,
                        default=Path(__file__).resolve().parents[1] / "configs" / "emoji_styles.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE")
    parser.add_argument("--steps", type=int, default=6, help="steps per model and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of turns")
    parser.add_argument("--fit-steps", type=int, default=60,
                        help="steps of each fit on the real pipeline (0: skip)")
    parser.add_argument("--precision-steps", type=int, default=30,
                        help="steps of the short run per precision before its Recall@1 (0: skip)")
    parser.add_argument("--skip", nargs="+", default=[], choices=("xla", "precision"),
                        help="leave out the XLA or the mixed-precision timings: on 2 CPU "
                             "cores each adds about ten minutes of tracing and slow steps")
    args = parser.parse_args(argv)
    if "precision" in args.skip:
        args.precision_steps = 0  # no short runs per precision either

    config = load_config(args.config, ["model.weights=null", *args.overrides])
    data = config.data
    batch_size = data.classes_per_batch * data.images_per_class
    splits = build_data(config)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, data.image_size, data.image_size, 3)).astype("float32")
    # Training classes' labels: a proxy loss has proxies for those only.
    labels = np.repeat(np.unique(splits.train_labels)[:data.classes_per_batch],
                       data.images_per_class).astype("int32")
    batches = tf.data.Dataset.from_tensors((images, labels)).repeat()
    keras.utils.set_random_seed(config.seed)
    strategy = tf.distribute.MirroredStrategy()

    print("timing DM2 and single-member steps in turns ...", flush=True)
    dm2 = build(args, strategy, splits)
    step = time_in_turns({"dm2": dm2,
                          "single": build(args, strategy, splits, "cohort.members=1",
                                          "cohort.mutual=false"),
                          # the members' gradient ratios on every step, as before they
                          # were computed on logging steps only
                          "ratios_every_step": build(args, strategy, splits,
                                                     "train.log_every_steps=1")},
                         batches, args.steps, args.rounds)
    # XLA has no kernel for the views' crop (CropAndResize): compare it without views.
    if "xla" not in args.skip:
        step |= time_in_turns({"no_views": build(args, strategy, splits, "views.policy=[]"),
                               "no_views_jit": build(args, strategy, splits, "views.policy=[]",
                                                     "train.jit_compile=true")},
                              batches, steps=2, rounds=2)
    if "precision" not in args.skip:
        step |= time_in_turns({precision: build(args, strategy, splits,
                                                f"train.precision={precision}")
                               for precision in ("mixed_bfloat16", "mixed_float16")},
                              batches, steps=2, rounds=2)
    print("timing the parts of a DM2 step ...", flush=True)
    parts = dm2_parts(dm2, strategy, images, labels)
    print(f"timing {args.fit_steps} steps of fit on the real pipeline ...", flush=True)
    cycles = fit_cycles(args, strategy, splits, batches) if args.fit_steps else None
    recalls = precision_recalls(args, strategy, splits) if args.precision_steps else {}

    members = config.cohort.members
    backbones = ", ".join(config.model.backbone_of(m) for m in range(members))
    print(f"config {args.config}: {data.image_size} px, batch {data.classes_per_batch} x "
          f"{data.images_per_class} = {batch_size}, {members} members ({backbones}), "
          f"teachers {config.cohort.teachers}, view diversity {config.cohort.view_diversity}; "
          f"{os.cpu_count()} CPU cores; median step times")
    for name, label in (("single", "one member on its own"), ("dm2", "DM2"),
                        ("no_views", "DM2 without views"), ("no_views_jit", "DM2 without views, XLA")):
        if name in step:
            print(f"  {label:<26} {step[name]:7.3f} s/step  {batch_size / step[name]:7.1f} images/s")
    print(f"DM2 / {members} single-member steps: {step['dm2'] / (members * step['single']):.3f} "
          "(goal <= 1.20)")
    print(f"DM2 step with gradient ratios on every step / on every "
          f"{config.train.log_every_steps}th (train.log_every_steps; median steps): "
          f"{step['ratios_every_step'] / step['dm2']:.3f}")
    if "no_views" in step:
        print(f"jit_compile on / off (without views): {step['no_views_jit'] / step['no_views']:.3f}")
    print(f"where DM2's extra {step['dm2'] - members * step['single']:.3f} s goes:")
    for label, seconds in parts.items():
        print(f"  {label:<34} {seconds:7.3f} s")
    step["float32"] = step["dm2"]
    print("DM2 step per train.precision (float32 is the default)"
          + (f"; ensemble Recall@1 after {args.precision_steps} steps of fit:" if recalls else ":"))
    for precision in (p for p in PRECISIONS if p in step):
        recall = f"  Recall@1 {recalls[precision]:.4f}" if recalls else ""
        print(f"  {precision:<16} {step[precision]:7.3f} s/step  "
              f"{step[precision] / step['float32']:.2f} x float32{recall}")
    if cycles:
        print(f"fit step / benchmark step: {cycles['fit'] / cycles['benchmark']:.2f} (goal <= 1.1; "
              f"mean cycles over {args.fit_steps} steps: benchmark {cycles['benchmark']:.3f} s, "
              f"real pipeline {cycles['pipeline']:.3f} s, with the run's callbacks "
              f"{cycles['fit']:.3f} s)")
        print(f"  input pipeline   {cycles['pipeline'] - cycles['benchmark']:+.3f} s/step")
        print(f"  callbacks        {cycles['fit'] - cycles['pipeline']:+.3f} s/step "
              "(checkpoints, TensorBoard, CSV, guards)")


if __name__ == "__main__":
    main()
