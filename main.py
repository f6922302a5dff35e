"""dmml_tf: train a DM2 cohort, evaluate it with ScaNN Recall@K, export SavedModels.

    python main.py                                   # train (emoji_styles, the default)
    python main.py --config configs/emoji_styles.yaml --set loss.relational_weight=20
    python main.py --smoke                           # a tiny run, for tests
    python main.py evaluate                          # again, from the finished run
    python main.py export                            # SavedModels and the gallery index
    python main.py search cat.png dog.jpg            # the nearest gallery images

Writes `<run_directory>/<dataset>/` (resolved config, checkpoint, metrics, pictures) and
`<export.directory>/<dataset>/<network>/<version>/` (TF Serving SavedModels), with the
gallery index in `<export.directory>/<dataset>/gallery/<version>/`.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dmml_tf.errors import ConfigError, DMMLError  # noqa: E402  (after the log-level setting)

CONFIGS = Path(__file__).parent / "configs"
EVALUATION_HISTORY = "evaluation_history.json"
SMOKE_OVERRIDES = (
    "data.max_classes=24", "data.image_size=32", "data.classes_per_batch=4",
    "train.epochs=1", "train.max_steps_per_epoch=2", "evaluate.recall_at=[1,2]",
    "evaluate.every_epochs=1",
)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="dataset name; selects configs/<dataset>.yaml")
    parser.add_argument("--config", type=Path, help="YAML config (default: the dataset's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override one config value")
    parser.add_argument("--smoke", action="store_true", help="a tiny, quick run for tests")
    parser.add_argument("command", nargs="?", default="train", choices=RUN_COMMANDS,
                        help="train (the default: the full run); evaluate, export or search "
                        "work from a finished run directory")
    parser.add_argument("images", nargs="*", type=Path, help="search: query image files")
    parser.add_argument("--run", type=Path, help="evaluate/export/search: the finished run "
                        "directory (default: <run_directory>/<dataset> of the config)")
    parser.add_argument("--strategy", help="mirrored (this machine) or multi_worker (the hosts "
                        "in TF_CONFIG); the same as --set train.strategy=...")
    return parser.parse_args(argv)


def resolve_config(args):
    from dmml_tf.config import load_config

    dataset = args.dataset or "emoji_styles"
    path = args.config or CONFIGS / f"{dataset}.yaml"
    overrides = [*(SMOKE_OVERRIDES if args.smoke else ()), *args.overrides]
    if args.strategy:
        overrides.append(f"train.strategy={args.strategy}")
    if args.dataset:
        overrides.insert(0, f"data.dataset={args.dataset}")
    return load_config(path if path.is_file() or args.config else None, overrides)


def build_data(config):
    from dmml_tf.data.registry import load_dataset

    print(f"[1/4] data: {config.data.dataset} at {config.data.image_size} px")
    splits = load_dataset(config.data, config.seed, config.evaluate.batch_size)
    print(f"      {splits.summary()}")
    return splits


def fit_cohort(config, splits, run_directory, strategy):
    import keras

    from dmml_tf.data.sampler import steps_per_epoch
    from dmml_tf.training.checkpoints import NonFiniteLossGuard, ResumableCheckpoint, StepTensorBoard
    from dmml_tf.training.cohort import build_cohort
    from dmml_tf.training.distribute import SameStepCheck, distribute_batches
    from dmml_tf.training.optimizers import LearningRateLogger

    data_config = config.data
    backbones = ", ".join(config.model.backbone_of(m) for m in range(config.cohort.members))
    print(f"[2/4] training a cohort of {config.cohort.members} members ({backbones})")
    steps = steps_per_epoch(splits.train_labels, data_config.classes_per_batch,
                            data_config.images_per_class)
    if config.train.max_steps_per_epoch:
        steps = min(steps, config.train.max_steps_per_epoch)
    with strategy.scope():
        model = build_cohort(config, steps)
    dataset = distribute_batches(  # each worker gets its slice of every global batch
        strategy, lambda: splits.training_dataset(config.seed, strategy.num_replicas_in_sync),
        data_config.classes_per_batch * data_config.images_per_class)
    backup = run_directory / "backup"  # a killed run resumes from here
    callbacks = [
        NonFiniteLossGuard(backup),  # first, so a diverged step is never saved
        retrieval_evaluation(config, splits, run_directory),  # before the loggers of its metrics
        ResumableCheckpoint(backup, config.train.checkpoint_every_steps),
        SameStepCheck(),  # every worker restored the same step
        LearningRateLogger(),
        StepTensorBoard(str(run_directory / "tensorboard"), update_freq=config.train.log_every_steps),
        keras.callbacks.ModelCheckpoint(str(run_directory / "dm2.weights.h5"), save_weights_only=True),
        keras.callbacks.CSVLogger(str(run_directory / "history.csv"), append=backup.exists()),
    ]
    model.fit(dataset, epochs=config.train.epochs, steps_per_epoch=steps, callbacks=callbacks,
              shuffle=False, verbose=2)
    return model


def retrieval_evaluation(config, splits, run_directory):
    """The `RetrievalEvaluation` callback of `fit`: metrics every `evaluate.every_epochs`."""
    from dmml_tf.training.callbacks import RetrievalEvaluation

    settings = config.evaluate
    return RetrievalEvaluation(
        splits.test_images, splits.test_labels, settings.every_epochs, settings.monitor,
        settings.recall_at, settings.backend, settings.exact_below,
        settings.scann_check_queries, settings.batch_size,
        history_path=run_directory / EVALUATION_HISTORY)


def evaluate(config, model, splits, run_directory):
    from dmml_tf.models.backbones import build_backbone
    from dmml_tf.models.embedder import pooled_features
    from dmml_tf.retrieval.evaluate import embed_networks, evaluate_embeddings, results_table
    from dmml_tf.retrieval.gallery import retrieval_grid
    from dmml_tf.retrieval.plots import plot_metric_per_epoch
    from dmml_tf.training.callbacks import evaluated_networks

    settings = config.evaluate
    print(f"[3/4] evaluating on {len(splits.test_labels)} test images ({settings.backend}; "
          f"exact below {settings.exact_below:,} images)")
    baseline = pooled_features(build_backbone(config.model.backbone_of(0), config.model.weights_of(0),
                                              config.data.image_size), name="pretrained")
    networks, ensembles = evaluated_networks(model)
    networks = {"pretrained (not fine-tuned)": baseline, **networks}
    embeddings = embed_networks(networks, splits.test_images, settings.batch_size, ensembles)
    results = evaluate_embeddings(embeddings, splits.test_labels, settings)
    table = results_table(results)
    (run_directory / "metrics.json").write_text(json.dumps(results, indent=2))
    (run_directory / "results.txt").write_text(table + "\n")
    network = settings.monitor.partition("/")[0]
    if network in embeddings:
        retrieval_grid(embeddings[network], splits, config.data, settings,
                       run_directory / "retrieval_grid.png", network, config.seed)
    if (run_directory / EVALUATION_HISTORY).is_file():
        history = json.loads((run_directory / EVALUATION_HISTORY).read_text())
        plot_metric_per_epoch(history, run_directory / "recall_per_epoch.png",
                              f"recall@{min(settings.recall_at)}")
    return table


def export(config, model, splits):
    from dmml_tf.config import config_to_dict
    from dmml_tf.export import export_embedder
    from dmml_tf.retrieval.evaluate import embed
    from dmml_tf.retrieval.gallery import build_gallery_index

    print("[4/4] exporting SavedModels and the gallery index")
    export_root = Path(config.export.directory) / config.data.dataset
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
    embeddings = embed(networks[gallery_network], splits.test_images, config.evaluate.batch_size)
    index = build_gallery_index(embeddings, splits, config.data, config.evaluate,
                                config.export.thumbnail_size)
    index_directory = export_root / "gallery" / paths[gallery_network].name
    index.save(index_directory, metadata={
        "network": gallery_network, "saved_model": str(paths[gallery_network].resolve()),
        "dataset": config.data.dataset, "split": "test"})
    kind = f"ScaNN {index.settings['mode']}" if index.backend == "scann" else "exact"
    print(f"      gallery index   -> {index_directory} ({len(index)} test images, "
          f"{gallery_network}, {kind})")
    return export_root


def load_run(args):
    """The config saved in a finished run directory (with `--set` overrides), and the
    directory."""
    from dmml_tf.config import load_config

    defaults = resolve_config(args)
    run_directory = args.run or Path(defaults.run_directory) / defaults.data.dataset
    saved = run_directory / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"No finished run in {run_directory} (no config.yaml): train one with "
                          f"`python main.py`, or name its directory with --run. "
                          f"Received: --run {run_directory}")
    return load_config(saved, args.overrides), run_directory


def evaluate_command(args):
    from dmml_tf.training.cohort import restore_cohort

    config, run_directory = load_run(args)
    table = evaluate(config, restore_cohort(config, run_directory), build_data(config),
                     run_directory)
    print(f"\n{table}\n\nrun directory: {run_directory}")


def export_command(args):
    from dmml_tf.training.cohort import restore_cohort

    config, run_directory = load_run(args)
    export(config, restore_cohort(config, run_directory), build_data(config))


def search_command(args):
    from dmml_tf.retrieval.query import search_images

    config, run_directory = load_run(args)
    search_images(args.images, Path(config.export.directory) / config.data.dataset / "gallery",
                  config, run_directory / "search.png")


def run(config):
    """load config -> build data -> build cohort and fit -> evaluate -> export."""
    import keras

    from dmml_tf.config import save_config
    from dmml_tf.training.distribute import build_strategy, lost_worker_error, worker_outputs

    started = time.time()
    strategy = build_strategy(config.train.strategy)  # before any other TensorFlow op
    keras.utils.set_random_seed(config.seed)
    # Only the chief writes where the user looks; other workers write into a temporary folder.
    with lost_worker_error(Path(config.run_directory) / config.data.dataset), \
            worker_outputs(config, strategy) as config:
        run_directory = Path(config.run_directory) / config.data.dataset
        save_config(config, run_directory / "config.yaml")

        seconds = {}  # wall time per phase, kept in metrics.json
        clock = time.time()

        def lap(phase):
            nonlocal clock
            seconds[phase] = round(time.time() - clock, 1)
            clock = time.time()

        splits = build_data(config)
        lap("data")
        model = fit_cohort(config, splits, run_directory, strategy)
        lap("training")
        table = evaluate(config, model, splits, run_directory)
        lap("evaluation")
        export_root = export(config, model, splits) if config.export.enabled else "(export off)"
        lap("export")
        metrics_path = run_directory / "metrics.json"
        metrics_path.write_text(json.dumps({**json.loads(metrics_path.read_text()),
                                            "training_steps": int(model.optimizer.iterations.numpy()),
                                            "seconds": seconds}, indent=2))

        print(f"\nRecall@K on {len(splits.test_labels)} test images of unseen classes "
              f"({time.time() - started:.0f} s in all):\n{table}")
        print(f"\nrun directory: {run_directory}   exports: {export_root}")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        RUN_COMMANDS[args.command](args)
    except DMMLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


RUN_COMMANDS = {"train": lambda args: run(resolve_config(args)), "evaluate": evaluate_command,
                "export": export_command, "search": search_command}


if __name__ == "__main__":
    sys.exit(main())
