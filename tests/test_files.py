import pytest

from dmml_tf.files import atomic_directory


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
