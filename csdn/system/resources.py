"""Where the zoo's data lives: the registry, architecture presets and the bundled model.

The repository keeps them in a top-level ``weights/`` folder, mapped into the installed package
as ``csdn.weights`` (setuptools ``package-dir``), so wheel, sdist and editable installs find
them through importlib. A checkout used without installing (``PYTHONPATH=.``) has no
``weights/`` folder; there the repository's ``weights/`` beside the package is used."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def weights_dir() -> Path:
    """The folder holding ``registry.json`` and the bundled models."""
    try:
        return Path(str(resources.files("csdn.weights")))
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / "weights"
        if (checkout / "__init__.py").is_file():
            return checkout
        raise ModuleNotFoundError(
            "csdn.weights (the model registry and the bundled model) is not installed: reinstall csdn-reid "
            "(pip install csdn-reid), or run from a checkout that has its top-level weights/ folder"
        ) from None
