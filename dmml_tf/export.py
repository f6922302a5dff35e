"""SavedModel export of an embedder, in TF Serving's `<model>/<version>/` layout.

TF Serving watches a model's base directory and serves the highest integer-named
version directory it finds, so a version must appear whole or not at all: it is
written to a hidden sibling directory and renamed into place.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from dmml_tf.errors import ConfigError

SIGNATURE_KEY = "serving_default"
METADATA_FILE = "dmml.json"


class _ServingModule(tf.Module):
    """Holds the embedder and its serving function, so both are saved together."""

    def __init__(self, model, image_size):
        super().__init__()
        self.model = model
        # Keras 3 keeps some state (augmentation layers' seed generators) outside the
        # object graph TF walks; listing every variable makes it all reachable.
        self.model_variables = list(model.variables)
        self.serve = tf.function(
            self._embed,
            input_signature=[
                tf.TensorSpec(
                    [None, image_size, image_size, 3], tf.float32, name="images"
                )
            ],
        )

    def _embed(self, images):
        # training=False: augmentation layers pass images through, BatchNorm uses its
        # moving statistics.
        embeddings = self.model(images, training=False)
        # The serving contract is unit length, whatever the model's last layer.
        return {"embeddings": tf.math.l2_normalize(embeddings, axis=-1)}


def export_embedder(model, export_dir, image_size, version=None, metadata=None):
    """Writes `model` as a new version of a TF Serving model.

    The SavedModel's `serving_default` signature takes `images`, float32 of shape
    `(batch, image_size, image_size, 3)` holding pixel values in [0, 255], and returns
    `{"embeddings": float32 (batch, d)}`, unit length.

    Args:
        model: `keras.Model`. An embedder mapping images to `(batch, d)` embeddings.
        export_dir: str or `Path`. The model's base directory; created if missing.
        image_size: int. Height and width of the images the signature accepts.
        version: int or `None`. Version number, a directory name under `export_dir`.
            `None` takes the next integer after the existing versions, starting at 1.
            Defaults to `None`.
        metadata: dict or `None`. JSON-serialisable data (e.g. the resolved config)
            written to `<version>/assets.extra/dmml.json`, a folder TF Serving
            ignores. Defaults to `None`.

    Returns:
        `Path` of the version directory written.

    Example:

    ```python
    path = export_embedder(embedder, "saved_models/emoji_styles", image_size=64)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    embeddings = serve(images=images)["embeddings"]
    ```
    """
    if not _is_int(image_size) or image_size < 1:
        raise ConfigError(
            f"image_size must be a positive integer. Received: image_size={image_size}"
        )
    if not model.built:
        raise ValueError(
            "The model must be built (called once or given an Input) before export. "
            f"Received: model={model.name}"
        )
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    if version is None:
        version = next_version(export_dir)
    if not _is_int(version) or version < 0:
        raise ConfigError(
            f"version must be a non-negative integer. Received: version={version}"
        )
    final_dir = export_dir / str(version)
    if final_dir.exists():
        raise ConfigError(
            f"{final_dir} already exists; TF Serving versions are immutable, pick "
            f"another version or leave it unset. Received: version={version}"
        )
    # Serialise first so a bad value fails before the slow save.
    metadata_text = None if metadata is None else json.dumps(metadata, indent=2)

    temp_dir = Path(tempfile.mkdtemp(prefix=f".{version}-partial-", dir=export_dir))
    try:
        module = _ServingModule(model, image_size)
        tf.saved_model.save(
            module, str(temp_dir), signatures={SIGNATURE_KEY: module.serve}
        )
        if metadata_text is not None:
            extra_dir = temp_dir / "assets.extra"
            extra_dir.mkdir()
            (extra_dir / METADATA_FILE).write_text(metadata_text + "\n")
        # mkdtemp makes the directory 0700; a model server may run as another user.
        os.chmod(temp_dir, 0o755)
        os.rename(temp_dir, final_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return final_dir


def next_version(export_dir):
    """Returns one more than the largest integer-named directory in `export_dir`.

    Args:
        export_dir: str or `Path`. A TF Serving model base directory.

    Returns:
        int: 1 when there is no version yet.
    """
    versions = [
        int(path.name)
        for path in Path(export_dir).iterdir()
        if path.is_dir() and path.name.isdigit()
    ]
    return max(versions, default=0) + 1


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)
