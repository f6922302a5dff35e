"""Dataset registry: config name -> train and test images of disjoint classes.

    emoji_styles    the embedded default, decoded in memory
    icon_concepts   embedded: icon names drawn by many icon sets, decoded in memory
    cub200          CUB-200-2011: classes 1-100 train, 101-200 test
    cars196         CARS-196: classes 1-98 train, 99-196 test
    folder:PATH     the user's images, one subfolder per class

Every dataset but `emoji_styles` and `icon_concepts` is streamed from encoded images;
undecodable files are skipped and listed once.
"""

import dataclasses
import os
from pathlib import Path

import numpy as np

from dmml_tf.config import DataConfig
from dmml_tf.data import cars196, cub200
from dmml_tf.data.bad_files import find_bad_files
from dmml_tf.data.emoji_styles import load_emoji_styles
from dmml_tf.data.icon_concepts import load_icon_concepts
from dmml_tf.data.image_folder import read_image_folder
from dmml_tf.data.pipeline import evaluation_images, training_dataset
from dmml_tf.data.sources import ArrayImages
from dmml_tf.data.split import split_classes
from dmml_tf.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True, eq=False)
class RetrievalSplits:
    """Training and test images whose classes never overlap.

    Attributes:
        name: str. Dataset name.
        train, test: `ArrayImages` or `EncodedImages`.
        class_names: tuple of str; labels index it.
        data_config: `DataConfig`. Sizes and crops of the input pipeline.
        evaluate_batch_size: int. Batch size of the streamed test images. Defaults to `256`.
        skipped: tuple of str. Files and class folders left out, with the reason.
        class_groups: tuple of str or None. Per class, a group that a split must not
            divide (emoji skin-tone variants); `None`: every class is its own group.
    """

    name: str
    train: object
    test: object
    class_names: tuple
    data_config: DataConfig = DataConfig()
    evaluate_batch_size: int = 256
    skipped: tuple = ()
    class_groups: tuple | None = None

    @property
    def train_labels(self):
        return self.train.labels

    @property
    def test_labels(self):
        return self.test.labels

    @property
    def test_images(self):
        """The test images for `embed`: an array, or a batched stream in label order."""
        return evaluation_images(self.test, self.data_config, self.evaluate_batch_size)

    def training_dataset(self, seed, replicas=1, start=0):
        """Endless P x K `(images, labels)` batches from batch `start` on; see
        `dmml_tf.data.pipeline`."""
        return training_dataset(self.train, self.data_config, seed, replicas, start)

    def summary(self):
        return (f"{self.name}: {len(self.train_labels)} training images of "
                f"{len(np.unique(self.train_labels))} classes, {len(self.test_labels)} test "
                f"images of {len(np.unique(self.test_labels))} other classes")


def dataset_folder(data_config, name):
    """`data.data_dir`, else `$DMML_DATA_DIR/<name>`, else `~/.cache/dmml_tf/<name>`."""
    if data_config.data_dir:
        return Path(data_config.data_dir).expanduser()
    return Path(os.environ.get("DMML_DATA_DIR") or "~/.cache/dmml_tf").expanduser() / name


def evenly_spaced(classes, count):
    """`count` of the sorted `classes`, spread evenly (all of them if `count` is 0)."""
    if not count or count >= len(classes):
        return classes
    return classes[np.linspace(0, len(classes) - 1, count).round().astype(int)]


def split_encoded(name, images, class_names, in_train, data_config, seed, evaluate_batch_size,
                  notes=(), log=print):
    """Skip undecodable images, keep `max_classes`, split into train and test.

    `in_train` marks the training images of a fixed split; `None` draws a class-disjoint
    split with `data_config.test_fraction` and `seed`.
    """
    ok, bad = find_bad_files(images, log)
    images = images.subset(ok)
    classes = evenly_spaced(np.unique(images.labels), data_config.max_classes)
    if in_train is None:
        train_ids = split_classes([class_names[c] for c in classes], data_config.test_fraction,
                                  seed)[0] if len(classes) > 1 else []
        in_train = np.isin(images.labels, classes[train_ids])
    else:
        in_train = np.asarray(in_train)[ok]
    kept = np.isin(images.labels, classes)
    train, test = images.subset(kept & in_train), images.subset(kept & ~in_train)
    if len(np.unique(train.labels)) < 2 or len(test.labels) < 2:
        raise DataError(f"{name}: after skipping unreadable files, training needs images of at "
                        "least 2 classes and test at least 2 images. Received: "
                        f"{len(np.unique(train.labels))} training classes, {len(test.labels)} "
                        "test images")
    return RetrievalSplits(name, train, test, class_names, data_config, evaluate_batch_size,
                           tuple(notes) + tuple(bad))


def split_in_memory(name, data, class_groups, data_config, seed, evaluate_batch_size):
    """An embedded dataset's seeded class-disjoint halves (`data.test_fraction`), a group
    of classes never divided (`class_groups` None: every class is its own group)."""
    train_classes, test_classes = split_classes(class_groups or data.class_names,
                                                data_config.test_fraction, seed)
    everything = ArrayImages(data.images, data.labels)
    return RetrievalSplits(name, everything.subset(np.isin(data.labels, train_classes)),
                           everything.subset(np.isin(data.labels, test_classes)),
                           data.class_names, data_config, evaluate_batch_size,
                           class_groups=class_groups)


def emoji_styles(data_config, seed, evaluate_batch_size, argument, log):
    data = load_emoji_styles(data_config.image_size, max_classes=data_config.max_classes or None)
    return split_in_memory("emoji_styles", data, data.class_groups, data_config, seed,
                           evaluate_batch_size)


def icon_concepts(data_config, seed, evaluate_batch_size, argument, log):
    data = load_icon_concepts(data_config.image_size, max_classes=data_config.max_classes or None)
    return split_in_memory("icon_concepts", data, None, data_config, seed,
                           evaluate_batch_size)


def image_folder(data_config, seed, evaluate_batch_size, argument, log):
    images, class_names, in_train, notes = read_image_folder(argument)
    for note in notes:
        log(f"      {note}")
    return split_encoded(f"folder:{argument}", images, class_names, in_train, data_config, seed,
                         evaluate_batch_size, notes, log)


def fixed_split(module):
    """A loader for a dataset module with `load(folder, source)` and `TRAIN_CLASSES`."""
    def load(data_config, seed, evaluate_batch_size, argument, log):
        folder = dataset_folder(data_config, module.NAME)
        images, class_names = module.load(folder, data_config.source, log)
        return split_encoded(module.NAME, images, class_names,
                             images.labels < module.TRAIN_CLASSES, data_config, seed,
                             evaluate_batch_size, log=log)
    return load


DATASETS = {
    "emoji_styles": emoji_styles,
    "icon_concepts": icon_concepts,
    "cub200": fixed_split(cub200),
    "cars196": fixed_split(cars196),
    "folder": image_folder,
}


def load_dataset(data_config, seed, evaluate_batch_size=256, log=print):
    """Load `data_config.dataset` and split it into disjoint train and test classes.

    Args:
        data_config: `DataConfig`.
        seed: int. Seeds the class split where a dataset has no fixed one.
        evaluate_batch_size: int. Batch size of streamed test images. Defaults to `256`.
        log: callable taking one str. Defaults to `print`.

    Returns:
        A `RetrievalSplits`.
    """
    kind, colon, argument = data_config.dataset.partition(":")
    if kind not in DATASETS or bool(colon) != (kind == "folder") or (colon and not argument):
        raise ConfigError(f"Unknown dataset `data.dataset`. Known: emoji_styles, icon_concepts, "
                          f"cub200, cars196, folder:PATH. Received: "
                          f"data.dataset={data_config.dataset!r}")
    splits = DATASETS[kind](data_config, seed, evaluate_batch_size, argument, log)
    return hold_out_validation(splits, seed) if data_config.split == "validation" else splits


def hold_out_validation(splits, seed):
    """Replace the test split by `validation_fraction` of the training classes, so that
    settings can be chosen without looking at the test classes."""
    classes = np.unique(splits.train.labels)
    groups = splits.class_groups or splits.class_names
    train_ids, validation_ids = split_classes([groups[c] for c in classes],
                                              splits.data_config.validation_fraction, seed + 1)
    labels = splits.train.labels
    return dataclasses.replace(
        splits, name=f"{splits.name} (validation classes)",
        train=splits.train.subset(np.isin(labels, classes[train_ids])),
        test=splits.train.subset(np.isin(labels, classes[validation_ids])))
