import inspect

import numpy as np
import pytest

from dmml_tf.losses.metric_losses import METRIC_LOSSES, check_metric_loss
from dmml_tf.losses.proxy_losses import Proxies

# The published defaults (docs/losses.md says where each comes from).
PUBLISHED = {
    "contrastive": {"pos_margin": 0.0, "neg_margin": 1.0, "reduction": "nonzero"},
    "multi_similarity": {"alpha": 2.0, "beta": 50.0, "base": 0.5, "epsilon": 0.1,
                         "reduction": "all"},
    "circle": {"margin": 0.4, "gamma": 80.0, "reduction": "nonzero"},
    "supcon": {"temperature": 0.1, "reduction": "nonzero"},
    "proxy_anchor": {"alpha": 32.0, "margin": 0.1},
    "normsoftmax": {"temperature": 0.05},
    "cosface": {"scale": 64.0, "margin": 0.35},
    "arcface": {"scale": 64.0, "margin": 0.5},
}


def test_registry_names_the_published_defaults():
    assert {name: spec.defaults for name, spec in METRIC_LOSSES.items()} == PUBLISHED
    assert {name: spec.proxy_lr_multiplier for name, spec in METRIC_LOSSES.items()
            if spec.uses_proxies} == {"proxy_anchor": 100.0, "normsoftmax": 1.0,
                                      "cosface": 1.0, "arcface": 1.0}


@pytest.mark.parametrize("name", list(METRIC_LOSSES))
def test_wrapper_defaults_equal_the_function_defaults(name):
    spec = METRIC_LOSSES[name]
    parameters = inspect.signature(spec.wrapper).parameters
    assert {key: parameters[key].default for key in spec.defaults} == spec.defaults
    assert parameters["name"].default == name


@pytest.mark.parametrize("name", list(METRIC_LOSSES))
def test_every_loss_runs_with_its_defaults(name):
    spec = METRIC_LOSSES[name]
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 2)
    z = rng.normal(size=(6, 4)).astype("float32")
    if spec.uses_proxies:
        proxies = Proxies(3, 4, seed=0)
        value = spec.function(labels, z, proxies.vectors, **spec.defaults)
        wrapped = spec.wrapper(proxies)
    else:
        value = spec.function(labels, z, **spec.defaults)
        wrapped = spec.wrapper()
    assert np.isfinite(value.numpy()) and value.numpy() > 0
    np.testing.assert_allclose(wrapped(labels, z).numpy(), value.numpy(), rtol=1e-6)


def test_check_metric_loss_rejects_unknown_names_and_keys():
    check_metric_loss("circle", margin=0.25, gamma=256.0)
    with pytest.raises(ValueError, match="arcface. Received: name='triplet_margin'"):
        check_metric_loss("triplet_margin")
    with pytest.raises(ValueError, match="scale, margin. Received: m=0.2, s=30.0"):
        check_metric_loss("cosface", s=30.0, m=0.2)
