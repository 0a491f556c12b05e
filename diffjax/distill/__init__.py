"""Distillation: GENIE derivative heads (thesis §3.3.3.1) and knowledge distillation (thesis §5.3.3).

The knowledge-distillation objectives live in :mod:`diffjax.losses.distillation` and are re-exported
here; the GENIE head loss stays with the head (it needs the head's feature plumbing and the GENIE
derivative targets of :mod:`diffjax.samplers.genie`).
"""

from diffjax.distill._genie_head import (exact_derivative_model, genie_head_apply, genie_head_loss,
                                         genie_head_model, genie_head_rule, genie_head_sample,
                                         mixed_derivative, train_genie_head, with_features)
from diffjax.distill._kd import conditioned_apply, conditioned_input_dim, guided_model
from diffjax.losses.distillation import edm_kd_loss, guided_kd_loss, kd_loss

__all__ = [
    "with_features", "mixed_derivative", "genie_head_apply", "genie_head_model", "exact_derivative_model",
    "genie_head_loss", "train_genie_head", "genie_head_rule", "genie_head_sample",
    "kd_loss", "edm_kd_loss", "guided_kd_loss", "guided_model", "conditioned_apply", "conditioned_input_dim",
]
