"""Dataset registry: config name -> train and test images of disjoint classes."""

import dataclasses

import numpy as np

from dmml_tf.data.emoji_styles import load_emoji_styles
from dmml_tf.data.split import split_classes
from dmml_tf.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class RetrievalSplits:
    """Training and test images whose classes never overlap.

    Attributes:
        name: str. Dataset name.
        train_images, test_images: uint8 arrays `(N, H, W, 3)`.
        train_labels, test_labels: int arrays `(N,)`, indices into `class_names`.
        class_names: tuple of str.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple

    def summary(self):
        return (f"{self.name}: {len(self.train_labels)} training images of "
                f"{len(np.unique(self.train_labels))} classes, {len(self.test_labels)} test "
                f"images of {len(np.unique(self.test_labels))} other classes")


def emoji_styles(data_config, seed):
    data = load_emoji_styles(data_config.image_size, max_classes=data_config.max_classes or None)
    train_classes, test_classes = split_classes(data.class_groups, data_config.test_fraction, seed)
    train = np.isin(data.labels, train_classes)
    test = np.isin(data.labels, test_classes)
    return RetrievalSplits("emoji_styles", data.images[train], data.labels[train],
                           data.images[test], data.labels[test], data.class_names)


DATASETS = {"emoji_styles": emoji_styles}


def load_dataset(data_config, seed):
    """Load `data_config.dataset` and split it into disjoint train and test classes."""
    if data_config.dataset not in DATASETS:
        raise ConfigError(f"Unknown dataset `data.dataset`. Known: {', '.join(DATASETS)}. "
                          f"Received: data.dataset={data_config.dataset!r}")
    return DATASETS[data_config.dataset](data_config, seed)
