"""Moved: label dropout lives in :mod:`diffjax.losses.conditional`, guidance in :mod:`diffjax.samplers.guidance`."""

from diffjax.losses.conditional import class_conditional_loss, drop_labels
from diffjax.samplers.guidance import class_guided_model as guided_model

__all__ = ["drop_labels", "class_conditional_loss", "guided_model"]
