"""The two routes to a published dataset on disk: its official extracted layout, or the
TFDS builder run offline on its archives (the builder's `manual_dir`).

Nothing is downloaded: TFDS reads the archives from the dataset folder, checks them
against the checksums it registers, and writes ArrayRecord files to `<folder>/tfds`, which
allow reading one record at a time.
"""

import re
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from dmml_tf.data.sources import EncodedImages
from dmml_tf.errors import DataError


def missing_files(folder, files):
    """The entries of `files` (relative paths) that `folder` lacks."""
    return [name for name in files if not (Path(folder) / name).exists()]


def pick_source(name, folder, source, official_layouts, tfds_files, help_text):
    """`("official", files)` or `("tfds", files)`: the route `source` asks for and `folder` has.

    Args:
        name: str. Dataset name, for messages.
        folder: Path. The dataset folder.
        source: str. `auto` (official layout if complete, else TFDS), `official` or `tfds`.
        official_layouts: list of tuples of relative paths, one tuple per official layout.
        tfds_files: tuple of str. The archives the TFDS builder reads from its manual dir.
        help_text: str. What to obtain and where to put it.
    """
    if source in ("auto", "official"):
        for layout in official_layouts:
            if not missing_files(folder, layout):
                return "official", layout
    if source in ("auto", "tfds") and not missing_files(folder, tfds_files):
        return "tfds", tfds_files
    raise DataError(f"{name}: no {'' if source == 'auto' else source + ' '}data in {folder} "
                    f"(data.source={source}). {help_text}")


def prepare(builder_name, folder, log=print):
    """The TFDS builder `builder_name`, prepared from the archives in `folder`.

    The first call extracts and converts the archives (minutes for the full datasets)
    into `<folder>/tfds`; later calls reuse that.
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    data_dir = Path(folder) / "tfds"
    builder = tfds.builder(builder_name, data_dir=str(data_dir), file_format="array_record")
    if not builder.is_prepared():
        log(f"      preparing TFDS {builder_name} from the archives in {folder} (once)")
        config = tfds.download.DownloadConfig(manual_dir=str(folder), try_download_gcs=False)
        try:
            builder.download_and_prepare(download_dir=str(data_dir / "downloads"),
                                         download_config=config)
        except NonMatchingChecksumError as error:
            found = re.search(r"downloaded to (.+?), has wrong checksum", str(error))
            archive = found.group(1) if found else f"an archive in {folder}"
            raise DataError(f"{builder_name}: {archive} is not the published file (its checksum "
                            "differs from the one TFDS registers); obtain it again, or use the "
                            "extracted layout (data.source=official).") from None
        shutil.rmtree(data_dir / "downloads", ignore_errors=True)  # extracted copies
    return builder


def read_records(builder, fields, chunk=512):
    """Every `train+test` record of a prepared builder, read one at a time on demand.

    Args:
        builder: a prepared TFDS builder with an `image` feature.
        fields: sequence of str. Features to return for every record besides `label`
            (never images).
        chunk: int. Records read at once while collecting `fields`. Defaults to `512`.

    Returns:
        `(images, values)`: an `EncodedImages` keyed by record number whose `read` returns
        the stored (encoded) image, and `{field: array}` over the records.
    """
    import tensorflow_datasets as tfds

    skip = {name: tfds.decode.SkipDecoding() for name, feature in builder.info.features.items()
            if isinstance(feature, tfds.features.Image)}
    records = builder.as_data_source(split="train+test", decoders=skip)
    values = {field: [] for field in ("label", *fields)}
    for start in range(0, len(records), chunk):
        for record in records.__getitems__(range(start, min(start + chunk, len(records)))):
            for field in values:
                values[field].append(record[field])

    def read(key):
        encoded = tf.py_function(lambda k: records[int(k)]["image"], [key], tf.string)
        return tf.ensure_shape(encoded, [])

    images = EncodedImages(np.arange(len(records), dtype=np.int64), np.asarray(values["label"]),
                           read, describe=lambda key: f"{builder.name} record {key}")
    return images, {field: np.asarray(v) for field, v in values.items()}
