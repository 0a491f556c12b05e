"""Moved: the Contrastive Diffusion Loss lives in :mod:`diffjax.losses.cdl` (re-exported here under its old path)."""

from diffjax.losses.cdl import cdl_loss, cdl_objective, dsm_cdl_loss

__all__ = ["cdl_objective", "cdl_loss", "dsm_cdl_loss"]
