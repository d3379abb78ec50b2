"""csdn-reid: CSDN models for visible-infrared person re-identification."""

from csdn.config import CSDNConfig

__version__ = "0.1.0"

__all__ = ["CSDNConfig", "__version__"]
