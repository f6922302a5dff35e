import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmml_tf.data.sampler import class_balanced_dataset
from dmml_tf.errors import ConfigError
from dmml_tf.models.backbones import tiny_cnn
from dmml_tf.models.embedder import build_embedder
from dmml_tf.retrieval.evaluate import embed, retrieval_metrics
from dmml_tf.training.callbacks import ExportBest, RetrievalEvaluation
from dmml_tf.training.dm2 import DM2Model

SIZE = 32


def coloured_classes(num_classes, per_class, seed):
    """Each class a flat colour of its own plus pixel noise, so retrieval can succeed."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (num_classes, 3))
    labels = np.repeat(np.arange(num_classes), per_class)
    noise = rng.normal(0, 30, (len(labels), SIZE, SIZE, 3))
    images = np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels


def make_model():
    keras.utils.set_random_seed(0)
    members = [build_embedder(tiny_cnn((SIZE, SIZE, 3), seed=s), 8, seed=s, name=f"member{s}")
               for s in range(2)]
    model = DM2Model(members, relational_weight=1.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


@pytest.fixture(scope="module")
def data():
    train_images, train_labels = coloured_classes(6, 4, seed=0)
    test_images, test_labels = coloured_classes(5, 4, seed=1)
    return class_balanced_dataset(train_images, train_labels, 3, 4, seed=0), test_images, test_labels


def test_evaluation_every_two_epochs_fills_logs_history_and_best(data):
    dataset, test_images, test_labels = data
    model = make_model()
    lines = []
    evaluation = RetrievalEvaluation(test_images, test_labels, every_epochs=2,
                                     recall_at=(1, 2), log=lines.append)
    history = model.fit(dataset, epochs=4, steps_per_epoch=2, callbacks=[evaluation],
                        verbose=0)

    assert [entry["epoch"] for entry in evaluation.history] == [2, 4]
    names = ["member0", "member1", "shadow0", "shadow1", "ensemble", "shadow_ensemble"]
    assert list(evaluation.history[-1]["results"]) == names
    # Keras' History saw the metrics of both evaluated epochs.
    recorded = history.history["ensemble/recall@1"]
    assert recorded == [entry["results"]["ensemble"]["recall@1"]
                        for entry in evaluation.history]
    assert "member0/recall@1" in history.history and "ensemble/map@r" not in history.history
    assert evaluation.best == max(recorded)
    assert evaluation.best_epoch == 2 + 2 * recorded.index(max(recorded))
    assert len(lines) == 2 and "ensemble/recall@1" in lines[-1]
    # Its wall time is the sum of the two evaluations' that the log lines report.
    reported = [float(line.split("(")[1].split(" s)")[0]) for line in lines]
    assert evaluation.seconds > 0 and abs(evaluation.seconds - sum(reported)) <= 1.0

    # The last evaluation is what a direct evaluation of the trained networks gives.
    networks = model.networks()
    for name in ("member1", "shadow_ensemble"):
        direct = retrieval_metrics(embed(networks[name], test_images, 256), test_labels,
                                   (1, 2))
        for metric, value in direct.items():
            assert evaluation.history[-1]["results"][name][metric] == pytest.approx(
                value, abs=1e-6), (name, metric)


def test_resume_keeps_the_history_and_best_of_the_epochs_trained_before(data, tmp_path):
    _, test_images, test_labels = data
    path = tmp_path / "evaluation_history.json"
    values = [0.5, 0.7, 0.7, 0.9]  # epoch 4 came after the checkpoint: it is trained again
    path.write_text(json.dumps([{"epoch": epoch, "results": {"ensemble": {"recall@1": value}}}
                                for epoch, value in enumerate(values, 1)]))
    evaluation = RetrievalEvaluation(test_images, test_labels, history_path=path)
    evaluation.resume(3)
    assert [entry["epoch"] for entry in evaluation.history] == [1, 2, 3]
    assert (evaluation.best, evaluation.best_epoch) == (0.7, 2)  # a tie keeps the earlier epoch
    assert evaluation.best_evaluation is None  # its embeddings were not kept


def test_an_unknown_monitor_is_a_config_error(data):
    _, test_images, test_labels = data
    evaluation = RetrievalEvaluation(test_images, test_labels, every_epochs=1,
                                     monitor="ensemble/recall@3", recall_at=(1, 2),
                                     log=lambda line: None)
    evaluation.set_model(make_model())  # an epoch's end, without tracing a training step
    with pytest.raises(ConfigError, match="Received: monitor='ensemble/recall@3'"):
        evaluation.on_epoch_end(0, {})


def test_export_best_writes_a_version_only_on_improvement(data, tmp_path):
    _, test_images, _ = data
    model = make_model()
    lines = []
    export = ExportBest(tmp_path / "ensemble", metadata={"run": "test"}, log=lines.append)
    export.set_model(model)
    for epoch, logs in enumerate([{"loss": 1.0}, {"ensemble/recall@1": 0.4},
                                  {"ensemble/recall@1": 0.3}, {"ensemble/recall@1": 0.6},
                                  {"ensemble/recall@1": 0.6}]):
        export.on_epoch_end(epoch, logs)

    assert [path.name for path in export.exported] == ["1", "2"]
    assert export.best == 0.6
    metadata = json.loads((export.exported[-1] / "assets.extra/dmml.json").read_text())
    assert metadata == {"run": "test", "epoch": 4, "ensemble/recall@1": 0.6}
    serve = tf.saved_model.load(str(export.exported[-1])).signatures["serving_default"]
    served = serve(images=tf.constant(test_images[:3], tf.float32))["embeddings"].numpy()
    expected = model.networks()["ensemble"].predict(test_images[:3].astype("float32"),
                                                    verbose=0)
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_export_best_says_when_nothing_was_monitored(tmp_path):
    lines = []
    export = ExportBest(tmp_path, log=lines.append)
    export.set_model(make_model())
    export.on_epoch_end(0, {"loss": 1.0})
    export.on_train_end()
    assert export.exported == [] and "put a RetrievalEvaluation before" in lines[-1]


def test_unknown_network_is_a_config_error(tmp_path):
    export = ExportBest(tmp_path, network="member7", log=lambda line: None)
    export.set_model(make_model())
    with pytest.raises(ConfigError, match="Received: network='member7'"):
        export.on_epoch_end(0, {"ensemble/recall@1": 0.5})


def readme_example():
    """The Python block after the `callbacks-example` marker in docs/keras.md."""
    readme = (Path(__file__).resolve().parents[2] / "docs" / "keras.md").read_text()
    after_marker = readme.split("<!-- callbacks-example -->", 1)[1]
    return after_marker.split("```python\n", 1)[1].split("\n```", 1)[0]


@pytest.mark.slow
def test_readme_callbacks_example_runs(tmp_path):
    completed = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path,
                               capture_output=True, text=True, timeout=600,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                                    "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "best ensemble MAP@R" in completed.stdout
    assert (tmp_path / "saved_models/mine/ensemble/1/saved_model.pb").is_file()


def test_evaluation_with_a_separate_gallery_matches_the_metrics_of_its_embeddings(data):
    dataset, test_images, test_labels = data
    # Other colours under the same labels: retrieval from this gallery mostly fails, so
    # its metrics differ from leave-one-out over the queries.
    gallery_images, gallery_labels = coloured_classes(5, 6, seed=2)
    model = make_model()
    evaluation = RetrievalEvaluation(test_images, test_labels, every_epochs=1, recall_at=(1, 2),
                                     backend="exact", gallery=(gallery_images, gallery_labels),
                                     log=lambda line: None)
    model.fit(dataset, epochs=1, steps_per_epoch=1, callbacks=[evaluation], verbose=0)
    member = model.members[0]
    queries, gallery = embed(member, test_images, 64), embed(member, gallery_images, 64)
    expected = retrieval_metrics(queries, test_labels, (1, 2), backend="exact",
                                 gallery=(gallery, gallery_labels))
    leave_one_out = retrieval_metrics(queries, test_labels, (1, 2), backend="exact")
    results = evaluation.history[0]["results"]["member0"]
    for name, value in expected.items():
        assert results[name] == pytest.approx(value, abs=1e-6), name
    assert results != pytest.approx(leave_one_out)  # the gallery was searched, not the queries
