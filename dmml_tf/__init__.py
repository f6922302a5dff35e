"""dmml_tf: Diversified Mutual Metric Learning (DM2) for TensorFlow/Keras.

Layers, from the top; a module imports only from its own layer or those below, and
never in a cycle (tests/test_layers.py reads this line):

    cli -> run -> training -> retrieval -> export -> data -> config, models -> losses, files, errors

cli parses the command line; run is the library's runner (build, train, evaluate,
export); training holds the DM2 model and its callbacks; retrieval the search and
metrics; export the SavedModels; data the datasets, sampler and views; config the typed
config; models the backbones and embedder; losses the triplet and relational losses.
"""

import glob
import os

# Before TensorFlow loads: its C++ start-up lines are noise (on a machine without a GPU,
# "failed call to cuInit" errors from the CUDA probe). A user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if glob.glob("/dev/nvidia[0-9]*") else "3")

# The public API.
from dmml_tf.data.sampler import class_balanced_dataset
from dmml_tf.losses import (MINERS, RelationalLoss, TripletLoss, relational_angle_loss,
                            relational_distance_loss, relational_loss, triplet_loss)
from dmml_tf.models.backbones import build_backbone
from dmml_tf.models.embedder import build_embedder
from dmml_tf.training.callbacks import ExportBest, RetrievalEvaluation
from dmml_tf.training.checkpoints import NonFiniteLossGuard, ResumableCheckpoint, StepTensorBoard
from dmml_tf.training.dm2 import DM2Model
from dmml_tf.training.optimizers import LearningRateLogger
