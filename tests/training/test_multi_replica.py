"""Exact multi-replica training: under MirroredStrategy with 2 logical CPU devices, the
loss and gradients equal the single-device ones for the same global batch (mining and
the relational loss see the gathered global batch)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# float64 isolates the algorithm: the same global-batch maths agrees to rounding (~1e-15).
# float32 is how training runs: the loss agrees exactly, gradients up to the rounding of
# summing a convolution's gradient over 16 images in one go versus 8 + 8 across replicas.
CASES = [
    {"model": {"mining": "semi_hard"}, "two_optimizers": False, "floatx": "float64"},
    {"model": {"mining": "batch_hard", "angle_weight": 1.0}, "two_optimizers": False,
     "floatx": "float64"},
    {"model": {"mining": "distance_weighted", "teachers": "peers"}, "two_optimizers": True,
     "floatx": "float64"},
    {"model": {"mining": "batch_hard", "angle_weight": 1.0}, "two_optimizers": False,
     "floatx": "float32"},
    # A pair loss and a proxy loss (each member's proxies are mirrored variables).
    {"model": {"metric": "multi_similarity"}, "two_optimizers": False, "floatx": "float64"},
    {"model": {"metric": "proxy_anchor", "classes": [0, 1, 2, 3]}, "two_optimizers": False,
     "floatx": "float64"},
    # BatchNorm training (synchronised over the replicas) and the default views (drawn on
    # the global batch): the same random crops and jitter, statistics and moving averages.
    {"model": {"mining": "semi_hard"}, "two_optimizers": False, "floatx": "float64",
     "batchnorm_trains": True, "views": True},
    # The loss wrappers in a plain compile and fit mine and pair on the global batch too.
    {"plain": "TripletLoss", "floatx": "float64"},
    {"plain": "ContrastiveLoss", "floatx": "float64"},
]
IDS = ["semi_hard", "batch_hard+angle", "distance_weighted+2_optimizers", "float32",
       "multi_similarity", "proxy_anchor", "batchnorm_trains+views", "plain_triplet",
       "plain_contrastive"]


@pytest.fixture(scope="module")
def results():
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("multi_replica_step.py")), json.dumps(CASES)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(CASES)), ids=IDS)
def test_two_replicas_equal_one_device(results, index):
    result = results[index]
    assert result["case"] == CASES[index]
    one, two = result["loss"]
    assert one > 0.01
    assert abs(one - two) <= 1e-5
    # The comparison below compares real gradients (one embedder's metric loss alone has
    # smaller ones than a cohort's).
    assert result["gradient_max"] > (0.005 if "plain" in result["case"] else 0.1)
    tolerance = 1e-10 if result["case"]["floatx"] == "float64" else 1e-4 * result["gradient_max"]
    assert result["gradient_difference"] <= tolerance
    assert result["shadow_difference"] <= tolerance
