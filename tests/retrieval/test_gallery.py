import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from retrieval_helpers import naive_neighbors, unit_rows

from dmml_tf.config import DataConfig, EvaluateConfig
from dmml_tf.data.pipeline import evaluation_transform
from dmml_tf.data.registry import RetrievalSplits
from dmml_tf.data.sources import ArrayImages, EncodedImages
from dmml_tf.retrieval import gallery
from dmml_tf.retrieval.gallery import (retrieval_grid, shrink, split_images, split_references,
                                       thumbnails)
from dmml_tf.retrieval.plots import plot_metric_per_epoch


def png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def encoded(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, shape in enumerate([(40, 60, 3), (50, 50, 3), (70, 45, 3)]):
        paths.append(str(tmp_path / f"{i}.png"))
        (tmp_path / f"{i}.png").write_bytes(png(rng.integers(0, 255, shape, dtype=np.uint8)))
    return EncodedImages(np.array(paths), np.array([0, 0, 1]))


def test_split_images_are_what_evaluation_sees(encoded):
    data_config = DataConfig(image_size=32, resize_size=36)
    images = split_images(encoded, [2, 0], data_config)
    for image, path in zip(images, [encoded.keys[2], encoded.keys[0]]):
        expected = evaluation_transform(tf.io.read_file(path), 32, 36).numpy()
        np.testing.assert_array_equal(image, np.clip(np.round(expected), 0, 255))
    arrays = ArrayImages(np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3),
                         np.zeros(4))
    np.testing.assert_array_equal(split_images(arrays, [3, 1], data_config),
                                  arrays.images[[3, 1]])


def test_references_and_thumbnails(encoded):
    assert split_references(encoded, "test", "folder") == list(encoded.keys)
    arrays = ArrayImages(np.full((3, 8, 8, 3), 200, np.uint8), np.zeros(3))
    assert split_references(arrays, "test", "emoji_styles") == [
        "emoji_styles:test/0", "emoji_styles:test/1", "emoji_styles:test/2"]
    small = thumbnails(arrays, DataConfig(image_size=8), 4, batch_size=2)
    assert small.shape == (3, 4, 4, 3) and small.dtype == np.uint8
    assert (small == 200).all()  # a flat image stays flat
    assert thumbnails(encoded, DataConfig(image_size=32), 16).shape == (3, 16, 16, 3)


def test_shrink_is_the_mean_of_the_pixels_each_thumbnail_pixel_covers():
    images = np.random.default_rng(0).integers(0, 256, (2, 6, 6, 3)).astype(np.uint8)
    expected = np.zeros((2, 3, 3, 3))
    for n, row, column in np.ndindex(2, 3, 3):  # a 2 x 2 block per thumbnail pixel
        block = images[n, 2 * row:2 * row + 2, 2 * column:2 * column + 2].astype(float)
        expected[n, row, column] = block.mean(axis=(0, 1))
    np.testing.assert_array_equal(shrink(images, 3), np.clip(np.round(expected), 0, 255))


def test_retrieval_grid_marks_neighbours_of_the_query_class(monkeypatch, tmp_path):
    rng = np.random.default_rng(1)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])  # class 3 has one image: never a query
    embeddings = unit_rows(rng.normal(size=(9, 5)))
    images = rng.integers(0, 255, (9, 8, 8, 3), dtype=np.uint8)
    splits = RetrievalSplits("toy", ArrayImages(images, labels), ArrayImages(images, labels),
                             tuple(f"class{i}" for i in range(4)))
    drawn = {}
    monkeypatch.setattr(gallery, "plot_retrieval", lambda *args, **kwargs: drawn.update(
        queries=args[0], neighbors=args[1], **kwargs))
    settings = EvaluateConfig(grid_queries=4, grid_neighbors=3, backend="exact")
    retrieval_grid(embeddings, splits, DataConfig(image_size=8), settings, tmp_path / "g.png",
                   "ensemble")

    assert len(drawn["queries"]) == 4
    expected_neighbors = naive_neighbors(embeddings, embeddings, 3, leave_one_out=True)
    for query_image, neighbor_images, correct in zip(drawn["queries"], drawn["neighbors"],
                                                      drawn["correct"]):
        query = next(i for i in range(9) if (images[i] == query_image).all())
        assert query != 8
        np.testing.assert_array_equal(neighbor_images, images[expected_neighbors[query]])
        np.testing.assert_array_equal(correct, labels[expected_neighbors[query]] == labels[query])


def test_pictures_are_written(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(3), 3)
    images = rng.integers(0, 255, (9, 16, 16, 3), dtype=np.uint8)
    splits = RetrievalSplits("toy", ArrayImages(images, labels), ArrayImages(images, labels),
                             ("a", "b", "c"))
    retrieval_grid(unit_rows(rng.normal(size=(9, 4))), splits, DataConfig(image_size=16),
                   EvaluateConfig(grid_queries=2, grid_neighbors=3), tmp_path / "grid.png",
                   "member0")
    history = [{"epoch": e, "results": {"member0": {"recall@1": 0.1 * e},
                                        "ensemble": {"recall@1": 0.12 * e}}} for e in (1, 2, 3)]
    plot_metric_per_epoch(history, tmp_path / "recall.png")
    for name, min_size in [("grid.png", (400, 250)), ("recall.png", (600, 400))]:
        with Image.open(tmp_path / name) as picture:
            assert picture.format == "PNG" and picture.size >= min_size
