"""``csdn.convert``: the name the README and the design contract give the authors'-checkpoint
converter, which lives in :mod:`csdn.hub.official` (weights come from the hub layer)."""

from csdn.hub.official import (
    CheckpointError,
    config_from_official,
    from_official,
    read_official,
    to_official_state_dict,
)

__all__ = ["CheckpointError", "config_from_official", "from_official", "read_official", "to_official_state_dict"]
