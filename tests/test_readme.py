"""The README's "Using dmml_tf from your own Keras code" examples run as printed."""

import os
import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example():
    section = README.read_text().split("## Using dmml_tf from your own Keras code", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def readme_loss_example():
    """The block after the `loss-example` marker; it continues the first example."""
    after_marker = README.read_text().split("<!-- loss-example -->", 1)[1]
    return after_marker.split("```python\n", 1)[1].split("\n```", 1)[0]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The two examples, run one after the other in a fresh folder: `(folder, namespace)`."""
    folder, namespace = tmp_path_factory.mktemp("readme"), {}
    previous = os.getcwd()
    os.chdir(folder)
    try:
        exec(compile(readme_example(), "README.md", "exec"), namespace)
        exec(compile(readme_loss_example(), "README.md", "exec"), namespace)
    finally:
        os.chdir(previous)
    return folder, namespace


def test_keras_api_example_trains_and_evaluates(ran):
    folder, namespace = ran
    history = namespace["history"].history
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
    assert {"member0_triplet", "member1_relational", "ensemble/recall@1"} <= set(history)
    # Unseen classes of noisy patterns: well above the 1-in-20 chance of a random neighbour.
    assert history["ensemble/recall@1"][-1] > 0.5
    embeddings = np.asarray(namespace["embeddings"])
    assert embeddings.shape == (200, 64)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    assert list((folder / "logs/train").glob("events.out.tfevents.*"))


def test_a_metric_loss_trains_one_embedder_in_a_plain_fit(ran):
    losses = ran[1]["single"].history["loss"]
    assert len(losses) == 2 and all(np.isfinite(losses)) and losses[-1] < losses[0]
