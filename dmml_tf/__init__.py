"""dmml_tf: Diversified Mutual Metric Learning (DM2) for TensorFlow/Keras."""

from dmml_tf.data.sampler import class_balanced_dataset
from dmml_tf.losses import (MINERS, RelationalLoss, TripletLoss, relational_angle_loss,
                            relational_distance_loss, relational_loss, triplet_loss)
from dmml_tf.models.backbones import build_backbone
from dmml_tf.models.embedder import build_embedder
from dmml_tf.training.callbacks import ExportBest, RetrievalEvaluation
from dmml_tf.training.checkpoints import NonFiniteLossGuard, ResumableCheckpoint, StepTensorBoard
from dmml_tf.training.dm2 import DM2Model
from dmml_tf.training.optimizers import LearningRateLogger
