"""The papers' image networks as data: DDPM++ configurations of thesis Tables 4.8 and 5.1.

Each preset is one table column: the :class:`~diffjax.nn.ddpmpp.DDPMpp` hyper-parameters, the
image shape it was trained on, and the parameter count (and forward GFLOPs, batch 1) the table
reports. :func:`unet_preset` builds the module, with keyword overrides (e.g.
``dtype=jnp.bfloat16`` for bfloat16 compute, ``num_classes=10`` for a conditional model,
``time_scale=1.0`` when feeding EDM's ``c_noise = log(sigma) / 4``).

=======================  =====  ====  ==============  ======  ========  ============  ========  =======
preset                   image  base  channel mult    blocks  attn res  classes       params    GFLOPs
=======================  =====  ====  ==============  ======  ========  ============  ========  =======
``dpdm_mnist``           28x28  32    (1, 2, 2)       2       7         10            1.75M     --
``dpdm_celeba``          32x32  32    (1, 2, 2)       2       8, 16     --            1.80M     --
``ddpmpp_cifar10``       32x32  128   (2, 2, 2)       4       16        --            55.7M     42.42
``ddpmpp_cifar10_s32``   32x32  32    (2, 2, 2)       2       16        --            2.2M      1.64
``ddpmpp_cifar10_s64``   32x32  64    (2, 2, 2)       2       16        --            8.8M      6.42
``ddpmpp_cifar10_s96``   32x32  96    (2, 2, 2)       2       16        --            19.8M     14.36
``ddpmpp_cifar10_s128``  32x32  128   (2, 2, 2)       2       16        --            35.1M     25.44
=======================  =====  ====  ==============  ======  ========  ============  ========  =======

DPDM's MNIST models are class-conditional (thesis §4.4.3: a learned class embedding is added to
the sigma-embedding); the class embedding adds ``11 * 128`` parameters. The CIFAR-10 teacher is
EDM's unconditional DDPM++ (thesis §5.4.1.1, dropout 0.13 as in EDM's CIFAR-10 config); the
students differ from it only in base width and in 2 instead of 4 blocks per resolution, and use no
dropout (knowledge distillation, thesis §5.4.1.1). The table's GFLOPs are ``2 x`` the
multiply-accumulates of all convolutions and matrix products, counting every 3x3 tap (also
those over the zero padding); see ``benchmarks/network_flops.py``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from diffjax.nn.ddpmpp import DDPMpp

__all__ = ["Preset", "PRESETS", "unet_preset"]


class Preset(NamedTuple):
    """One column of a paper's model table.

    Attributes:
      config: :class:`DDPMpp` keyword arguments.
      image_shape: ``(H, W, C)`` of the data.
      paper_params: parameter count reported by the paper.
      paper_gflops: forward GFLOPs (batch 1) reported by the paper, or ``None``.
      source: where the numbers come from.
    """

    config: dict[str, Any]
    image_shape: tuple[int, int, int]
    paper_params: float
    paper_gflops: float | None
    source: str


def _student(base: int, params: float, gflops: float) -> Preset:
    return Preset(dict(channels=base, channel_mult=(2, 2, 2), num_res_blocks=2, attn_resolutions=(16,)),
                  (32, 32, 3), params, gflops, f"thesis Table 5.1, student s-{base}")


PRESETS: dict[str, Preset] = {
    "dpdm_mnist": Preset(
        dict(channels=32, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(7,), num_classes=10),
        (28, 28, 1), 1.75e6, None, "thesis Table 4.8, MNIST & Fashion-MNIST"),
    "dpdm_celeba": Preset(
        dict(channels=32, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(8, 16)),
        (32, 32, 3), 1.80e6, None, "thesis Table 4.8, CelebA 32x32"),
    "ddpmpp_cifar10": Preset(
        dict(channels=128, channel_mult=(2, 2, 2), num_res_blocks=4, attn_resolutions=(16,), dropout=0.13),
        (32, 32, 3), 55.7e6, 42.42, "thesis Table 5.1, teacher t (EDM DDPM++ CIFAR-10)"),
    "ddpmpp_cifar10_s32": _student(32, 2.2e6, 1.64),
    "ddpmpp_cifar10_s64": _student(64, 8.8e6, 6.42),
    "ddpmpp_cifar10_s96": _student(96, 19.8e6, 14.36),
    "ddpmpp_cifar10_s128": _student(128, 35.1e6, 25.44),
}


def unet_preset(name: str, **overrides) -> DDPMpp:
    """The :class:`DDPMpp` of a paper's table column, with keyword overrides.

    Args:
      name: a key of :data:`PRESETS` (``"dpdm_mnist"``, ``"dpdm_celeba"``, ``"ddpmpp_cifar10"``,
        ``"ddpmpp_cifar10_s32"`` / ``_s64`` / ``_s96`` / ``_s128``).
      **overrides: :class:`DDPMpp` attributes replacing the preset's (e.g. ``dtype=jnp.bfloat16``,
        ``channels=8`` for a quick test, ``num_classes=None``).

    Returns:
      The (uninitialised) Flax module; initialise it on ``(batch, *PRESETS[name].image_shape)``.

    Raises:
      ValueError: unknown ``name`` or an override that is not a :class:`DDPMpp` attribute.
    """
    if name not in PRESETS:
        raise ValueError(f"name must be one of {sorted(PRESETS)}, got {name!r}")
    fields = set(DDPMpp.__dataclass_fields__) - {"parent", "name"}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"overrides {bad} are not DDPMpp attributes (valid: {sorted(fields)})")
    return DDPMpp(**{**PRESETS[name].config, **overrides})
