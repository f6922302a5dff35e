"""Embed the test split with every network and report Recall@K in a table."""

import numpy as np

from dmml_tf.retrieval.metrics import evaluate_retrieval


def embed(network, images, batch_size):
    """Unit embeddings of uint8 `images`, batch by batch (inference mode)."""
    batches = [network(images[i:i + batch_size].astype("float32"), training=False).numpy()
               for i in range(0, len(images), batch_size)]
    return np.concatenate(batches)


def evaluate_networks(networks, images, labels, evaluate_config, log=print):
    """Recall@K of each named network on `images`, as `{name: {"recall@K": value}}`."""
    results = {}
    for name, network in networks.items():
        embeddings = embed(network, images, evaluate_config.batch_size)
        results[name] = evaluate_retrieval(embeddings, labels, evaluate_config.recall_at,
                                           evaluate_config.backend)
        log(f"      {name:<28}" + "  ".join(f"{k} {v:.4f}" for k, v in results[name].items()))
    return results


def results_table(results):
    """A fixed-width text table: one row per network, one column per metric."""
    metrics = list(next(iter(results.values())))
    width = max(len(name) for name in results) + 2
    lines = [f"{'network':<{width}}" + "".join(f"{m:>11}" for m in metrics)]
    lines += [f"{name:<{width}}" + "".join(f"{values[m]:>11.4f}" for m in metrics)
              for name, values in results.items()]
    return "\n".join(lines)
