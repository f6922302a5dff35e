"""Class-disjoint train/test splits that never separate a group of near-duplicate classes."""

from collections.abc import Sequence

import numpy as np


def split_classes(
    class_groups: Sequence[str], test_fraction: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Splits classes into train and test classes, keeping each group on one side.

    Metric learning is evaluated on classes never seen in training. Classes that share a
    group (e.g. an emoji and its skin-tone variants, see `EmojiStyles.class_groups`)
    are near-duplicates, so a group goes wholly to train or wholly to test. Groups are
    shuffled with `seed` and each is put in test while that brings the test share
    closer to `test_fraction`.

    Args:
        class_groups: sequence of str, the group of each class; index `i` is class `i`.
        test_fraction: float in (0, 1). Share of the classes wanted in test; reached as
            closely as whole groups allow. Defaults to `0.5`.
        seed: int. Seed of the shuffle; the same seed gives the same split. Defaults
            to `0`.

    Returns:
        `(train_classes, test_classes)`: sorted int64 arrays of class indices, disjoint,
        together covering every class, neither empty.

    Example:

    ```python
    train, test = split_classes(["a", "a", "b", "c"], test_fraction=0.5, seed=0)
    ```
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"`test_fraction` must be in (0, 1). Received: test_fraction={test_fraction}"
        )
    groups, group_of_class = np.unique(np.asarray(class_groups, dtype=str), return_inverse=True)
    if len(groups) < 2:
        raise ValueError(
            "Splitting needs classes from at least 2 groups. "
            f"Received: class_groups with {len(groups)} group(s)"
        )
    sizes = np.bincount(group_of_class, minlength=len(groups))
    order = np.random.default_rng(seed).permutation(len(groups))
    target = test_fraction * len(group_of_class)
    # The first two shuffled groups seed test and train: neither side may be empty.
    in_test = np.zeros(len(groups), dtype=bool)
    in_test[order[0]] = True
    test_size = sizes[order[0]]
    for group in order[2:]:
        if abs(test_size + sizes[group] - target) < abs(test_size - target):
            in_test[group] = True
            test_size += sizes[group]
    test = in_test[group_of_class]
    return np.flatnonzero(~test).astype(np.int64), np.flatnonzero(test).astype(np.int64)
