"""Model backends, one file each, all implementing `icm.core.model.LabelModel`."""

from ..core.model import LabelModel

__all__ = ["LabelModel"]
