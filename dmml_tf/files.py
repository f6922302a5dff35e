"""Directories that appear whole or not at all, and directories one process at a time."""

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
from pathlib import Path

from dmml_tf.errors import InUseError

LOCK_FILE = ".lock"


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


@contextlib.contextmanager
def directory_lock(directory, wait=False):
    """Holds an exclusive lock on `directory` (through its `.lock` file) while the block runs.

    The operating system drops the lock when its process ends, killed or not, so a lock is
    never left stuck; the file keeps the holder's process id and command for the message
    another process gets.

    Args:
        directory: str or `Path`. Created if missing.
        wait: bool. Wait for the holder to finish instead of raising. Defaults to `False`.

    Raises:
        InUseError: another process holds the lock and `wait` is off.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            raise InUseError(f"{directory} is in use by {holder}: one run per directory. Wait "
                             "for it to finish or stop it, or give this run another "
                             "run_directory.") from None
        file.truncate(0)
        file.write(f"process {os.getpid()} ({' '.join(sys.argv)[:200]})\n")
        file.flush()
        try:
            yield
        finally:
            file.truncate(0)  # the lock itself goes with the file's closing
