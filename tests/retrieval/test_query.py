import keras
import numpy as np
import pytest
from PIL import Image

from dmml_tf.config import load_config
from dmml_tf.errors import DataError
from dmml_tf.export import export_embedder
from dmml_tf.retrieval.evaluate import embed
from dmml_tf.retrieval.index import GalleryIndex
from dmml_tf.retrieval.query import search_images

SIZE = 32


@pytest.fixture(scope="module")
def exported_gallery(tmp_path_factory):
    """A tiny embedder exported as a SavedModel, and a gallery index of 12 images."""
    root = tmp_path_factory.mktemp("search")
    keras.utils.set_random_seed(0)
    embedder = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255),
                                 keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                                 keras.layers.Flatten(), keras.layers.Dense(16),
                                 keras.layers.UnitNormalization()])
    saved_model = export_embedder(embedder, root / "ensemble", SIZE)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 3)
    index = GalleryIndex(embed(embedder, images, 8), labels,
                         references=[f"toy:test/{i}" for i in range(12)],
                         thumbnails=images[:, ::2, ::2], class_names=["a", "b", "c", "d"])
    index.save(root / "gallery" / "1", metadata={
        "network": "ensemble", "saved_model": str(saved_model), "dataset": "toy",
        "split": "test"})
    for i in (4, 9):
        Image.fromarray(images[i]).save(root / f"query{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG but nothing else")
    return root


def config():
    return load_config(overrides=[f"data.image_size={SIZE}", "export.search_k=3"])


def test_gallery_images_find_themselves_first(exported_gallery, tmp_path):
    lines = []
    queries = [exported_gallery / "query4.png", exported_gallery / "query9.png"]
    indices, distances = search_images(queries, exported_gallery / "gallery", config(),
                                       tmp_path / "search.png", log=lines.append)
    assert indices.shape == distances.shape == (2, 3)
    np.testing.assert_array_equal(indices[:, 0], [4, 9])
    np.testing.assert_allclose(distances[:, 0], 0.0, atol=2e-3)
    assert (np.diff(distances, axis=1) >= 0).all()
    assert any(line.startswith("   1. distance 0.00") and "toy:test/4" in line for line in lines)
    assert (tmp_path / "search.png").stat().st_size > 10_000


@pytest.mark.parametrize("name, message", [("broken.png", "must be a JPEG, PNG"),
                                           ("missing.png", "Query image not found")])
def test_bad_query_files_are_data_errors(exported_gallery, tmp_path, name, message):
    with pytest.raises(DataError, match=f"{message}.*Received: .*{name}"):
        search_images([exported_gallery / name], exported_gallery / "gallery", config(),
                      tmp_path / "search.png")


def test_a_missing_index_says_to_export(tmp_path):
    with pytest.raises(DataError, match="python main.py export"):
        search_images([tmp_path / "x.png"], tmp_path / "gallery", config(), tmp_path / "s.png")
