import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmml_tf.errors import ConfigError
from dmml_tf.export import export_embedder

IMAGE_SIZE = 32

# Runs in a fresh interpreter that never imports dmml_tf or keras: the SavedModel alone
# must reproduce the embeddings.
SERVE_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf

serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
embeddings = serve(images=tf.constant(np.load(sys.argv[2])))["embeddings"]
np.save(sys.argv[3], embeddings.numpy())
_, inputs = serve.structured_input_signature
inputs = {k: [v.shape.as_list(), v.dtype.name] for k, v in inputs.items()}
print(json.dumps({"inputs": inputs, "outputs": sorted(serve.structured_outputs)}))
"""


@pytest.fixture(scope="module")
def embedder():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)),
            keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomTranslation(0.25, 0.25),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(16),
            keras.layers.UnitNormalization(),
        ]
    )


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, size=(5, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)


def version_dirs(export_dir):
    return sorted(path.name for path in export_dir.iterdir())


def test_fresh_process_serves_the_inference_embeddings(embedder, images, tmp_path):
    path = export_embedder(embedder, tmp_path / "embedder", IMAGE_SIZE)
    np.save(tmp_path / "images.npy", images)
    completed = subprocess.run(
        [sys.executable, "-c", SERVE_SCRIPT, path, tmp_path / "images.npy",
         tmp_path / "served.npy"],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=True,
    )
    signature = json.loads(completed.stdout.strip().splitlines()[-1])
    assert signature == {
        "inputs": {"images": [[None, IMAGE_SIZE, IMAGE_SIZE, 3], "float32"]},
        "outputs": ["embeddings"],
    }
    served = np.load(tmp_path / "served.npy")
    expected = embedder.predict(images, verbose=0)
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    # The augmentation layers do change training-mode outputs, so the match above
    # shows they were off when serving.
    augmented = embedder(images, training=True).numpy()
    assert np.abs(augmented - expected).max() > 1e-3


def test_versions_count_up_and_leave_no_temporary_directory(embedder, tmp_path):
    export_dir = tmp_path / "embedder"
    export_dir.mkdir()
    (export_dir / "notes").mkdir()  # Not a version: ignored when numbering.
    paths = [
        export_embedder(embedder, export_dir, IMAGE_SIZE),
        export_embedder(embedder, export_dir, IMAGE_SIZE),
        export_embedder(embedder, export_dir, IMAGE_SIZE, version=7),
        export_embedder(embedder, export_dir, IMAGE_SIZE),
    ]
    assert [path.name for path in paths] == ["1", "2", "7", "8"]
    assert version_dirs(export_dir) == ["1", "2", "7", "8", "notes"]
    assert all((path / "saved_model.pb").is_file() for path in paths)


def test_existing_version_is_rejected(embedder, tmp_path):
    export_embedder(embedder, tmp_path, IMAGE_SIZE)
    with pytest.raises(ConfigError, match="Received: version=1$"):
        export_embedder(embedder, tmp_path, IMAGE_SIZE, version=1)
    assert version_dirs(tmp_path) == ["1"]


def test_interrupted_export_leaves_nothing(embedder, tmp_path, monkeypatch):
    def interrupted_save(obj, export_dir, **kwargs):
        # Dies after writing part of the SavedModel, as a killed process would.
        (Path(export_dir) / "saved_model.pb").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(tf.saved_model, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        export_embedder(embedder, tmp_path, IMAGE_SIZE)
    assert version_dirs(tmp_path) == []


def test_metadata_is_written_beside_the_model(embedder, tmp_path):
    metadata = {"dataset": "emoji_styles", "image_size": IMAGE_SIZE, "members": [0, 1]}
    path = export_embedder(embedder, tmp_path, IMAGE_SIZE, metadata=metadata)
    written = json.loads((path / "assets.extra" / "dmml.json").read_text())
    assert written == metadata


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 0}, "Received: image_size=0$"),
        ({"image_size": IMAGE_SIZE, "version": -1}, "Received: version=-1$"),
    ],
    ids=["image_size", "version"],
)
def test_bad_arguments_are_rejected(embedder, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        export_embedder(embedder, tmp_path, **kwargs)
