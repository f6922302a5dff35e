"""Directories that appear whole or not at all."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(final_dir):
    """Yields a temporary sibling of `final_dir`, renamed to `final_dir` on success.

    A reader (TF Serving watching a model's base directory, a search loading an index)
    never sees a half-written directory: on any exception, interruption included, the
    temporary directory is removed and `final_dir` is left untouched.

    Args:
        final_dir: str or `Path`. Must not exist yet; its parent is created if missing.

    Example:

    ```python
    with atomic_directory("saved_models/emoji_styles/ensemble/3") as partial:
        tf.saved_model.save(module, str(partial))
    ```
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}-partial-", dir=final_dir.parent))
    try:
        yield partial
        # mkdtemp makes the directory 0700; a model server may run as another user.
        os.chmod(partial, 0o755)
        os.rename(partial, final_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
