"""Bundled model weights and the model registry (data only; see csdn.hub.registry)."""
