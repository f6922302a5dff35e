"""The README's "Using dmml_tf from your own Keras code" example runs as printed."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example():
    section = README.read_text().split("## Using dmml_tf from your own Keras code", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_keras_api_example_trains_and_evaluates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    history = namespace["history"].history
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
    assert {"member0_triplet", "member1_relational", "ensemble/recall@1"} <= set(history)
    # Unseen classes of noisy patterns: well above the 1-in-20 chance of a random neighbour.
    assert history["ensemble/recall@1"][-1] > 0.5
    embeddings = np.asarray(namespace["embeddings"])
    assert embeddings.shape == (200, 64)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    assert list((tmp_path / "logs/train").glob("events.out.tfevents.*"))
