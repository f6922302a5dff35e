import io
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dmml_tf.data.pipeline import evaluation_transform
from dmml_tf.errors import ConfigError
from dmml_tf.export import export_embedder
from dmml_tf.files import LOCK_FILE

IMAGE_SIZE = 32

# Runs in a fresh interpreter that never imports dmml_tf or keras: the SavedModel alone
# must reproduce the embeddings.
SERVE_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf

signatures = tf.saved_model.load(sys.argv[1]).signatures
served = signatures["serving_default"](images=tf.constant(np.load(sys.argv[2])))
np.save(sys.argv[3], served["embeddings"].numpy())
described = {}
for key, function in signatures.items():
    _, inputs = function.structured_input_signature
    inputs = {k: [v.shape.as_list(), v.dtype.name] for k, v in inputs.items()}
    described[key] = {"inputs": inputs, "outputs": sorted(function.structured_outputs)}
print(json.dumps(described))
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
    return sorted(path.name for path in export_dir.iterdir() if path.name != LOCK_FILE)


@pytest.mark.slow
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
    signatures = json.loads(completed.stdout.strip().splitlines()[-1])
    assert signatures == {
        "serving_default": {"inputs": {"images": [[None, IMAGE_SIZE, IMAGE_SIZE, 3], "float32"]},
                            "outputs": ["embeddings"]},
        "serve_bytes": {"inputs": {"image_bytes": [[None], "string"]},
                        "outputs": ["embeddings"]},
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
        ({"image_size": IMAGE_SIZE, "resize_size": 20}, "Received: resize_size=20$"),
    ],
    ids=["image_size", "version", "resize_size"],
)
def test_bad_arguments_are_rejected(embedder, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        export_embedder(embedder, tmp_path, **kwargs)


def encode(image, format_name):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=format_name)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(embedder, tmp_path_factory):
    """One export with `serve_bytes` resizing the shorter side to 40, then cutting 32."""
    path = export_embedder(embedder, tmp_path_factory.mktemp("served") / "embedder",
                           IMAGE_SIZE, resize_size=40)
    return path, tf.saved_model.load(str(path)).signatures


def test_bytes_signature_applies_the_evaluation_transform(exported, embedder):
    _, signatures = exported
    rng = np.random.default_rng(1)
    # A wide JPEG, a tall PNG and a grey PNG with transparency, all of different sizes.
    pictures = [encode(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8), "JPEG"),
                encode(rng.integers(0, 255, (90, 50, 3), dtype=np.uint8), "PNG"),
                encode(rng.integers(0, 255, (33, 33, 2), dtype=np.uint8), "PNG")]
    served = signatures["serve_bytes"](image_bytes=tf.constant(pictures))["embeddings"]
    transformed = tf.stack([evaluation_transform(p, IMAGE_SIZE, 40) for p in pictures])
    expected = signatures["serving_default"](images=transformed)["embeddings"]
    np.testing.assert_allclose(served.numpy(), expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(served.numpy(), embedder.predict(transformed, verbose=0),
                               atol=1e-5)


def test_bytes_of_an_image_already_at_size_match_its_pixels(embedder, tmp_path):
    # The in-memory emoji_styles path: images rendered at image_size, evaluated as they
    # are. With resize_size 0 the transform leaves them unchanged.
    signatures = tf.saved_model.load(str(export_embedder(embedder, tmp_path, IMAGE_SIZE))).signatures
    pixels = np.random.default_rng(2).integers(0, 255, (3, IMAGE_SIZE, IMAGE_SIZE, 3),
                                               dtype=np.uint8)
    served = signatures["serve_bytes"](
        image_bytes=tf.constant([encode(p, "PNG") for p in pixels]))["embeddings"]
    np.testing.assert_allclose(served.numpy(), embedder.predict(pixels.astype(np.float32),
                                                                verbose=0), atol=1e-5)


@pytest.mark.parametrize(
    "bad, message",
    [
        (b"", r"not:\] \[1\]"),
        (b"not an image at all", r"not:\] \[1\]"),
        ("truncated", "(?i)jpeg|truncated|data"),
    ],
    ids=["empty", "text", "truncated_jpeg"],
)
def test_malformed_bytes_fail_the_request_not_the_process(exported, bad, message):
    _, signatures = exported
    good = encode(np.full((40, 40, 3), 128, np.uint8), "JPEG")
    bad = good[: len(good) // 3] if bad == "truncated" else bad
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        signatures["serve_bytes"](image_bytes=tf.constant([good, bad]))
    # The same loaded model still serves the next request.
    served = signatures["serve_bytes"](image_bytes=tf.constant([good]))["embeddings"]
    assert served.shape == (1, 16)


def saved_model_cli(*args):
    return subprocess.run(["saved_model_cli", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                          timeout=300)


@pytest.mark.slow
def test_saved_model_cli_lists_and_runs_both_signatures(exported, embedder, tmp_path):
    path, _ = exported
    shown = saved_model_cli("show", "--dir", path, "--all")
    assert shown.returncode == 0, shown.stderr
    for line in ["signature_def['serving_default']:", "signature_def['serve_bytes']:",
                 "inputs['images'] tensor_info:", "inputs['image_bytes'] tensor_info:",
                 "outputs['embeddings'] tensor_info:"]:
        assert line in shown.stdout

    pixels = np.random.default_rng(3).integers(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3),
                                               dtype=np.uint8)
    np.save(tmp_path / "images.npy", pixels.astype(np.float32))
    np.save(tmp_path / "bytes.npy", np.array([encode(p, "PNG") for p in pixels], dtype=object))
    # The bytes signature resizes the shorter side 32 -> 40 and cuts the centre 32: the
    # embedder applied to that same decode, resize and crop.
    transformed = tf.stack([evaluation_transform(encode(p, "PNG"), IMAGE_SIZE, 40) for p in pixels])
    expected = {"serving_default": embedder.predict(pixels.astype(np.float32), verbose=0),
                "serve_bytes": embedder.predict(transformed, verbose=0)}
    for signature, inputs in [("serving_default", "images=" + str(tmp_path / "images.npy")),
                              ("serve_bytes", "image_bytes=" + str(tmp_path / "bytes.npy"))]:
        outdir = tmp_path / signature
        ran = saved_model_cli("run", "--dir", path, "--tag_set", "serve", "--signature_def",
                              signature, "--inputs", inputs, "--outdir", outdir)
        assert ran.returncode == 0, ran.stderr
        np.testing.assert_allclose(np.load(outdir / "embeddings.npy"), expected[signature],
                                   atol=1e-5)


EXPORT_SCRIPT = """
import sys
import keras
from dmml_tf.export import export_embedder
from dmml_tf.files import LOCK_FILE

model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(),
                          keras.layers.UnitNormalization()])
print(export_embedder(model, sys.argv[1], image_size=8).name, flush=True)
"""


@pytest.mark.slow
def test_two_processes_exporting_into_one_model_get_versions_1_and_2(tmp_path):
    exports = [subprocess.Popen([sys.executable, "-c", EXPORT_SCRIPT, str(tmp_path / "model")],
                                cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [export.communicate(timeout=300) for export in exports]
    assert [export.returncode for export in exports] == [0, 0], [err[-2000:] for _, err in outputs]
    assert sorted(out.strip() for out, _ in outputs) == ["1", "2"]
    assert version_dirs(tmp_path / "model") == ["1", "2"]
