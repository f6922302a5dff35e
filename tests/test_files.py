import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dmml_tf.errors import InUseError
from dmml_tf.files import atomic_directory, directory_lock

ROOT = Path(__file__).resolve().parents[1]


def test_directory_appears_whole_with_readable_permissions(tmp_path):
    with atomic_directory(tmp_path / "models" / "3") as partial:
        (partial / "saved_model.pb").write_text("model")
        assert not (tmp_path / "models" / "3").exists()  # not visible while written
    assert (tmp_path / "models" / "3" / "saved_model.pb").read_text() == "model"
    assert (tmp_path / "models" / "3").stat().st_mode & 0o777 == 0o755
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["3"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_interrupted_write_leaves_nothing(tmp_path, error):
    with pytest.raises(error):
        with atomic_directory(tmp_path / "index") as partial:
            (partial / "half").write_text("x")
            raise error
    assert list(tmp_path.iterdir()) == []


def hold_lock(directory):
    """A second process that takes the lock on `directory` and keeps it until killed."""
    code = ("import sys, time; from dmml_tf.files import directory_lock\n"
            "with directory_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(directory)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


@pytest.mark.slow
def test_a_directory_in_use_is_refused_with_its_holder_until_the_holder_is_killed(tmp_path):
    holder = hold_lock(tmp_path / "run")
    try:
        with pytest.raises(InUseError, match=rf"{tmp_path / 'run'} is in use by process {holder.pid} "):
            with directory_lock(tmp_path / "run"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with directory_lock(tmp_path / "run"):  # a killed holder leaves no stuck lock
        assert f"process {os.getpid()}" in (tmp_path / "run" / ".lock").read_text()


@pytest.mark.slow
def test_a_waiting_lock_gets_the_directory_when_the_holder_ends(tmp_path):
    holder = hold_lock(tmp_path / "model")
    threading.Timer(1.0, holder.kill).start()
    started = time.monotonic()
    with directory_lock(tmp_path / "model", wait=True):
        assert time.monotonic() - started >= 0.9
    holder.wait()
