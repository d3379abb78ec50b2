"""Turning what a user passes (paths, folders, PIL images, arrays, bytes) into model input.

``files`` decides which files are images, ``decode`` opens them and does the torch-free
resize/normalise arithmetic, ``batches`` decodes inputs batch by batch with ``on_error``; all
three are shared with the torch-free runtime. ``transforms`` is the torch side (tensors)."""
