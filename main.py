"""dmml_tf: train a DM2 cohort, evaluate it with ScaNN Recall@K, export SavedModels.

The same as the installed `dmml-tf` command (dmml_tf/cli.py):

    python main.py                                   # train (emoji_styles, the default)
    python main.py --set loss.relational_weight=20   # any config key
    python main.py --smoke                           # a tiny run, for tests
    python main.py evaluate | export | search IMAGE  # from the finished run
"""

import sys

from dmml_tf.cli import main

if __name__ == "__main__":
    sys.exit(main())
