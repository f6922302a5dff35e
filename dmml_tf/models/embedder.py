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


def pooled_features(backbone, name="pretrained"):
    """The backbone's unit-length pooled features: the not-fine-tuned baseline."""
    inputs = keras.Input(backbone.input_shape[1:])
    pooled = keras.layers.GlobalAveragePooling2D()(InferenceMode(backbone)(inputs))
    return keras.Model(inputs, keras.layers.UnitNormalization()(pooled), name=name)


def ensemble(embedders, name="ensemble"):
    """Concatenate the embedders' unit vectors and re-normalise (DESIGN.md §1)."""
    inputs = keras.Input(embedders[0].input_shape[1:])
    joined = keras.layers.Concatenate()([embedder(inputs) for embedder in embedders])
    return keras.Model(inputs, keras.layers.UnitNormalization()(joined), name=name)
