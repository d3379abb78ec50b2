"""Process-level helpers every layer may use: devices (``device``), atomic file writes and
hashes (``fileio``), and the torchrun world (``distributed``)."""
