"""Pictures for the run directory: retrieval grids and Recall@1 per epoch."""

import matplotlib

matplotlib.use("Agg")  # Files only; never a window.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

RIGHT, WRONG = "#1a9850", "#d73027"


def plot_retrieval(query_images, neighbor_images, path, correct=None, query_titles=None,
                   neighbor_titles=None, title=None):
    """Draws one row per query: the query, then its neighbours, nearest first.

    Args:
        query_images: uint8 array of shape `(Q, h, w, 3)`.
        neighbor_images: uint8 array of shape `(Q, k, h, w, 3)`.
        path: str or `Path`. The PNG file to write.
        correct: bool array of shape `(Q, k)` or `None`. Frames each neighbour green
            (same class as its query) or red. Defaults to `None` (no frames).
        query_titles: sequence of Q str or `None`. Defaults to `None`.
        neighbor_titles: nested sequence `(Q, k)` of str or `None`. Defaults to `None`.
        title: str or `None`. The figure's title. Defaults to `None`.
    """
    rows, columns = len(neighbor_images), 1 + len(neighbor_images[0])
    figure, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.65 * rows + 0.4),
                                squeeze=False)
    for row in range(rows):
        _show(axes[row, 0], query_images[row], query_titles and query_titles[row], "black")
        axes[row, 0].set_ylabel("query", fontsize=8)
        for column in range(1, columns):
            colour = None if correct is None else (RIGHT if correct[row][column - 1] else WRONG)
            text = neighbor_titles and neighbor_titles[row][column - 1]
            _show(axes[row, column], neighbor_images[row][column - 1], text, colour)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.99 if title else 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_metric_per_epoch(history, path, metric="recall@1"):
    """Draws `metric` against the epoch for every network of an evaluation history.

    Member m and its shadow share a colour, members solid, shadows dashed; the ensembles
    are thick and black.

    Args:
        history: list of `{"epoch": int, "results": {network: {metric: value}}}`, as
            `RetrievalEvaluation.history`.
        path: str or `Path`. The PNG file to write.
        metric: str. Defaults to `"recall@1"`.
    """
    epochs = [entry["epoch"] for entry in history]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for network in history[0]["results"]:
        values = [entry["results"][network][metric] for entry in history]
        style = "--" if network.startswith("shadow") else "-"
        ensemble = network.endswith("ensemble")
        digits = "".join(c for c in network if c.isdigit())
        colour = "black" if ensemble or not digits else f"C{int(digits) % 10}"
        axis.plot(epochs, values, style, color=colour, linewidth=2.5 if ensemble else 1.2,
                  marker="o", markersize=3, label=network)
    axis.set_xlabel("epoch")
    axis.set_ylabel(metric)
    axis.set_xticks(epochs)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    axis.set_title(f"{metric} on the test classes after each evaluated epoch", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _show(axis, image, text, frame_colour):
    axis.imshow(np.asarray(image, dtype=np.uint8))
    axis.set_xticks([])
    axis.set_yticks([])
    if text:
        axis.set_title(text, fontsize=7)
    for spine in axis.spines.values():
        spine.set_visible(frame_colour is not None)
        if frame_colour is not None:
            spine.set_edgecolor(frame_colour)
            spine.set_linewidth(4)
