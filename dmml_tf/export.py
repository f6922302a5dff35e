"""SavedModel export of an embedder, in TF Serving's `<model>/<version>/` layout.

TF Serving watches a model's base directory and serves the highest integer-named
version directory it finds, so a version must appear whole or not at all: it is
written to a hidden sibling directory and renamed into place (`dmml_tf.files`).

Two signatures, both returning `{"embeddings": float32 (batch, d)}` of unit length:

- `serving_default`: `images`, float32 `(batch, S, S, 3)`, RGB pixel values in [0, 255];
- `serve_bytes`: `image_bytes`, string `(batch,)`, each an encoded JPEG, PNG, GIF or BMP
  file of any size. Decoding and the evaluation transform
  (`dmml_tf.data.pipeline.evaluation_transform`, the very function evaluation uses) run
  inside the graph. An input that is not such an image fails the request with an
  `InvalidArgumentError` naming the bad inputs; the model server keeps running.
"""

import json
from pathlib import Path

import tensorflow as tf

from dmml_tf.data.pipeline import evaluation_transform
from dmml_tf.errors import ConfigError
from dmml_tf.files import atomic_directory, directory_lock

SIGNATURE_KEY = "serving_default"
BYTES_SIGNATURE_KEY = "serve_bytes"
METADATA_FILE = "dmml.json"
# The first bytes of the formats `decode_rgb` reads.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


class _ServingModule(tf.Module):
    """Holds the embedder and its serving functions, so all are saved together."""

    def __init__(self, model, image_size, resize_size):
        super().__init__()
        # The Keras model stays out of the saved object graph (a plain function is not
        # tracked), which halves the time of a save; its backing tf.Variables are tracked
        # themselves, and are all that a SavedModel loaded by SignatureDef in a TF1
        # session (TF Serving, `saved_model_cli run`) restores.
        self.call_model = lambda images: model(images, training=False)
        self.model_variables = [variable.value for variable in model.variables]
        self.image_size = image_size
        self.resize_size = resize_size
        self.serve = tf.function(self._embed, input_signature=[
            tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")])
        self.serve_bytes = tf.function(self._embed_bytes, input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes")])

    def _embed(self, images):
        # training=False: augmentation layers pass images through, BatchNorm uses its
        # moving statistics.
        embeddings = self.call_model(images)
        # The serving contract is unit length, whatever the model's last layer.
        return {"embeddings": tf.math.l2_normalize(embeddings, axis=-1)}

    def _embed_bytes(self, image_bytes):
        known = tf.zeros_like(image_bytes, dtype=tf.bool)
        for magic in _MAGIC:
            known |= tf.equal(tf.strings.substr(image_bytes, 0, len(magic)), magic)
        check = tf.debugging.Assert(tf.reduce_all(known), [
            "serve_bytes: every input must be an encoded JPEG, PNG, GIF or BMP image; "
            "positions of the inputs that are not:", tf.where(~known)[:, 0]])
        with tf.control_dependencies([check]):
            images = tf.map_fn(
                lambda encoded: evaluation_transform(encoded, self.image_size, self.resize_size),
                image_bytes,
                fn_output_signature=tf.TensorSpec([self.image_size, self.image_size, 3],
                                                  tf.float32))
        # Through `serve`, so the model is traced once per export, not once per signature.
        return self.serve(images)


def export_embedder(model, export_dir, image_size, resize_size=0, version=None,
                    metadata=None):
    """Writes `model` as a new version of a TF Serving model.

    Args:
        model: `keras.Model`. An embedder mapping images to `(batch, d)` embeddings.
        export_dir: str or `Path`. The model's base directory; created if missing.
        image_size: int. Height and width of the images the model takes.
        resize_size: int. `serve_bytes` resizes an image's shorter side to this before
            cutting the centre `image_size` square; 0 means `image_size` (the whole
            shorter side is kept). Use the run's `data.resize_size`. Defaults to `0`.
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
    path = export_embedder(embedder, "saved_models/emoji_styles/member0", image_size=64)
    serve = tf.saved_model.load(str(path)).signatures["serve_bytes"]
    embeddings = serve(image_bytes=tf.constant([open("cat.png", "rb").read()]))["embeddings"]
    ```
    """
    for name, value, low in (("image_size", image_size, 1), ("resize_size", resize_size, 0)):
        if not _is_int(value) or value < low:
            raise ConfigError(f"{name} must be an integer of at least {low}. "
                              f"Received: {name}={value}")
    if resize_size and resize_size < image_size:
        raise ConfigError(f"resize_size must be 0 or at least image_size ({image_size}). "
                          f"Received: resize_size={resize_size}")
    if not model.built:
        raise ValueError(
            "The model must be built (called once or given an Input) before export. "
            f"Received: model={model.name}"
        )
    if version is not None and (not _is_int(version) or version < 0):
        raise ConfigError(
            f"version must be a non-negative integer. Received: version={version}"
        )
    # Serialise first so a bad value fails before the slow save.
    metadata_text = None if metadata is None else json.dumps(metadata, indent=2)
    # One export at a time per model: two processes exporting into one directory get
    # versions n and n + 1, never the same one.
    with directory_lock(export_dir, wait=True):
        final_dir = Path(export_dir) / str(next_version(export_dir) if version is None else version)
        if final_dir.exists():
            raise ConfigError(
                f"{final_dir} already exists; TF Serving versions are immutable, pick "
                f"another version or leave it unset. Received: version={version}"
            )
        _save(model, final_dir, image_size, resize_size, metadata_text)
    return final_dir


def _save(model, final_dir, image_size, resize_size, metadata_text):
    """The SavedModel with its signatures, and its metadata, written whole at `final_dir`."""
    with atomic_directory(final_dir) as partial:
        module = _ServingModule(model, image_size, resize_size)
        tf.saved_model.save(module, str(partial), signatures={
            SIGNATURE_KEY: module.serve, BYTES_SIGNATURE_KEY: module.serve_bytes})
        if metadata_text is not None:
            extra_dir = partial / "assets.extra"
            extra_dir.mkdir()
            (extra_dir / METADATA_FILE).write_text(metadata_text + "\n")


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
