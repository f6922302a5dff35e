"""Embedders: backbone -> global average pooling -> Dense(d) -> L2 normalisation."""

import keras


@keras.saving.register_keras_serializable(package="dmml_tf")
class InferenceMode(keras.layers.Layer):
    """Always runs `layer` with `training=False` (Keras 3 functional models forward the
    outer `training` flag, so passing `training=False` when building is not enough).

    Its weights still train: with a BatchNorm backbone this freezes the statistics while
    gamma and beta learn.

    Args:
        layer: keras.Layer. The wrapped layer or model.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, inputs):
        return self.layer(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "layer": keras.saving.serialize_keras_object(self.layer)}

    @classmethod
    def from_config(cls, config):
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)


def build_embedder(backbone, embedding_dim, seed, freeze_batchnorm=True, dropout=0.0,
                   name="member"):
    """Wrap `backbone` into a model that returns unit-length `embedding_dim` vectors.

    Args:
        backbone: keras.Model. Images in [0, 255] -> feature map `(N, h, w, c)`.
        embedding_dim: int. Size of the embedding.
        seed: int. Seed of the head's initialiser; members get different seeds (model
            diversity).
        freeze_batchnorm: bool. Run the backbone in inference mode, so BatchNorm uses its
            pretrained statistics while its gamma and beta still train. Defaults to `True`.
        dropout: float. Dropout rate on the pooled features before the head, drawn from
            `seed` (0: none). Defaults to `0.0`.
        name: str. Name of the returned model.
    """
    inputs = keras.Input(backbone.input_shape[1:])
    features = InferenceMode(backbone, name="frozen_batchnorm")(inputs) if freeze_batchnorm else backbone(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    if dropout:
        pooled = keras.layers.Dropout(dropout, seed=seed, name="dropout")(pooled)
    # Under a mixed-precision policy the head and the normalisation compute in float32;
    # otherwise they follow the policy (float32, or float64 in exactness tests).
    dtype = "float32" if keras.config.dtype_policy().name.startswith("mixed") else None
    projected = keras.layers.Dense(
        embedding_dim, kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        dtype=dtype, name="head"
    )(pooled)
    embeddings = keras.layers.UnitNormalization(dtype=dtype, name="unit")(projected)
    return keras.Model(inputs, embeddings, name=name)


def synchronise_batchnorm(model):
    """Make every BatchNormalization layer inside `model` compute its batch statistics
    over all replicas of the current `tf.distribute` strategy (Keras's
    `synchronized=True`); returns how many layers it changed."""
    changed = 0
    for layer in _sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            changed += 1
    return changed


def _sublayers(layer):
    """Every layer inside `layer`, depth first (through models and InferenceMode)."""
    for inner in [*getattr(layer, "layers", []), *filter(None, [getattr(layer, "layer", None)])]:
        yield inner
        yield from _sublayers(inner)


def pooled_features(backbone, name="pretrained"):
    """The backbone's unit-length pooled features: the not-fine-tuned baseline."""
    inputs = keras.Input(backbone.input_shape[1:])
    pooled = keras.layers.GlobalAveragePooling2D()(InferenceMode(backbone)(inputs))
    return keras.Model(inputs, keras.layers.UnitNormalization()(pooled), name=name)


def join_embeddings(parts):
    """The ensemble's embedding: the parts' unit vectors concatenated and re-normalised
    (docs/method.md). The one definition that training, evaluation and export use.

    Args:
        parts: list of arrays or tensors `(N, d_i)`.

    Returns:
        A tensor `(N, sum d_i)` of unit rows.
    """
    return keras.ops.normalize(keras.ops.concatenate(parts, axis=-1), axis=-1)


@keras.saving.register_keras_serializable(package="dmml_tf")
class JoinEmbeddings(keras.layers.Layer):
    """`join_embeddings` as a layer, for an ensemble model."""

    def call(self, parts):
        return join_embeddings(parts)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], sum(shape[-1] for shape in input_shapes))


def ensemble(embedders, name="ensemble"):
    """A model whose embedding is `join_embeddings` of the embedders'."""
    inputs = keras.Input(embedders[0].input_shape[1:])
    return keras.Model(inputs, JoinEmbeddings()([embedder(inputs) for embedder in embedders]),
                       name=name)
