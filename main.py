"""dmml_tf: train a DM2 cohort, evaluate it with ScaNN Recall@K, export SavedModels.

    python main.py                                   # emoji_styles, the embedded default
    python main.py --config configs/emoji_styles.yaml --set loss.relational_weight=20
    python main.py --smoke                           # a tiny run, for tests

Writes `<run_directory>/<dataset>/` (resolved config, checkpoint, metrics) and
`<export.directory>/<dataset>/<network>/<version>/` (TF Serving SavedModels).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dmml_tf.errors import DMMLError  # noqa: E402  (after the log-level setting)

CONFIGS = Path(__file__).parent / "configs"
SMOKE_OVERRIDES = (
    "data.max_classes=24", "data.image_size=32", "data.classes_per_batch=4",
    "train.epochs=1", "train.max_steps_per_epoch=2", "evaluate.recall_at=[1,2]",
)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="dataset name; selects configs/<dataset>.yaml")
    parser.add_argument("--config", type=Path, help="YAML config (default: the dataset's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override one config value")
    parser.add_argument("--smoke", action="store_true", help="a tiny, quick run for tests")
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
        ResumableCheckpoint(backup, config.train.checkpoint_every_steps),
        SameStepCheck(run_directory),  # every worker restored the same step
        LearningRateLogger(),
        StepTensorBoard(str(run_directory / "tensorboard"), update_freq=config.train.log_every_steps),
        keras.callbacks.ModelCheckpoint(str(run_directory / "dm2.weights.h5"), save_weights_only=True),
        keras.callbacks.CSVLogger(str(run_directory / "history.csv"), append=backup.exists()),
    ]
    model.fit(dataset, epochs=config.train.epochs, steps_per_epoch=steps, callbacks=callbacks,
              shuffle=False, verbose=2)
    return model


def evaluate(config, model, splits, run_directory):
    from dmml_tf.models.backbones import build_backbone
    from dmml_tf.models.embedder import pooled_features
    from dmml_tf.retrieval.evaluate import evaluate_networks, results_table

    print(f"[3/4] evaluating on {len(splits.test_labels)} test images ({config.evaluate.backend})")
    baseline = pooled_features(build_backbone(config.model.backbone_of(0), config.model.weights_of(0),
                                              config.data.image_size), name="pretrained")
    networks = {"pretrained (not fine-tuned)": baseline, **model.networks()}
    results = evaluate_networks(networks, splits.test_images, splits.test_labels, config.evaluate)
    table = results_table(results)
    (run_directory / "metrics.json").write_text(json.dumps(results, indent=2))
    (run_directory / "results.txt").write_text(table + "\n")
    return table


def export(config, model):
    from dmml_tf.config import config_to_dict
    from dmml_tf.export import export_embedder

    print("[4/4] exporting SavedModels")
    export_root = Path(config.export.directory) / config.data.dataset
    for name, network in model.networks().items():
        if name.startswith("member") or name == "ensemble":
            path = export_embedder(network, export_root / name, config.data.image_size,
                                   metadata={"network": name, "config": config_to_dict(config)})
            print(f"      {name:<16} -> {path}")
    return export_root


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

        splits = build_data(config)
        model = fit_cohort(config, splits, run_directory, strategy)
        table = evaluate(config, model, splits, run_directory)
        export_root = export(config, model)

        print(f"\nRecall@K on {len(splits.test_labels)} test images of unseen classes "
              f"({time.time() - started:.0f} s in all):\n{table}")
        print(f"\nrun directory: {run_directory}   exports: {export_root}")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(resolve_config(args))
    except DMMLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
