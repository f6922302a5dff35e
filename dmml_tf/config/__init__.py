"""One typed config: YAML -> frozen dataclasses that hold every default, checked when
loaded, overridable from the command line, saved beside every run and export.

    sections   the dataclasses (data, model, cohort, loss, views, train, evaluate, export)
    loading    YAML and overrides -> a validated `Config`, old keys, writing it back
    checks     the allowed names and the checks the sections share
"""

from dmml_tf.config.checks import (BACKENDS, DATASETS, KEEP, PRECISIONS, SCHEDULES, STRATEGIES,
                                   TEACHERS)
from dmml_tf.config.loading import (Config, config_to_dict, dataset_slug, load_config,
                                    metrics_of, networks_of, save_config)
from dmml_tf.config.sections import (CohortConfig, DataConfig, EvaluateConfig, ExportConfig,
                                     LossConfig, ModelConfig, TrainConfig, ViewsConfig)
