"""The command line: `dmml-tf` (or `python main.py`) train | evaluate | export | search.

    dmml-tf                                      # train (emoji_styles, the default)
    dmml-tf --config configs/emoji_styles.yaml --set loss.relational_weight=20
    dmml-tf --smoke                              # a tiny run, for tests
    dmml-tf evaluate                             # again, from the finished run
    dmml-tf export                               # SavedModels and the gallery index
    dmml-tf search cat.png dog.jpg               # the nearest gallery images

Writes `<run_directory>/<dataset>/` (resolved config, checkpoint, metrics, pictures) and
`<export.directory>/<dataset>/<network>/<version>/` (TF Serving SavedModels), with the
gallery index in `<export.directory>/<dataset>/gallery/<version>/`. Errors a user can fix
print one `error:` line and exit with code 2.
"""

import argparse
import sys
from pathlib import Path

from dmml_tf.errors import DMMLError

COMMANDS = ("train", "evaluate", "export", "search")
SMOKE_OVERRIDES = (
    "data.max_classes=24", "data.image_size=32", "data.classes_per_batch=4",
    "train.epochs=1", "train.max_steps_per_epoch=2", "evaluate.recall_at=[1,2]",
    "evaluate.every_epochs=1",
)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="dmml-tf", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="dataset name; selects configs/<dataset>.yaml")
    parser.add_argument("--config", type=Path, help="YAML config (default: the dataset's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override one config value")
    parser.add_argument("--smoke", action="store_true", help="a tiny, quick run for tests")
    parser.add_argument("command", nargs="?", default="train", choices=COMMANDS,
                        help="train (the default: the full run); evaluate, export or search "
                        "work from a finished run directory")
    parser.add_argument("images", nargs="*", type=Path, help="search: query image files")
    parser.add_argument("--run", type=Path, help="evaluate/export/search: the finished run "
                        "directory (default: <run_directory>/<dataset> of the config)")
    parser.add_argument("--strategy", help="mirrored (this machine) or multi_worker (the hosts "
                        "in TF_CONFIG); the same as --set train.strategy=...")
    return parser.parse_args(argv)


def config_file(args):
    """`--config`, else `configs/<dataset>.yaml` in the current directory or the checkout
    beside the package; None (the package defaults, which are emoji_styles') if neither."""
    if args.config:
        return args.config
    name = f"{args.dataset or 'emoji_styles'}.yaml"
    for folder in (Path.cwd() / "configs", Path(__file__).resolve().parents[1] / "configs"):
        if (folder / name).is_file():
            return folder / name
    return None


def resolve_config(args):
    from dmml_tf.config import load_config

    overrides = [*(SMOKE_OVERRIDES if args.smoke else ()), *args.overrides]
    if args.strategy:
        overrides.append(f"train.strategy={args.strategy}")
    if args.dataset:
        overrides.insert(0, f"data.dataset={args.dataset}")
    return load_config(config_file(args), overrides)


def run_command(args):
    """Load the config (every key checked before any work), then run the command."""
    from dmml_tf import run

    config = resolve_config(args)
    if args.command == "train":
        return run.train(config)
    run_directory = args.run or config.run_folder()
    if args.command == "evaluate":
        print(f"\n{run.evaluate_run(run_directory, args.overrides)}\n\n"
              f"run directory: {run_directory}")
    elif args.command == "export":
        run.export_run(run_directory, args.overrides)
    else:
        run.search_run(run_directory, args.images, args.overrides)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run_command(args)
    except DMMLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
