"""Where a split's images come from: decoded arrays in memory, or encoded images read on
demand (image files, TFDS records) so that a large dataset is never all in memory."""

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayImages:
    """Decoded images held in memory (the embedded `emoji_styles`).

    Attributes:
        images: uint8 array `(N, H, W, 3)`, already at the network's input size.
        labels: int array `(N,)`.
    """

    images: np.ndarray
    labels: np.ndarray

    def subset(self, keep):
        return ArrayImages(self.images[keep], self.labels[keep])


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedImages:
    """Encoded images (JPEG, PNG, BMP, GIF) read one at a time by `read`.

    Attributes:
        keys: array `(N,)`. What `read` takes: file paths (str) or record numbers (int).
        labels: int array `(N,)`.
        read: callable. Scalar key tensor -> scalar string tensor of the encoded image.
            Defaults to `tf.io.read_file` (keys are file paths).
        describe: callable. Key -> the name used in logs. Defaults to `str`.
    """

    keys: np.ndarray
    labels: np.ndarray
    read: Callable = tf.io.read_file
    describe: Callable = str

    def subset(self, keep):
        return dataclasses.replace(self, keys=self.keys[keep], labels=self.labels[keep])
