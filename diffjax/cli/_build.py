"""Turn a run config (a flat JSON dict, stored with every checkpoint) into library objects.

This is edge code: the library itself never sees a config. A run is identified by
``sde`` (vp | subvp | ve | cld | edm), ``dataset``, ``loss`` and the network's
``width``/``depth``; everything else is a keyword argument of a library function.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from diffjax import losses, param
from diffjax.data import TOY_NAMES, toy_batch
from diffjax.sde import CLD, VESDE, SubVPSDE, VPSDE

SDES = ("vp", "subvp", "ve", "cld", "edm")
LOSSES = ("dsm", "dsm+cdl", "itd", "itd+cdl")
# samplers on a sigma grid with a denoiser D(x, sigma) (sde=None): every scalar run and EDM runs
SIGMA_METHODS = ("edm_heun", "edm_euler", "euler_ancestral", "dpm2_ancestral", "dpmpp_2s_ancestral")
SCALAR_METHODS = ("ddim", "ddpm", "em", "pc", "pf_euler", "pf_heun", "pf_adaptive", "genie", "ttm3", "dpmpp_2m",
                  "dpmpp_3m", "unipc") + SIGMA_METHODS
METHODS = {"vp": SCALAR_METHODS, "subvp": SCALAR_METHODS,
           "ve": ("em", "pc", "pf_euler", "pf_heun", "pf_adaptive") + SIGMA_METHODS,
           "cld": ("em", "sscs"), "edm": SIGMA_METHODS + ("dpmpp_2m", "dpmpp_3m", "unipc")}
# the default --method of `diffjax sample` per run kind
DEFAULT_METHOD = {"vp": "ddim", "subvp": "ddim", "ve": "edm_heun", "cld": "sscs", "edm": "edm_heun"}
DIGITS_CLASSES = 10


def make_sde(name: str):
    """The SDE object of a run (``None`` for ``edm``, which is a denoiser config)."""
    table = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE, "cld": CLD}
    if name == "edm":
        return None
    if name not in table:
        raise ValueError(f"unknown sde {name!r}; choose one of {', '.join(SDES)}")
    return table[name]()


def make_network(config: dict, data_shape: tuple[int, ...]):
    """``(module, apply_fn, init_fn)`` for the data shape: an MLP for vectors, a U-Net for images."""
    from diffjax import nn as dnn

    cld = config["sde"] == "cld"
    if len(data_shape) == 1:
        time_scale = config.get("time_scale") or (100.0 if config["sde"] == "edm" else 1000.0)
        module = dnn.ScoreMLP(width=config["width"], depth=config["depth"], out_dim=data_shape[0],
                              time_scale=time_scale)
    else:
        module = _image_network(config, data_shape[-1])
    apply_fn = dnn.make_cld_apply(module) if cld else dnn.make_apply(module)

    def init_fn(key):
        return dnn.init_params(module, key, (2,) + tuple(data_shape), cld=cld)

    return module, apply_fn, init_fn


def _image_network(config: dict, channels: int):
    """A U-Net (``net="unet"``, float32 only) or a small DDPM++ (``net="ddpmpp"``, any ``dtype``)."""
    from diffjax import nn as dnn

    time_scale = 100.0 if config["sde"] == "edm" else 1000.0
    classes = config.get("num_classes")
    if config.get("net", "unet") == "ddpmpp":
        dtype = jnp.bfloat16 if config.get("dtype") == "bfloat16" else jnp.float32
        return dnn.DDPMpp(channels=config["width"], channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(),
                          num_classes=classes, time_scale=time_scale, out_channels=channels, dtype=dtype)
    if config.get("dtype", "float32") != "float32":
        raise ValueError("--dtype bfloat16 needs --net ddpmpp (diffjax.nn.UNet computes in float32)")
    return dnn.UNet(channels=config["width"], out_channels=channels, time_scale=time_scale, num_classes=classes)


def make_loss(config: dict) -> Callable:
    """The training loss of a run: DSM (eps), CLD HSM, the EDM denoiser loss or the ITD bound (CDL eq. 2);
    ``dsm+cdl`` / ``itd+cdl`` add the Contrastive Diffusion Loss (CDL eq. 7) with weight
    ``config["cdl_weight"]``."""
    sde, name = make_sde(config["sde"]), config.get("loss", "dsm")
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    if name != "dsm" and config["sde"] not in ("vp", "subvp", "ve"):
        raise ValueError(f"--loss {name} needs an eps network of a scalar SDE (--sde vp, subvp or ve)")
    if name == "dsm+cdl":
        loss = losses.dsm_cdl_loss(sde, cdl_weight=config["cdl_weight"])
    elif name.startswith("itd"):   # CDL eq. 2 as a loss; +cdl: the authors' CDL model (CDL Table 1)
        loss = losses.itd_loss(sde)
        loss = losses.with_cdl(loss, sde, weight=config["cdl_weight"]) if name == "itd+cdl" else loss
    elif config["sde"] == "cld":
        loss = losses.hsm_loss(sde)
    elif config["sde"] == "edm":
        loss = losses.edm_loss(param.edm_config())
    else:
        loss = losses.dsm_loss(sde, parameterization="eps")
    if config.get("num_classes"):
        if config["sde"] == "cld" or name != "dsm":
            raise ValueError("class-conditional training (--dataset digits) supports --loss dsm with vp/subvp/ve/edm")
        return losses.class_conditional_loss(loss, num_classes=config["num_classes"])
    return loss


def model_function(config: dict, apply_fn: Callable, params: Any, labels: Any = None) -> Callable:
    """The model function a sampler takes: eps(x, t) (scalar SDEs), score_v(u, t) (CLD) or D(x, sigma) (EDM).

    ``labels``: ``(n,)`` class labels of a class-conditional run (``None``: the null token, i.e. the
    unconditional model the label dropout trained).
    """
    sde = make_sde(config["sde"])
    if config.get("num_classes"):
        y = jnp.full((), config["num_classes"], jnp.int32) if labels is None else jnp.asarray(labels, jnp.int32)
        plain = apply_fn

        def apply_fn(p, x, t):
            return plain(p, x, t, y=jnp.broadcast_to(y, x.shape[:1]))
    if config["sde"] == "cld":
        return param.cld_mixed_score(sde, lambda u, t: apply_fn(params, u, t))
    if config["sde"] == "edm":
        return param.precondition(param.edm_config(), lambda x, c: apply_fn(params, x, c))
    return lambda x, t: apply_fn(params, x, t)


def data_fn_for(config: dict) -> tuple[Callable[[int], Any], tuple[int, ...]]:
    """``(data_fn(step) -> batch, data_shape)`` for a toy name or a TFDS image set."""
    name, seed, bs = config["dataset"], config["seed"], config["batch_size"]
    if name in TOY_NAMES:
        fn = jax.jit(lambda step: toy_batch(name, seed, step, bs))
        return fn, (2,)
    if name == "digits":
        from diffjax.data import DIGITS_RESOLUTION, digits_data_fn

        fn = digits_data_fn(batch_size=bs, seed=seed, with_labels=bool(config.get("num_classes")))
        return fn, (DIGITS_RESOLUTION, DIGITS_RESOLUTION, 1)
    from diffjax.data import TFDS_DATASETS, tfds_data_fn

    if name not in TFDS_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; toy sets: {', '.join(TOY_NAMES)}; digits; "
                         f"image sets (need the data extra and prepared data): {', '.join(TFDS_DATASETS)}")
    fn = tfds_data_fn(name, data_dir=config.get("data_dir") or "~/tensorflow_datasets", batch_size=bs, seed=seed)
    return fn, tuple(fn(0).shape[1:])


def dataset_array(config: dict, size: int):
    """The whole (finite) training set as one array, for Poisson-sampled DP training.

    Toy sets: ``size`` points drawn once with ``PRNGKey(seed)``; image sets: the full TFDS split.
    """
    name = config["dataset"]
    if name in TOY_NAMES:
        from diffjax.data import toy_sampler

        return toy_sampler(name)(jax.random.fold_in(jax.random.PRNGKey(config["seed"]), 0x64617461), size)
    if name == "digits":
        from diffjax.data import load_digits

        return jnp.asarray(load_digits("train")[0])
    from diffjax.data import TFDS_DATASETS, examples_to_batch, load_source

    if name not in TFDS_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; toy sets: {', '.join(TOY_NAMES)}; digits; "
                         f"image sets: {', '.join(TFDS_DATASETS)}")
    source = load_source(name, data_dir=config.get("data_dir") or "~/tensorflow_datasets")
    return jnp.asarray(examples_to_batch([source[i] for i in range(len(source))]))


def draw_samples(config: dict, model_fn: Callable, method: str, *, key, n: int, steps: int,
                 data_shape: tuple[int, ...], picard: bool = False, window="auto", grid: str | None = None):
    """Sample ``n`` points with ``method`` in ``steps`` steps; returns ``(samples, info)``.

    ``grid``: a :func:`diffjax.schedules.time_grid` kind (``"uniform"``, ``"quadratic"``,
    ``"log_snr"``); by default log-SNR-uniform for DPM-Solver++ and UniPC, quadratic striding (thesis
    §3.4.3.2.4) for the other deterministic few-step solvers (DDIM, GENIE, TTM-3, PF) and uniform for
    the stochastic ones.
    """
    from diffjax import samplers as S
    from diffjax.schedules import time_grid

    name = config["sde"]
    if method not in METHODS[name]:
        raise ValueError(f"method {method!r} is not available for sde {name!r}; choose one of {', '.join(METHODS[name])}")
    sde = make_sde(name)
    shape = (n,) + tuple(data_shape)
    t_min = 1e-3

    if method in SIGMA_METHODS or name == "edm":
        rule, x_model, grid = _sigma_rule(method, sde, model_fn, steps, t_min)
    else:
        table = {
            "ddim": lambda: (S.ddim_rule(sde), model_fn),
            "ddpm": lambda: (S.ddpm_rule(sde), model_fn),
            "genie": lambda: (S.genie_rule(sde), model_fn),
            "ttm3": lambda: (S.ttm3_rule(sde), model_fn),
            "em": lambda: (S.euler_maruyama_rule(sde), model_fn if name == "cld" else param.score_from_eps(sde, model_fn)),
            "pc": lambda: (S.predictor_corrector_rule(sde), param.score_from_eps(sde, model_fn)),
            "pf_euler": lambda: (S.probability_flow_euler_rule(sde), param.score_from_eps(sde, model_fn)),
            "pf_heun": lambda: (S.probability_flow_heun_rule(sde), param.score_from_eps(sde, model_fn)),
            "sscs": lambda: (S.sscs_rule(sde), model_fn),
            "dpmpp_2m": lambda: (S.dpmpp_2m_rule(sde), param.x0_from_eps(sde, model_fn)),
            "dpmpp_3m": lambda: (S.dpmpp_3m_rule(sde), param.x0_from_eps(sde, model_fn)),
            "unipc": lambda: (S.unipc_rule(sde), param.x0_from_eps(sde, model_fn)),
        }
        if method == "pf_adaptive":
            x_T = sde.prior_sample(key, shape)
            return S.solve_probability_flow(sde, param.score_from_eps(sde, model_fn), x_T, t1=t_min)
        rule, x_model = table[method]()
        if grid is None:
            if method.startswith(("dpmpp", "unipc")):
                grid = "log_snr"
            else:
                grid = "quadratic" if method in ("ddim", "genie", "ttm3", "pf_euler", "pf_heun") else "uniform"
        grid = time_grid(steps, grid, 0.0 if method == "ddpm" else t_min, sde.T, sde=sde)
    if picard:
        out, info = S.picard_sample(rule, x_model, key, shape, grid, window=window)
    else:
        out, info = jax.jit(lambda k: S.sample(rule, x_model, k, shape, grid))(key)
    if isinstance(out, tuple):  # CLD without a final denoising returns (x, v)
        out = out[0]
    return out, info


def _sigma_rule(method: str, sde, model_fn: Callable, steps: int, t_min: float):
    """``(rule, denoiser, sigma grid)`` of a sampler on a sigma grid (``sde=None``, EDM's Karras grid).

    EDM runs: ``model_fn`` is the denoiser, sigma in ``[0.002, 80]``; scalar runs: the denoiser from
    eps (:func:`diffjax.param.denoiser_from_eps`) between ``sigma(t_min)`` and ``sigma(T)``. Heun/Euler
    end at the smallest sigma (as before); the multistep and ancestral rules end at ``0``.
    """
    from diffjax import samplers as S
    from diffjax.schedules import edm_sigma_grid, sigma_from_t

    if sde is None:
        denoiser, smin, smax = model_fn, 0.002, 80.0
    else:
        denoiser = param.denoiser_from_eps(sde, model_fn)
        smin, smax = float(sigma_from_t(sde, t_min)), float(sigma_from_t(sde, sde.T))
    builders = {"edm_heun": S.edm_heun_rule, "edm_euler": S.edm_euler_rule,
                "euler_ancestral": S.euler_ancestral_rule, "dpm2_ancestral": S.dpm2_ancestral_rule,
                "dpmpp_2s_ancestral": S.dpmpp_2s_ancestral_rule,
                "dpmpp_2m": lambda sigma_max: S.dpmpp_2m_rule(None, sigma_max=sigma_max),
                "dpmpp_3m": lambda sigma_max: S.dpmpp_3m_rule(None, sigma_max=sigma_max),
                "unipc": lambda sigma_max: S.unipc_rule(None, sigma_max=sigma_max)}
    grid = edm_sigma_grid(steps, smin, smax, append_zero=method not in ("edm_heun", "edm_euler"))
    return builders[method](sigma_max=smax), denoiser, grid


def genie_head_model(head_config: dict, *, teacher_params=None):
    """``(features_apply, head_module, teacher_config, teacher_params)`` of a GENIE-head run."""
    from diffjax import nn as dnn
    from diffjax import train
    from diffjax.distill import with_features

    teacher = head_config["teacher"]
    teacher_config = train.load_config(teacher)
    if teacher_params is None:
        teacher_params = train.restore_params(teacher)
    _, apply_fn, _ = make_network(teacher_config, tuple(teacher_config["data_shape"]))
    head = dnn.GenieHead(hidden=head_config["head_width"], num_outputs=3)
    return with_features(apply_fn), head, teacher_config, teacher_params
