"""Training objectives of diffusion models as pure, jit-able functions.

Every builder validates its hyper-parameters once (outside ``jit``) and returns

    ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``

* ``x0``: clean data of shape ``(batch, *data)`` (conditional objectives take a pair ``(x0, y)``);
* ``reduce=True``: ``loss`` is the scalar batch mean; ``reduce=False``: the ``(batch,)``
  per-example losses (what DP-SGD clips, thesis eqs. 4.7-4.11);
* ``aux``: per-example diagnostics, usually ``"mse"`` (the unweighted squared error summed over
  data dims) and ``"weight"`` such that ``loss_i = weight_i * mse_i``, plus the sampled time /
  noise level and the noisy input the network saw.

Objectives, one module per family:

* ``score_matching``: :func:`dsm_loss` (thesis eqs. 1.18, 1.24), :func:`hsm_loss` (CLD, eqs. 2.12,
  2.56), :func:`cld_dsm_loss` (eq. 2.57);
* ``edm``: :func:`edm_loss`, the preconditioned denoiser loss of a Table 4.7 config (eqs. 1.27, 4.23);
* ``itd``: :func:`itd_loss`, the importance-sampled ``-log p(x)`` of CDL eq. 2 (Kong et al. 2023);
* ``cdl``: :func:`cdl_objective`, :func:`cdl_loss`, :func:`with_cdl` (any base + CDL, weighted as a
  weight or per example), :func:`dsm_cdl_loss` (CDL eq. 7, Alg. 1);
* ``distillation``: :func:`kd_loss`, :func:`edm_kd_loss`, :func:`guided_kd_loss` (thesis eqs. 5.6-5.9);
* ``conditional``: :func:`drop_labels`, :func:`class_conditional_loss` (classifier-free guidance
  training, thesis §4.4.3.3.1);
* ``_scaffold``: what they share (level draw, perturbation, ``reduce``, eps from a network output).
"""

from diffjax.losses.cdl import cdl_loss, cdl_objective, dsm_cdl_loss, with_cdl
from diffjax.losses.conditional import class_conditional_loss, drop_labels
from diffjax.losses.distillation import edm_kd_loss, guided_kd_loss, kd_loss
from diffjax.losses.edm import edm_loss
from diffjax.losses.itd import itd_loss
from diffjax.losses.score_matching import cld_dsm_loss, dsm_loss, hsm_loss

__all__ = [
    "dsm_loss", "hsm_loss", "cld_dsm_loss", "edm_loss",
    "itd_loss", "cdl_objective", "cdl_loss", "with_cdl", "dsm_cdl_loss",
    "kd_loss", "edm_kd_loss", "guided_kd_loss",
    "drop_labels", "class_conditional_loss",
]
