"""How different are a finished cohort's members? Mutual learning has something to teach,
and an ensemble something to gain, only where the members disagree.

    python benchmarks/member_agreement.py runs/reproduce/test/independent/seed0/emoji_styles \
        runs/reproduce/test/dm2/seed0/emoji_styles

For each run directory (its config.yaml and the weights it reports: dm2.weights.h5,
or best.weights.h5 with evaluate.keep: best), embeds the test images with
the first two members and prints, over the queries Recall@1 counts (those whose class has
another image): each member's Recall@1, how often both members' nearest neighbour is the
same image, how often both or exactly one of them is right, and the ensemble's Recall@1.
"""

import argparse
from pathlib import Path

import dmml_tf  # noqa: E402,F401  first: it quiets TensorFlow's GPU probe without a GPU

import numpy as np  # noqa: E402

from dmml_tf.config import load_config  # noqa: E402
from dmml_tf.data.registry import load_dataset  # noqa: E402
from dmml_tf.retrieval.evaluate import embed_networks  # noqa: E402
from dmml_tf.retrieval.search import exact_neighbors  # noqa: E402
from dmml_tf.run import restore_kept  # noqa: E402


def nearest_other_image(embeddings):
    """Index of each image's nearest neighbour among the other images (exact search)."""
    indices, _ = exact_neighbors(embeddings, embeddings, 1, query_ids=np.arange(len(embeddings)))
    return indices[:, 0]


def agreement(run_directory):
    config = load_config(run_directory / "config.yaml")
    splits = load_dataset(config.data, config.seed, config.evaluate.batch_size, log=lambda _: None)
    model = restore_kept(config, run_directory, splits)  # the weights the run reports
    # The ensemble is not run: its embedding is the members' concatenated.
    networks = {"member0": model.members[0], "member1": model.members[1], "ensemble": None}
    embeddings = embed_networks(networks, splits.test_images, config.evaluate.batch_size,
                                {"ensemble": ["member0", "member1"]})
    labels = splits.test_labels
    _, class_of, class_sizes = np.unique(labels, return_inverse=True, return_counts=True)
    counted = class_sizes[class_of] > 1
    neighbours = {name: nearest_other_image(e)[counted] for name, e in embeddings.items()}
    right = {name: labels[n] == labels[counted] for name, n in neighbours.items()}
    return {
        "member0 R@1": right["member0"].mean(),
        "member1 R@1": right["member1"].mean(),
        "same neighbour": (neighbours["member0"] == neighbours["member1"]).mean(),
        "both right": (right["member0"] & right["member1"]).mean(),
        "one right": (right["member0"] ^ right["member1"]).mean(),
        "ensemble R@1": right["ensemble"].mean(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="finished run directories")
    args = parser.parse_args()
    rows = {str(run): agreement(run) for run in args.runs}
    columns = list(next(iter(rows.values())))
    print("| run | " + " | ".join(columns) + " |\n" + "|---" * (len(columns) + 1) + "|")
    for run, values in rows.items():
        print(f"| {run} | " + " | ".join(f"{100 * values[c]:.1f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
