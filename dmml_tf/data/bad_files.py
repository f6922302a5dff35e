"""Find images that cannot be decoded, so that they are skipped before training starts.

Every image is decoded once with the same decoder the input pipeline uses (in parallel,
in tf.data), so a run never stops on a zero-byte file, a truncated JPEG or a text file
named `.jpg`.
"""

import contextlib
import os
import sys
import time

import numpy as np
import tensorflow as tf

from dmml_tf.data.pipeline import AUTOTUNE, decode_rgb

# Leading bytes of the formats `decode_rgb` reads.
SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


@contextlib.contextmanager
def _native_stderr_silenced():
    """Hide what TensorFlow's C++ decoders print (e.g. "Premature end of JPEG data")
    while bad files are being looked for; the files are listed by `find_bad_files`."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def decodable(source):
    """Boolean array: which images of `source` (`EncodedImages`) decode."""
    def check(position, key):
        return position, tf.shape(decode_rgb(source.read(key)))

    checks = (tf.data.Dataset.from_tensor_slices(source.keys).enumerate()
              .map(check, AUTOTUNE).ignore_errors())
    ok = np.zeros(len(source.keys), dtype=bool)
    with _native_stderr_silenced():
        for position, _ in checks.as_numpy_iterator():
            ok[position] = True
    return ok


def why_bad(source, key):
    """A short reason why the image at `key` does not decode."""
    try:
        data = source.read(tf.constant(key)).numpy()
    except (tf.errors.OpError, OSError):
        return "cannot be read"
    if not data:
        return "empty file"
    if not data.startswith(SIGNATURES):
        return "not a JPEG, PNG, BMP or GIF image"
    return "truncated or corrupt"


def find_bad_files(source, log=print):
    """Which images of `source` decode, and one line per image that does not.

    Logs how many images were checked and, once, every skipped image with its reason.

    Args:
        source: `EncodedImages`.
        log: callable taking one str. Defaults to `print`.

    Returns:
        `(ok, skipped)`: a bool array, True for the decodable images, and a list of str
        `"<name>: <reason>"` for the others.
    """
    started = time.time()
    ok = decodable(source)
    skipped = [f"{source.describe(key)}: {why_bad(source, key)}" for key in source.keys[~ok]]
    log(f"      checked {len(ok)} images in {time.time() - started:.1f} s; "
        f"{len(skipped)} cannot be decoded" + (" and are skipped:" if skipped else ""))
    for line in skipped:
        log(f"        {line}")
    return ok, skipped
