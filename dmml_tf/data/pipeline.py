"""The streaming input pipeline for encoded images (files or TFDS records).

Training: P x K index batches from `dmml_tf.data.sampler` -> read and decode each image in
parallel -> random resized crop (+ horizontal flip if configured) to `image_size` ->
batch -> prefetch. Evaluation: read and decode -> resize the shorter side to
`resize_size` and crop the centre `image_size` square. Images are never all held in
memory. Each network's own view (`dmml_tf/data/views.py`) is applied later, inside the
train step. Randomness is stateless, seeded by `seed` and the image's position in the
stream, so a run is repeatable however the map is parallelised.
"""

import numpy as np
import tensorflow as tf

from dmml_tf.data.sampler import batch_indices, check_replicas, class_balanced_dataset
from dmml_tf.data.sources import ArrayImages

AUTOTUNE = tf.data.AUTOTUNE


def decode_rgb(encoded):
    """uint8 RGB `(H, W, 3)` from JPEG, PNG, BMP or GIF (first frame) bytes.

    JPEGs use the accurate integer DCT (as Pillow does). Grey images are repeated to three
    channels; transparent pixels are put on white. Raises `tf.errors.InvalidArgumentError`
    for data that is not a readable image.
    """
    def jpeg():
        return tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")

    def other():
        image = tf.io.decode_image(encoded, channels=0, expand_animations=False)
        branches = [
            lambda: tf.tile(image[..., :1], [1, 1, 3]),                           # grey
            lambda: tf.tile(_on_white(image[..., :1], image[..., 1:2]), [1, 1, 3]),  # grey + alpha
            lambda: image[..., :3],                                               # RGB
            lambda: _on_white(image[..., :3], image[..., 3:4]),                   # RGBA
        ]
        return tf.ensure_shape(tf.switch_case(tf.shape(image)[-1] - 1, branches), [None, None, 3])

    return tf.ensure_shape(tf.cond(tf.io.is_jpeg(encoded), jpeg, other), [None, None, 3])


def _on_white(colour, alpha):
    alpha = tf.cast(alpha, tf.float32) / 255.0
    blended = tf.cast(colour, tf.float32) * alpha + 255.0 * (1.0 - alpha)
    return tf.cast(tf.round(blended), tf.uint8)


def random_resized_crop(image, size, scale, ratio, seed):
    """A random box of `scale` area fraction and `ratio` width/height, resized to `size`.

    Falls back to the whole image when no box fits in 10 attempts.
    """
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=ratio, area_range=scale, max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    return tf.image.resize(tf.slice(image, begin, crop_size), [size, size], antialias=True)


def center_crop(image, size, resize_size):
    """As resizing the shorter side to `resize_size`, then cutting the centre `size` square
    (cropped first, so only the kept pixels are resized)."""
    shape = tf.shape(image)[:2]
    side = tf.cast(tf.round(tf.cast(tf.reduce_min(shape), tf.float32) * size / resize_size),
                   tf.int32)
    side = tf.clip_by_value(side, 1, tf.reduce_min(shape))
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    crop = tf.slice(image, [top, left, 0], [side, side, 3])
    return tf.image.resize(crop, [size, size], antialias=True)


def training_stream(source, data_config, seed, start=0):
    """Endless `(images, labels)` P x K batches of `source` (`EncodedImages`).

    Args:
        source: `EncodedImages`. The training images.
        data_config: `DataConfig`. `classes_per_batch`, `images_per_class`, `image_size`,
            `crop_scale`, `crop_ratio` and `horizontal_flip` are used.
        seed: int. Seeds the sampler and every crop and flip.
        start: int. The first batch: from there on, the stream that starts at 0, crops and
            flips included (a resumed run goes on at its checkpoint's step). Defaults to `0`.

    Returns:
        A `tf.data.Dataset` of float32 images `(P*K, S, S, 3)` in [0, 255] and int32
        labels `(P*K,)`.
    """
    batch_size = data_config.classes_per_batch * data_config.images_per_class
    keys = tf.constant(source.keys)
    labels = tf.constant(np.asarray(source.labels, np.int32))
    scale = [float(v) for v in data_config.crop_scale]
    ratio = [float(v) for v in data_config.crop_ratio]
    indices = tf.data.Dataset.from_generator(
        lambda: batch_indices(source.labels, data_config.classes_per_batch,
                              data_config.images_per_class, seed, start),
        output_signature=tf.TensorSpec([batch_size], tf.int64))

    def load(position, index):
        image = decode_rgb(source.read(tf.gather(keys, index)))
        crop_seed, flip_seed = tf.stack([seed, 2 * position]), tf.stack([seed, 2 * position + 1])
        image = random_resized_crop(image, data_config.image_size, scale, ratio, crop_seed)
        if data_config.horizontal_flip:
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        return image, tf.gather(labels, index)

    # Each image's crop and flip are seeded by its position in the stream from batch 0.
    images = indices.unbatch().enumerate(start * batch_size).map(load, AUTOTUNE,
                                                                 deterministic=True)
    return images.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def evaluation_transform(encoded, image_size, resize_size=0):
    """Encoded image bytes -> float32 `(image_size, image_size, 3)` in [0, 255], as
    evaluation sees them: decoded, shorter side resized to `resize_size` (0: image_size),
    centre square cut.

    The one definition of the evaluation transform: `evaluation_stream` and the exported
    SavedModels' `serve_bytes` signature (`dmml_tf/export.py`) both call it.
    """
    return center_crop(decode_rgb(encoded), image_size, resize_size or image_size)


def evaluation_stream(source, data_config, batch_size):
    """Float32 `(batch, S, S, 3)` batches of `source`'s images in its order, centre-cropped."""

    def load(key):
        return evaluation_transform(source.read(key), data_config.image_size,
                                    data_config.resize_size)

    images = tf.data.Dataset.from_tensor_slices(source.keys).map(load, AUTOTUNE, deterministic=True)
    return images.batch(batch_size).prefetch(AUTOTUNE)


def training_dataset(source, data_config, seed, replicas=1, start=0):
    """The training batches of any source, in-memory arrays or streamed encoded images,
    from batch `start` on.

    Raises a ConfigError unless the global batch splits evenly across `replicas`.
    """
    check_replicas(data_config.classes_per_batch, data_config.images_per_class, replicas)
    if isinstance(source, ArrayImages):
        return class_balanced_dataset(source.images, source.labels, data_config.classes_per_batch,
                                      data_config.images_per_class, seed, start)
    return training_stream(source, data_config, seed, start)


def evaluation_images(source, data_config, batch_size):
    """What `dmml_tf.retrieval.evaluate.embed` takes: the array itself, or the stream."""
    if isinstance(source, ArrayImages):
        return source.images
    return evaluation_stream(source, data_config, batch_size)
