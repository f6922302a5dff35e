"""Time of one evaluation against its forward passes, and memory of a large gallery.

    python benchmarks/evaluation.py cohort                   # the default test split
    python benchmarks/evaluation.py gallery                  # 100k images, 1,000 classes
    python benchmarks/evaluation.py gallery --images 20000 --backend exact

`cohort`: builds the default run's cohort (configs/emoji_styles.yaml, `--set` to change
it) and its test split, then, in one run, times the pure forward passes of the networks
an evaluation runs (every member, every shadow and the pretrained baseline; ensembles
are concatenations) over the test images, each traced beforehand, then two evaluations as
`python main.py` makes them (`dmml_tf.run.evaluate`), with where their time goes:
the first of a run, which also compiles the networks' forward pass (a one-off cost),
evaluates the pretrained baseline and draws the pictures, and a later one, as each
evaluation during training after the first. Prints `first evaluation / forward passes`
and `evaluation / forward passes: R` for the later one (goal: at most 1.3).

`gallery`: draws clustered synthetic unit embeddings (one cluster per class, cosine about
0.3 within a class), runs `retrieval_metrics` on them as on a test split and prints the
metrics, the wall time and the peak memory next to the size an N x N score matrix would
have. Each backend is measured in its own process, so the peaks do not mix.
"""

import argparse
import resource
import tempfile
import time
from pathlib import Path

import dmml_tf  # noqa: E402,F401  first: it quiets TensorFlow's GPU probe without a GPU

import numpy as np  # noqa: E402

from dmml_tf.retrieval.evaluate import retrieval_metrics  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]


def forward_seconds(networks, images, batch_size):
    """Wall time of each network's inference over `images` alone, traced beforehand."""
    import tensorflow as tf

    seconds = {}
    for name, network in networks.items():
        forward = tf.function(lambda batch, network=network: network(batch, training=False),
                              reduce_retracing=True)
        batches = [tf.constant(images[i:i + batch_size], tf.float32)
                   for i in range(0, len(images), batch_size)]
        forward(batches[0]), forward(batches[-1])  # trace both batch shapes
        started = time.perf_counter()
        for batch in batches:
            forward(batch).numpy()
        seconds[name] = time.perf_counter() - started
    return seconds


def cohort(args):
    from dmml_tf.config import load_config
    from dmml_tf.models.backbones import build_backbone
    from dmml_tf.models.embedder import pooled_features
    from dmml_tf.run import build_data
    from dmml_tf.training.cohort import build_cohort

    config = load_config(ROOT / "configs" / "emoji_styles.yaml", args.overrides)
    splits = build_data(config)
    model = build_cohort(config, steps_per_epoch=1, classes=np.unique(splits.train_labels))
    baseline = pooled_features(build_backbone(config.model.backbone_of(0),
                                              config.model.weights_of(0),
                                              config.data.image_size), name="pretrained")
    runs = {**{f"member{m}": n for m, n in enumerate(model.members)},
            **{f"shadow{m}": n for m, n in enumerate(model.shadows)}, "pretrained": baseline}
    forward = forward_seconds(runs, splits.test_images, config.evaluate.batch_size)
    images = len(splits.test_labels)
    print(f"\n{images} test images, {len(runs)} networks run; forward passes alone: "
          f"{sum(forward.values()):.1f} s ({len(runs) * images / sum(forward.values()):.0f} "
          f"images/s over all networks)")
    for name, value in forward.items():
        print(f"  forward {name:<12} {value:6.1f} s")
    with tempfile.TemporaryDirectory() as run_directory:
        first = {"compiling the forward pass": compile_seconds(model, splits.test_images,
                                                               config.evaluate.batch_size)}
        first.update(timed_evaluation(config, model, splits, Path(run_directory),
                                      with_pictures=True))
        later = timed_evaluation(config, model, splits, Path(run_directory))
    trained = sum(value for name, value in forward.items() if name != "pretrained")
    report("the first evaluation of a run (it compiles the networks' forward pass, "
           "evaluates the pretrained baseline and draws the pictures)", first,
           sum(forward.values()))
    report("each later evaluation (the in-training ones at `evaluate.every_epochs`; "
           "the pretrained baseline's results are reused)", later, trained)
    compiled = sum(first.values()) - first["compiling the forward pass"]
    print(f"first evaluation / forward passes: {sum(first.values()) / sum(forward.values()):.2f} "
          f"({compiled / sum(forward.values()):.2f} without compiling)")
    print(f"evaluation / forward passes: {sum(later.values()) / trained:.2f}")


def compile_seconds(model, images, batch_size):
    """Wall time of the first call of the forward pass every evaluation of `model` runs
    (`dmml_tf.retrieval.evaluate.compiled_forward`: traced, then optimised by TensorFlow,
    once per run); the evaluations after it find it compiled."""
    import tensorflow as tf

    from dmml_tf.retrieval.evaluate import compiled_forward
    from dmml_tf.training.callbacks import evaluated_networks

    networks, ensembles = evaluated_networks(model)
    forward = compiled_forward({name: network for name, network in networks.items()
                                if name not in ensembles})
    started = time.perf_counter()
    forward(tf.constant(images[:batch_size], tf.float32))
    return time.perf_counter() - started


def timed_evaluation(config, model, splits, run_directory, with_pictures=False):
    """Seconds of each part of `dmml_tf.run.evaluate` (and `pictures`), as a run makes it."""
    from dmml_tf.run import evaluate, pictures

    parts = {}
    started = time.perf_counter()
    _, embeddings = evaluate(config, model, splits, run_directory, seconds=parts)
    parts["other"] = time.perf_counter() - started - sum(parts.values())
    if with_pictures:
        started = time.perf_counter()
        pictures(config, splits, run_directory, embeddings)
        parts["pictures"] = time.perf_counter() - started
    return parts


def report(title, parts, forward):
    print(f"{title}: {sum(parts.values()):.1f} s against {forward:.1f} s of forward passes")
    for name, value in parts.items():
        print(f"  {name:<24} {value:6.1f} s")


def gallery(args):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.classes, args.dim), np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, args.classes, args.images)
    embeddings = centres[labels] + rng.standard_normal((args.images, args.dim), np.float32) * (
        args.noise / np.sqrt(args.dim))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    started = time.perf_counter()
    results = retrieval_metrics(embeddings, labels, (1, 2, 4, 8), backend=args.backend)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    print(f"{args.images:,} images of {args.classes:,} classes, dim {args.dim}, "
          f"backend {args.backend}: {seconds:.0f} s")
    print("  ".join(f"{name} {value:.4f}" for name, value in results.items()))
    print(f"peak memory (RSS) {peak:.2f} GiB ({before:.2f} GiB before evaluating); an N x N "
          f"float32 score matrix alone would take {args.images**2 * 4 / 2**30:.0f} GiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("cohort", "gallery"))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="cohort: a config override")
    parser.add_argument("--images", type=int, default=100_000, help="gallery: images")
    parser.add_argument("--classes", type=int, default=1000, help="gallery: classes")
    parser.add_argument("--dim", type=int, default=128, help="gallery: dimension")
    parser.add_argument("--noise", type=float, default=1.5,
                        help="gallery: noise around a class centre (1.5: cosine about 0.3)")
    parser.add_argument("--backend", choices=("scann", "exact"), default="scann",
                        help="gallery: search backend")
    args = parser.parse_args()
    (cohort if args.mode == "cohort" else gallery)(args)


if __name__ == "__main__":
    main()
