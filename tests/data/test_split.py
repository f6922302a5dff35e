import numpy as np
import pytest

from dmml_tf.data.split import split_classes


def emoji_like_groups():
    """60 groups: every third has 5 skin-tone variants besides its base (6 classes)."""
    groups = []
    for g in range(60):
        groups += [f"g{g}"] * (6 if g % 3 == 0 else 1)
    return groups  # 20 * 6 + 40 = 160 classes


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("test_fraction", [0.2, 0.5, 0.7])
def test_disjoint_complete_and_sorted(seed, test_fraction):
    groups = emoji_like_groups()
    train, test = split_classes(groups, test_fraction=test_fraction, seed=seed)
    assert train.dtype == np.int64 and test.dtype == np.int64
    assert not set(train) & set(test)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(len(groups)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)


@pytest.mark.parametrize("seed", range(5))
def test_groups_are_never_split(seed):
    groups = ["wave", "wave", "wave", "cat", "dog", "dog", "sun", "moon", "moon", "star"]
    train, test = split_classes(groups, test_fraction=0.5, seed=seed)
    train_groups = {groups[i] for i in train}
    test_groups = {groups[i] for i in test}
    assert not train_groups & test_groups
    assert train_groups | test_groups == set(groups)


def test_same_seed_same_split_other_seed_other_split():
    groups = emoji_like_groups()
    first = split_classes(groups, seed=3)
    again = split_classes(groups, seed=3)
    other = split_classes(groups, seed=4)
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("test_fraction", [0.1, 0.3, 0.5, 0.9])
def test_fraction_within_tolerance(test_fraction):
    groups = emoji_like_groups()
    for seed in range(5):
        _, test = split_classes(groups, test_fraction=test_fraction, seed=seed)
        # Whole groups of at most 6 classes: the greedy fill lands within half a group.
        assert abs(len(test) - test_fraction * len(groups)) <= 3


def test_both_sides_non_empty_even_for_extreme_fractions():
    train, test = split_classes(["a", "b"], test_fraction=0.01)
    assert len(train) == 1 and len(test) == 1
    train, test = split_classes(["a", "a", "b"], test_fraction=0.99)
    assert len(train) >= 1 and len(test) >= 1


@pytest.mark.parametrize("test_fraction", [0.0, 1.0, -0.2, 1.5, float("nan")])
def test_bad_fraction_is_rejected(test_fraction):
    with pytest.raises(ValueError, match=r"Received: test_fraction=") as info:
        split_classes(["a", "b", "c"], test_fraction=test_fraction)
    assert str(info.value).endswith(f"test_fraction={test_fraction}")


def test_a_single_group_cannot_be_split():
    with pytest.raises(ValueError, match="at least 2 groups"):
        split_classes(["a", "a", "a"])
