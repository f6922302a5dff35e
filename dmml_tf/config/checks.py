"""The config's choices and the checks every section shares: a value of the allowed
type, one of the allowed names, a metric loss's own keys."""

import types
import typing

from dmml_tf.errors import ConfigError
from dmml_tf.losses.metric_losses import METRIC_LOSSES
from dmml_tf.losses.triplet import REDUCTIONS

# Choices whose registries live in layers above config (tests/test_configs.py checks that
# they agree): data.registry.DATASETS, retrieval.index.BACKENDS,
# training.optimizers.SCHEDULES, training.distribute.STRATEGIES.
DATASETS = ("emoji_styles", "icon_concepts", "cub200", "cars196", "folder:PATH")
BACKENDS = ("scann", "exact")
KEEP = ("last", "best")
TEACHERS = ("peers", "shadows", "both")
SCHEDULES = ("constant", "step", "cosine")
STRATEGIES = ("mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")  # Keras dtype policies


def check_choice(key, value, choices):
    if value not in choices:
        raise ConfigError(f"Config key `{key}` supports: {', '.join(choices)}. "
                          f"Received: {key}={value!r}")


def check_metric_options(metric, options):
    """Each key a keyword of the metric loss, each value of its default's type."""
    defaults = {} if metric == "triplet" else METRIC_LOSSES[metric].defaults
    for key, value in options.items():
        name = f"loss.metric_options.{key}"
        if key not in defaults:
            known = ", ".join(defaults) or "none (its keys are margin, mining, triplet_reduction)"
            raise ConfigError(f"Unknown config key `{name}` for loss.metric={metric}. "
                              f"Known keys: {known}. Received: {name}={value!r}")
        expected = type(defaults[key])
        numeric = expected is float and isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (numeric or isinstance(value, expected)):
            raise ConfigError(f"Config key `{name}` expects {expected.__name__}. "
                              f"Received: {name}={value!r}")
        if key == "reduction":
            check_choice(name, value, REDUCTIONS)


def check_value(key, value, annotation):
    """Return `value` converted to `annotation`, or raise a ConfigError naming `key`."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if option is tuple and isinstance(value, (list, tuple)):
            return tuple(value)
        if option is dict and isinstance(value, dict):
            return dict(value)
    if float in options and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-5 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    names = " or ".join("null" if o is type(None) else o.__name__ for o in options)
    raise ConfigError(f"Config key `{key}` expects {names}. Received: {key}={value!r}")

