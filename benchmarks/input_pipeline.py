"""Input pipeline speed against the DM2 train step's, measured side by side in one run.

    python benchmarks/input_pipeline.py                              # configs/emoji_styles.yaml
    python benchmarks/input_pipeline.py --config configs/cub200.yaml \
        --set model.backbone=tiny_cnn --set model.weights=null  # tiny_cnn: no pretrained weights

Writes a folder of photo-sized JPEGs (CUB-200-2011's typical 500 x 375 by default), then
times (1) the streamed training pipeline of `folder:` datasets with the config's data
section — read, decode, random resized crop, flip, resize, P x K batches — and (2) the
DM2 train step of the config's cohort on batches of the same shape, already in memory.
Prints both in images per second and their ratio; the goal is a ratio of at least 3, so
that decoding never starves training.
"""

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import dmml_tf  # noqa: E402,F401  first: it quiets TensorFlow's GPU probe without a GPU

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def write_photos(folder, count, size, classes, seed=0):
    """`count` JPEGs of `size` (width, height) in `classes` class folders: smooth colour
    fields plus fine noise, which compress about as well as photographs."""
    rng = np.random.default_rng(seed)
    width, height = size
    for i in range(count):
        coarse = rng.uniform(0, 255, (height // 25 + 2, width // 25 + 2, 3)).astype(np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), float)
        pixels = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        path = Path(folder) / f"class{i % classes:03d}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)


def images_per_second(batches, batch_size, warmup):
    """Pull `warmup` batches, then time the rest of `batches` (an iterator or callable)."""
    for _ in range(warmup):
        next(batches)
    started, count = time.perf_counter(), 0
    for _ in batches:
        count += batch_size
    return count / (time.perf_counter() - started)


def pipeline_speed(config, folder, batches):
    """Images per second of the training stream on the photos in `folder`, one batch of it
    and its training classes."""
    import itertools

    from dmml_tf.data.registry import load_dataset

    data_config = dataclasses.replace(config.data, dataset=f"folder:{folder}", max_classes=0)
    splits = load_dataset(data_config, config.seed, log=lambda line: None)
    batch_size = data_config.classes_per_batch * data_config.images_per_class
    stream = iter(splits.training_dataset(config.seed))
    speed = images_per_second(itertools.islice(stream, batches + 2), batch_size, warmup=2)
    return speed, next(stream), np.unique(splits.train_labels)


def train_step_speed(config, batch, classes, steps):
    import tensorflow as tf

    from dmml_tf.training.cohort import build_cohort

    model = build_cohort(config, steps, classes)  # classes: a proxy loss's, as in a run
    repeated = tf.data.Dataset.from_tensors(batch).repeat()
    model.fit(repeated, epochs=1, steps_per_epoch=2, shuffle=False, verbose=0)  # traces the step
    started = time.perf_counter()
    model.fit(repeated, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    return steps * len(batch[1]) / (time.perf_counter() - started)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path,
                        default=Path(__file__).resolve().parents[1] / "configs" / "emoji_styles.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE")
    parser.add_argument("--photos", type=int, default=512, help="JPEGs to write")
    parser.add_argument("--photo-size", default="500x375", help="WIDTHxHEIGHT of the JPEGs")
    parser.add_argument("--batches", type=int, default=20, help="pipeline batches timed")
    parser.add_argument("--steps", type=int, default=5, help="train steps timed")
    args = parser.parse_args(argv)

    from dmml_tf.config import load_config

    config = load_config(args.config, args.overrides)
    size = tuple(int(v) for v in args.photo_size.split("x"))
    batch_size = config.data.classes_per_batch * config.data.images_per_class
    print(f"config {args.config}: {config.data.image_size} px, batches of "
          f"{config.data.classes_per_batch} x {config.data.images_per_class} = {batch_size}, "
          f"{config.cohort.members} members ({config.model.backbone}); {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory() as folder:
        write_photos(folder, args.photos, size, classes=max(2, args.photos // 8))
        pipeline, batch, classes = pipeline_speed(config, folder, args.batches)
    flip = "flip, " if config.data.horizontal_flip else ""
    print(f"input pipeline (read, decode {size[0]}x{size[1]} JPEG, crop, {flip}batch): "
          f"{pipeline:8.1f} images/s")
    step = train_step_speed(config, batch, classes, args.steps)
    print(f"DM2 train step (views, members, shadows, losses, update):        "
          f"{step:8.1f} images/s")
    print(f"ratio pipeline / train step: {pipeline / step:.1f} (goal >= 3)")


if __name__ == "__main__":
    main()
