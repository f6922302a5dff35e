"""`python main.py search IMAGE...`: embed image files with an exported SavedModel and
find their nearest images in the exported gallery index."""

from pathlib import Path

import numpy as np
import tensorflow as tf

from dmml_tf.data.pipeline import evaluation_transform
from dmml_tf.errors import DataError
from dmml_tf.export import BYTES_SIGNATURE_KEY, next_version
from dmml_tf.retrieval.gallery import shrink
from dmml_tf.retrieval.index import GalleryIndex
from dmml_tf.retrieval.plots import plot_retrieval


def load_latest_index(gallery_root):
    """The highest version of the gallery index under `gallery_root`, and its metadata."""
    gallery_root = Path(gallery_root)
    version = next_version(gallery_root) - 1 if gallery_root.is_dir() else 0
    if version < 1:
        raise DataError(f"No gallery index in {gallery_root}: write one with "
                        "`python main.py export`.")
    return GalleryIndex.load(gallery_root / str(version))


def embed_files(serve_bytes, image_paths):
    """Unit embeddings `(len(image_paths), d)` of image files, through `serve_bytes`."""
    embeddings = []
    for path in image_paths:
        if not Path(path).is_file():
            raise DataError(f"Query image not found. Received: {path}")
        try:
            served = serve_bytes(image_bytes=tf.constant([Path(path).read_bytes()]))
        except tf.errors.InvalidArgumentError:
            raise DataError("A query must be a JPEG, PNG, GIF or BMP image that decodes. "
                            f"Received: {path}") from None
        embeddings.append(served["embeddings"].numpy()[0])
    return np.stack(embeddings)


def search_images(image_paths, gallery_root, config, picture_path, log=print):
    """Prints the `export.search_k` nearest gallery images of each image file, with their
    Euclidean distances, and draws them.

    Args:
        image_paths: sequence of str or `Path`. The query image files.
        gallery_root: str or `Path`. `<export.directory>/<dataset>/gallery`.
        config: `Config`. `export.search_k`, `data.image_size`, `data.resize_size`.
        picture_path: str or `Path`. The PNG file to write.
        log: callable taking one str. Defaults to `print`.

    Returns:
        Tuple `(indices, distances)`: arrays `(len(image_paths), k)` into the gallery.
    """
    if not image_paths:
        raise DataError("`search` needs query image files: python main.py search IMAGE... "
                        "Received: no image")
    index, metadata = load_latest_index(gallery_root)
    serve = tf.saved_model.load(metadata["saved_model"]).signatures[BYTES_SIGNATURE_KEY]
    queries = embed_files(serve, image_paths)
    k = min(config.export.search_k, len(index))
    indices, scores = index.search(queries, k)
    distances = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * scores))
    names = [index.class_names[label] for label in index.labels[indices.ravel()]]
    names = np.array(names, dtype=object).reshape(indices.shape)
    log(f"gallery: {len(index)} {metadata['split']} images of {metadata['dataset']}, "
        f"embedded by {metadata['network']} ({metadata['saved_model']})")
    for path, rows in zip(image_paths, zip(indices, distances, names)):
        log(f"\n{path}")
        for rank, (item, distance, name) in enumerate(zip(*rows), start=1):
            log(f"  {rank:>2}. distance {distance:.4f}  {name:<28} {index.references[item]}")

    size = index.thumbnails.shape[1]
    query_pictures = np.stack([_thumbnail(path, config.data, size) for path in image_paths])
    plot_retrieval(query_pictures, index.thumbnails[indices.ravel()].reshape(
                       *indices.shape, *index.thumbnails.shape[1:]),
                   picture_path, query_titles=[Path(p).name[:18] for p in image_paths],
                   neighbor_titles=[[f"{str(n)[:16]}\nd={d:.2f}" for n, d in zip(*row)]
                                    for row in zip(names, distances)],
                   title=f"nearest {metadata['split']} images by {metadata['network']}")
    log(f"\npicture: {picture_path}")
    return indices, distances


def _thumbnail(path, data_config, size):
    image = evaluation_transform(tf.constant(Path(path).read_bytes()), data_config.image_size,
                                 data_config.resize_size)
    return shrink(image[None], size)[0]
