import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dmml_tf.config import DataConfig
from dmml_tf.data.pipeline import (center_crop, decode_rgb, evaluation_stream,
                                   random_resized_crop, training_dataset, training_stream)
from dmml_tf.data.sampler import batch_indices
from dmml_tf.data.sources import ArrayImages, EncodedImages

RNG = np.random.default_rng(0)


def encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def on_white(colour, alpha):
    """Reference: alpha-blend onto white, pixel by pixel."""
    out = np.empty(colour.shape[:2] + (3,), np.uint8)
    for i in range(colour.shape[0]):
        for j in range(colour.shape[1]):
            a = alpha[i, j] / 255.0
            out[i, j] = np.round(colour[i, j] * a + 255.0 * (1 - a))
    return out


RGB = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (6, 7), dtype=np.uint8)
ALPHA = np.array([[0, 64, 128, 255, 255, 10, 200]] * 6, dtype=np.uint8)


@pytest.mark.parametrize(
    "data, expected",
    [
        (encode(Image.fromarray(RGB), "PNG"), RGB),
        (encode(Image.fromarray(RGB), "BMP"), RGB),
        (encode(Image.fromarray(GREY), "PNG"), np.repeat(GREY[..., None], 3, axis=2)),
        (encode(Image.fromarray(np.dstack([RGB, ALPHA]), "RGBA"), "PNG"), on_white(RGB, ALPHA)),
        (encode(Image.fromarray(np.dstack([GREY, ALPHA]), "LA"), "PNG"),
         np.repeat(on_white(GREY[..., None], ALPHA)[..., :1], 3, axis=2)),
    ],
    ids=["png_rgb", "bmp", "png_grey", "png_rgba_on_white", "png_grey_alpha_on_white"],
)
def test_decode_rgb_lossless_formats(data, expected):
    np.testing.assert_array_equal(decode_rgb(data).numpy(), expected)


def test_decode_rgb_gif_gives_the_first_frame():
    frames = [Image.new("RGB", (5, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_rgb(data).numpy()
    assert decoded.shape == (4, 5, 3)
    np.testing.assert_array_equal(decoded, np.broadcast_to([255, 0, 0], (4, 5, 3)))


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_decode_rgb_jpeg_matches_pillow(mode):
    image = Image.fromarray(RGB).resize((32, 24)).convert(mode)
    data = encode(image, "JPEG", quality=95, subsampling=0)  # no chroma upsampling to differ
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=float)
    decoded = decode_rgb(data).numpy()
    assert decoded.shape == (24, 32, 3)
    assert np.abs(decoded - expected).max() <= 2  # two libjpeg builds, same file


@pytest.mark.parametrize("height, width", [(8, 14), (8, 13), (15, 8)], ids=["even", "odd", "tall"])
def test_center_crop_without_resizing_is_the_centre_square(height, width):
    image = RNG.integers(0, 256, (height, width, 3)).astype(np.float32)
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    out = center_crop(tf.constant(image), side, side).numpy()
    np.testing.assert_allclose(out, image[top:top + side, left:left + side], atol=1e-3)


def test_center_crop_is_resize_shorter_side_then_centre_square():
    # 60 x 120 resized to 40 x 80, centre 20 x 20 = rows 15:45, columns 45:75 of the original.
    image = np.zeros((60, 120, 3), np.float32)
    image[15:45, 45:75] = 200.0
    out = center_crop(tf.constant(image), 20, 40).numpy()
    assert out.shape == (20, 20, 3)
    np.testing.assert_allclose(out, 200.0, atol=1e-3)


def test_random_resized_crop_full_scale_on_a_square_is_the_image():
    image = RNG.integers(0, 256, (16, 16, 3)).astype(np.float32)
    out = random_resized_crop(tf.constant(image), 16, (1.0, 1.0), (1.0, 1.0), tf.constant([1, 2]))
    np.testing.assert_allclose(out.numpy(), image, atol=1e-3)


@pytest.mark.parametrize("scale", [(0.25, 0.5), (0.8, 1.0)])
def test_random_resized_crop_box_has_the_asked_area_and_ratio(scale):
    rows, cols = np.meshgrid(np.arange(100.0), np.arange(100.0), indexing="ij")
    image = tf.constant(np.stack([rows, cols, rows], axis=-1), tf.float32)
    boxes = []
    for seed in range(20):
        out = random_resized_crop(image, 100, scale, (0.75, 4 / 3), tf.constant([seed, 0])).numpy()
        height = out[..., 0].max() - out[..., 0].min() + 1
        width = out[..., 1].max() - out[..., 1].min() + 1
        boxes.append((height, width))
        assert scale[0] - 0.03 <= height * width / 1e4 <= scale[1] + 0.03
        assert 0.75 - 0.05 <= width / height <= 4 / 3 + 0.05
    assert len(set(boxes)) > 10  # a different box per seed


def write_indexed_images(folder, count):
    """PNG i is filled with grey level 10 * i; its right half is black (to see flips)."""
    paths = []
    for i in range(count):
        pixels = np.full((12, 12, 3), 10 * i, np.uint8)
        pixels[:, 6:] = 0
        path = folder / f"{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return np.array(paths)


@pytest.fixture
def indexed(tmp_path):
    labels = np.repeat(np.arange(5), [3, 4, 2, 5, 1])
    return EncodedImages(write_indexed_images(tmp_path, len(labels)), labels)


def config(**values):
    return DataConfig(image_size=12, classes_per_batch=2, images_per_class=3,
                      crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), **values)


def test_training_stream_follows_the_sampler_and_is_repeatable(indexed):
    data_config = config()
    expected = batch_indices(indexed.labels, 2, 3, seed=4)
    first = list(training_stream(indexed, data_config, seed=4).take(4).as_numpy_iterator())
    again = list(training_stream(indexed, data_config, seed=4).take(4).as_numpy_iterator())
    for (images, labels), (images_again, _) in zip(first, again):
        indices = next(expected)
        assert images.shape == (6, 12, 12, 3) and images.dtype == np.float32
        np.testing.assert_allclose(images[:, 0, 0, 0], 10.0 * indices, atol=1e-3)
        np.testing.assert_array_equal(labels, indexed.labels[indices])
        np.testing.assert_array_equal(images, images_again)


def test_training_stream_started_at_a_step_goes_on_as_the_one_started_at_0(indexed):
    data_config = DataConfig(image_size=12, classes_per_batch=2, images_per_class=3,
                             crop_scale=(0.3, 1.0), horizontal_flip=True)  # random crops, flips
    whole = list(training_stream(indexed, data_config, seed=4).take(5).as_numpy_iterator())
    resumed = list(training_stream(indexed, data_config, seed=4, start=3).take(2)
                   .as_numpy_iterator())
    for (images, labels), (expected_images, expected_labels) in zip(resumed, whole[3:]):
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(labels, expected_labels)


@pytest.mark.parametrize("flip", [False, True])
def test_horizontal_flip_only_when_configured(indexed, flip):
    batches = training_stream(indexed, config(horizontal_flip=flip), seed=0).take(10)
    images = np.concatenate([x for x, _ in batches.as_numpy_iterator()])
    flipped = images[:, 0, 0, 0] == 0.0
    right_black = images[:, 0, -1, 0] == 0.0
    if not flip:
        assert right_black.all()
    else:
        lit = images.max(axis=(1, 2, 3)) > 0  # image 0 is black on both sides
        assert 0.3 < flipped[lit].mean() < 0.7


def test_evaluation_stream_keeps_order_and_batches(indexed):
    batches = list(evaluation_stream(indexed, config(), batch_size=4).as_numpy_iterator())
    assert [len(b) for b in batches] == [4, 4, 4, 3]
    images = np.concatenate(batches)
    np.testing.assert_allclose(images[:, 0, 0, 0], 10.0 * np.arange(15), atol=1e-3)


def test_training_dataset_serves_arrays_and_encoded_images_alike(indexed):
    arrays = ArrayImages(np.zeros((15, 12, 12, 3), np.uint8), indexed.labels)
    for source in (arrays, indexed):
        images, labels = next(iter(training_dataset(source, config(), seed=0, replicas=2)))
        assert images.shape == (6, 12, 12, 3) and images.dtype == tf.float32
        assert labels.shape == (6,)
