"""avatarlink: camera or video in, humanoid bone rotations out over VMC/OSC.

Stages (one module each): sources -> estimator (models/) -> smoothing -> lift -> solver -> outputs/.
Nothing happens at import time; see :mod:`avatarlink.types` for the data passed between stages.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
