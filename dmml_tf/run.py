"""The library's runner: build data -> build cohort -> fit -> evaluate -> export.

`train(config)` is the whole run that `python main.py` (and `dmml-tf`) makes;
`evaluate_run`, `export_run` and `search_run` work from a finished run directory.
benchmarks/ call these functions in-process. Each phase prints one numbered line.

    from dmml_tf.config import load_config
    from dmml_tf.run import train
    metrics = train(load_config("configs/emoji_styles.yaml", ["train.epochs=1"]))
"""

import json
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from dmml_tf.config import config_to_dict, load_config, save_config
from dmml_tf.data.registry import load_dataset
from dmml_tf.data.sampler import steps_per_epoch
from dmml_tf.data.views import check_views
from dmml_tf.errors import ConfigError, WeightsError
from dmml_tf.export import export_embedder
from dmml_tf.files import directory_lock
from dmml_tf.retrieval.evaluate import (embed_networks, evaluate_embeddings, results_table,
                                       terminal_progress)
from dmml_tf.retrieval.gallery import build_gallery_index, retrieval_grid
from dmml_tf.retrieval.plots import plot_metric_per_epoch
from dmml_tf.retrieval.query import search_images
from dmml_tf.training.callbacks import RetrievalEvaluation, evaluated_networks
from dmml_tf.training.checkpoints import (NonFiniteLossGuard, ResumableCheckpoint, StepTensorBoard,
                                          optimizer_step, resume_fits)
from dmml_tf.training.cohort import build_cohort, restore_cohort
from dmml_tf.training.distribute import (SameStepCheck, build_strategy, distribute_batches,
                                         lost_worker_error, worker_outputs)
from dmml_tf.training.optimizers import LearningRateLogger

EVALUATION_HISTORY = "evaluation_history.json"
INITIAL_RESULTS = "initial.json"
BEST_WEIGHTS = "best.weights.h5"  # evaluate.keep: best


def build_data(config):
    """The dataset's splits (`dmml_tf.data.registry.Splits`)."""
    print(f"[1/4] data: {config.data.dataset} at {config.data.image_size} px")
    splits = load_dataset(config.data, config.seed, config.evaluate.batch_size)
    print(f"      {splits.summary()}")
    return splits


def build_model(config, splits, strategy):
    """The cohort (`DM2Model`), built in `strategy`'s scope."""
    backbones = ", ".join(config.model.backbone_of(m) for m in range(config.cohort.members))
    print(f"[2/4] training a cohort of {config.cohort.members} members ({backbones})")
    with strategy.scope():
        return build_cohort(config, training_steps_per_epoch(config, splits),
                            np.unique(splits.train_labels))


def fit_cohort(config, model, splits, run_directory, strategy):
    """`fit`s the cohort, from the checkpoint that a killed run left if there is one: the
    weights, data stream, random streams, steps and epochs go on where it stopped, so the
    run ends as it would have uninterrupted. The checkpoint is kept: `train` deletes it once
    the run's results are written.

    Returns:
        `(evaluation, checkpoint)`: the `RetrievalEvaluation` callback (its `seconds`: the
        evaluations during `fit`) and the `ResumableCheckpoint`, whose `training_seconds()`
        is the run's training time, before a resume too.
    """
    evaluation = retrieval_evaluation(config, splits, run_directory)
    started = time.time()
    checkpoint = ResumableCheckpoint(
        run_directory / "backup", config.train.checkpoint_every_steps,
        lambda: checkpoint.seconds_before + time.time() - started - evaluation.seconds)
    steps = training_steps_per_epoch(config, splits)
    step = checkpoint.restore(model)
    if step:
        where = (f"epoch {step // steps + 1}" if step < steps * config.train.epochs
                 else "training had finished")
        print(f"      resuming from {checkpoint.directory}: step {step}, {where}")
    evaluation.resume(step // steps)
    evaluation.set_model(model)  # for the evaluation below, even when no `fit` is left
    for initial_epoch, epochs, epoch_steps in resume_fits(step, steps, config.train.epochs):
        # A progress bar within each epoch on a terminal; one line per epoch in logs and CI.
        model.fit(training_batches(config, splits, strategy, optimizer_step(model)),
                  initial_epoch=initial_epoch, epochs=epochs, steps_per_epoch=epoch_steps,
                  callbacks=training_callbacks(config, run_directory, evaluation, checkpoint),
                  shuffle=False, verbose=1 if sys.stdout.isatty() else 2)
    evaluated = [entry["epoch"] for entry in evaluation.history]
    if config.evaluate.keep == "best" and config.train.epochs not in evaluated:
        evaluation.evaluate_epoch(config.train.epochs - 1)  # the last epoch is a candidate too
    return evaluation, checkpoint


def training_steps_per_epoch(config, splits):
    """Steps of one epoch: every training image once, or `train.max_steps_per_epoch`."""
    steps = steps_per_epoch(splits.train_labels, config.data.classes_per_batch,
                            config.data.images_per_class)
    return min(steps, config.train.max_steps_per_epoch or steps)


def training_batches(config, splits, strategy, start):
    """The class-balanced training batches from batch `start` (the optimizer step) on;
    each worker gets its slice of every one."""
    return distribute_batches(
        strategy,
        lambda: splits.training_dataset(config.seed, strategy.num_replicas_in_sync, start),
        config.data.classes_per_batch * config.data.images_per_class)


def training_callbacks(config, run_directory, evaluation, checkpoint):
    """The callbacks of a run's `fit`, in the order they must run."""
    backup = checkpoint.directory  # a killed run resumes from here
    return [
        NonFiniteLossGuard(backup),  # first, so a diverged step is never saved
        evaluation,  # before the loggers of its metrics
        checkpoint,
        SameStepCheck(),  # every worker restored the same step
        LearningRateLogger(),
        StepTensorBoard(str(run_directory / "tensorboard"), update_freq=config.train.log_every_steps),
        keras.callbacks.ModelCheckpoint(str(run_directory / "dm2.weights.h5"), save_weights_only=True),
        keras.callbacks.CSVLogger(str(run_directory / "history.csv"), append=backup.exists()),
    ]


def retrieval_evaluation(config, splits, run_directory):
    """The `RetrievalEvaluation` callback of `fit`: metrics every `evaluate.every_epochs`."""
    settings = config.evaluate
    return RetrievalEvaluation(
        splits.test_images, splits.test_labels, settings.every_epochs, settings.monitor,
        settings.recall_at, settings.backend, settings.exact_below,
        settings.scann_check_queries, settings.batch_size,
        history_path=run_directory / EVALUATION_HISTORY,
        best_weights_path=run_directory / BEST_WEIGHTS if settings.keep == "best" else None)


def keep_weights(config, model, run_directory, evaluation):
    """The epoch whose weights the run reports and exports: the last, or with
    `evaluate.keep: best` the best by `evaluate.monitor`, whose weights `model` gets.
    `evaluation` is the training's `RetrievalEvaluation`."""
    if config.evaluate.keep == "last":
        return config.train.epochs
    load_best_weights(model, run_directory)
    print(f"      keeping epoch {evaluation.best_epoch} of {config.train.epochs}, the best by "
          f"{config.evaluate.monitor} ({evaluation.best:.4f})")
    return evaluation.best_epoch


def load_best_weights(model, run_directory):
    """Loads `best.weights.h5`, the best epoch's weights (`evaluate.keep: best`), into
    `model`."""
    path = run_directory / BEST_WEIGHTS
    if not path.is_file():
        raise WeightsError(f"No best epoch's weights at {path}, which evaluate.keep: best "
                           "needs: the run kept its last epoch; use --set evaluate.keep=last.")
    with warnings.catch_warnings():  # a restored cohort's optimizer state is not needed
        warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
        model.load_weights(str(path))


def restore_kept(config, run_directory, splits):
    """A finished run's cohort with the weights it reports: its last epoch's
    (`dm2.weights.h5`), or with `evaluate.keep: best` its best epoch's."""
    model = restore_cohort(config, run_directory, np.unique(splits.train_labels))
    if config.evaluate.keep == "best":
        load_best_weights(model, run_directory)
    return model


def evaluate(config, model, splits, run_directory, evaluation=None, seconds=None):
    """Every network's metrics on the test split -> metrics.json and results.txt.

    The networks' embeddings come from `evaluation` (the training callback) when it
    evaluated the weights as they are now (its last or its best evaluation), else from one
    pass over the test images; the members' results before training from `initial.json`
    (`initial_results`).

    Args:
        seconds: dict or None. Gets the wall time of each part (`embedding`, then those of
            `retrieval_metrics`) added. Defaults to `None`.

    Returns:
        The results table (str) and `{network: embeddings}`.
    """
    settings = config.evaluate
    networks, ensembles = evaluated_networks(model)
    # The optimizer step names the weights: the kept ones were evaluated at that step.
    step = optimizer_step(model)
    evaluated = [] if evaluation is None else [evaluation.last, evaluation.best_evaluation]
    reused = next((entry for entry in evaluated if entry and entry["step"] == step), None)
    print(f"[3/4] evaluating on {len(splits.test_labels)} test images ({settings.backend}; "
          f"exact below {settings.exact_below:,} images)"
          + ("; the networks' metrics are their evaluation during training" if reused else ""))
    seconds = {} if seconds is None else seconds
    if reused:
        embeddings, results = reused["embeddings"], reused["results"]
    else:
        started = time.perf_counter()
        embeddings = embed_networks(networks, splits.test_images, settings.batch_size,
                                    ensembles, progress=terminal_progress("embedding"))
        seconds["embedding"] = time.perf_counter() - started
        results = evaluate_embeddings(embeddings, splits.test_labels, settings,
                                      log=lambda line: None, seconds=seconds)
    initial = run_directory / INITIAL_RESULTS
    results = {**(json.loads(initial.read_text())["results"] if initial.is_file() else {}),
               **results}
    table = results_table(results)
    metrics_path = run_directory / "metrics.json"
    # Evaluating a finished run again keeps what its training recorded.
    trained = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    recorded = {key: trained[key] for key in ("kept_epoch", "training_steps", "seconds")
                if key in trained}
    metrics_path.write_text(json.dumps({**results, **recorded}, indent=2))
    (run_directory / "results.txt").write_text(table + "\n")
    return table, embeddings


def initial_results(config, model, run_directory, splits, seconds):
    """Metrics of the members and their ensemble at their initial weights (pretrained or
    random), where training starts; computed once per run into `initial.json`, which a
    resumed run reuses. Their parts' wall time is added to `seconds`."""
    cache = run_directory / INITIAL_RESULTS
    key = {"data": config_to_dict(config.data), "seed": config.seed,
           "evaluate": config_to_dict(config.evaluate), "model": config_to_dict(config.model),
           "own_seeds": config.cohort.own_seeds}
    if cache.is_file() and json.loads(cache.read_text())["key"] == key:
        return
    networks = {f"member{m}": member for m, member in enumerate(model.members)}
    networks["ensemble"] = model.networks()["ensemble"]
    started = time.perf_counter()
    embeddings = embed_networks(networks, splits.test_images, config.evaluate.batch_size,
                                {"ensemble": [name for name in networks if name != "ensemble"]})
    seconds["embedding"] = seconds.get("embedding", 0.0) + time.perf_counter() - started
    results = evaluate_embeddings(embeddings, splits.test_labels, config.evaluate,
                                  log=lambda line: None, seconds=seconds)
    results = {f"{name} before training": values for name, values in results.items()}
    cache.write_text(json.dumps({"key": key, "results": results}, indent=1))
    print("      before training: " + ", ".join(
        f"{name.split()[0]} recall@{min(config.evaluate.recall_at)} "
        f"{values[f'recall@{min(config.evaluate.recall_at)}']:.4f}" for name, values in results.items()))


def pictures(config, splits, run_directory, embeddings):
    """retrieval_grid.png of the monitored network and recall_per_epoch.png."""
    settings = config.evaluate
    network = settings.monitor.partition("/")[0]
    retrieval_grid(embeddings[network], splits, config.data, settings,
                   run_directory / "retrieval_grid.png", network, config.seed)
    if (run_directory / EVALUATION_HISTORY).is_file():
        history = json.loads((run_directory / EVALUATION_HISTORY).read_text())
        plot_metric_per_epoch(history, run_directory / "recall_per_epoch.png",
                              f"recall@{min(settings.recall_at)}")


def export(config, model, splits, embeddings=None):
    """A SavedModel per network and the gallery index; returns the export folder.

    Args:
        embeddings: dict or None. The evaluation's `{network: embeddings}`; the gallery
            network's are reused instead of embedding the test images again.
    """
    print("[4/4] exporting SavedModels and the gallery index")
    export_root = config.export_folder()
    networks = model.networks()
    gallery_network = config.export.gallery_network
    if gallery_network not in networks:
        raise ConfigError(f"Config key `export.gallery_network` names no network; known: "
                          f"{', '.join(networks)}. Received: {gallery_network!r}")
    paths = {}
    for name, network in networks.items():
        paths[name] = export_embedder(network, export_root / name, config.data.image_size,
                                      config.data.resize_size,
                                      metadata={"network": name, "config": config_to_dict(config)})
        print(f"      {name:<16} -> {paths[name]}")
    if embeddings is None or gallery_network not in embeddings:
        embeddings = embed_networks({gallery_network: networks[gallery_network]},
                                    splits.test_images, config.evaluate.batch_size)
    index = build_gallery_index(embeddings[gallery_network], splits, config.data, config.evaluate,
                                config.export.thumbnail_size)
    index_directory = export_root / "gallery" / paths[gallery_network].name
    index.save(index_directory, metadata={
        "network": gallery_network, "saved_model": str(paths[gallery_network].resolve()),
        "dataset": config.data.dataset, "split": "test"})
    kind = f"ScaNN {index.settings['mode']}" if index.backend == "scann" else "exact"
    print(f"      gallery index   -> {index_directory} ({len(index)} test images, "
          f"{gallery_network}, {kind})")
    return export_root


def load_run(run_directory, overrides=()):
    """The config saved in a finished run directory, with `section.key=value` overrides.

    Args:
        run_directory: `Path`. A run's folder, `<run_directory>/<dataset>`.
        overrides: iterable of str. Applied on top of the saved config.
    """
    saved = Path(run_directory) / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"No finished run in {run_directory} (no config.yaml): train one with "
                          f"`python main.py`, or name its directory with --run. "
                          f"Received: --run {run_directory}")
    return load_config(saved, overrides)


def evaluate_run(run_directory, overrides=()):
    """Evaluate a finished run again from its saved weights; returns the results table."""
    config = load_run(run_directory, overrides)
    splits = build_data(config)
    with directory_lock(run_directory):
        model = restore_kept(config, Path(run_directory), splits)
        table, embeddings = evaluate(config, model, splits, Path(run_directory))
        pictures(config, splits, Path(run_directory), embeddings)
    return table


def export_run(run_directory, overrides=()):
    """Export a finished run's SavedModels and gallery index; returns the export folder."""
    config = load_run(run_directory, overrides)
    splits = build_data(config)
    return export(config, restore_kept(config, Path(run_directory), splits), splits)


def search_run(run_directory, images, overrides=()):
    """Search the exported gallery of a finished run for `images` (paths)."""
    config = load_run(run_directory, overrides)
    search_images(images, config.export_folder() / "gallery", config,
                  Path(run_directory) / "search.png")


def train(config):
    """The whole run: build data -> build cohort and fit -> evaluate -> export.

    Returns:
        dict. metrics.json: every network's metrics, the `kept_epoch` they are of
        (`evaluate.keep`), `training_steps` and `seconds` per phase.
    """
    started = time.time()
    strategy = build_strategy(config.train.strategy)  # before any other TensorFlow op
    check_views(config.views, config.cohort.members)  # the last config check, before work
    keras.utils.set_random_seed(config.seed)
    # Only the chief writes where the user looks; other workers write into a temporary folder.
    with lost_worker_error(config.run_folder()), worker_outputs(config, strategy) as config, \
            directory_lock(config.run_folder()):  # one run per run directory
        run_directory = config.run_folder()
        save_config(config, run_directory / "config.yaml")

        seconds = {}  # wall time per phase, kept in metrics.json
        clock = time.time()

        def lap(phase, elapsed=None):
            nonlocal clock
            elapsed = time.time() - clock if elapsed is None else elapsed
            seconds[phase] = round(seconds.get(phase, 0.0) + elapsed, 1)
            clock = time.time()

        splits = build_data(config)
        lap("data")
        model = build_model(config, splits, strategy)
        lap("build")
        initial_results(config, model, run_directory, splits, {})
        lap("evaluation")
        evaluation, checkpoint = fit_cohort(config, model, splits, run_directory, strategy)
        training_steps = optimizer_step(model)
        lap("training", checkpoint.training_seconds())
        lap("evaluation", evaluation.seconds)  # during fit; the final one adds to it
        kept_epoch = keep_weights(config, model, run_directory, evaluation)
        table, embeddings = evaluate(config, model, splits, run_directory, evaluation)
        lap("evaluation")
        pictures(config, splits, run_directory, embeddings)
        lap("pictures")
        export_root = (export(config, model, splits, embeddings) if config.export.enabled
                       else "(export off)")
        lap("export")
        metrics_path = run_directory / "metrics.json"
        metrics = {**json.loads(metrics_path.read_text()), "kept_epoch": kept_epoch,
                   "training_steps": training_steps, "seconds": seconds}
        metrics_path.write_text(json.dumps(metrics, indent=2))
        checkpoint.delete()  # only now: a run killed before this resumes after its training

        print(f"\nRecall@K on {len(splits.test_labels)} test images of unseen classes "
              f"({time.time() - started:.0f} s in all):\n{table}")
        print("\nwall time: " + ", ".join(f"{phase} {value:.0f} s" for phase, value in seconds.items()))
        print(f"\nrun directory: {run_directory}   exports: {export_root}")
        return metrics
