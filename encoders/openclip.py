"""OpenCLIP towers (Cherti et al., "Reproducible scaling laws for contrastive language-image learning", CVPR 2023,
https://github.com/mlfoundations/open_clip) as anybind encoders: ``openclip_image`` and ``openclip_text``.

open_clip builds the architecture (any config it ships: ViT, ModifiedResNet, ConvNeXt and other timm trunks,
custom text towers) and its own projections are kept, so both towers land in the CLIP space itself. anybind adds:

* weights from a LOCAL file only (``pretrained=``: a full CLIP state_dict as open_clip saves it, ``.safetensors``
  or a torch file read with ``weights_only=True``); parameters are created on the meta device and the file's
  tensors adopted, so the weights exist once in memory; keys and shapes must match exactly;
* the input contract from open_clip's preprocessing config (``tag=`` picks a pretrained tag's mean/std/resize
  mode, ``preprocess=`` overrides keys) and tokenizer (only tokenizers shipped with open_clip: nothing downloads);
* provenance (``weights_source``: library, model name, build config, sha256 of the file) for checkpoint sidecars.

Each tower is built from the whole open_clip model with the *other* tower replaced by a tiny stand-in config, so
an image tower never builds (or downloads) a Hugging Face text model, and a text tower never builds a trunk.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anybind.errors import CheckpointError, RegistryError
from anybind.pretrained.weights import assign_state, params_on_meta, weights_deferred, weights_source
from anybind.registry import register_encoder

from ._common import read_state_dict

# Stand-ins for the tower that is not kept (built on the meta device, then dropped).
_STUB_TEXT = {"context_length": 2, "vocab_size": 8, "width": 8, "heads": 1, "layers": 1}
_STUB_VISION = {"image_size": 8, "patch_size": 8, "width": 8, "head_width": 8, "layers": 1}
_INTERPOLATIONS = {"random": "bicubic"}  # open_clip evaluates a 'random' interpolation as bicubic


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def open_clip_config(model_name: str, model_cfg: dict | None = None) -> dict:
    """open_clip's config for ``model_name`` (offline), with ``model_cfg`` merged over it."""
    import open_clip

    cfg = open_clip.get_model_config(model_name) if not model_name.startswith(("hf-hub:", "local-dir:")) else None
    if cfg is None:
        names = open_clip.list_models()
        close = difflib.get_close_matches(model_name, names, n=5, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"open_clip knows {len(names)}: see open_clip.list_models()"
        raise RegistryError(f"unknown open_clip model {model_name!r} (anybind builds open_clip's built-in configs "
                            f"offline; hf-hub: and local-dir: names are not supported); {hint}")
    return _deep_merge(cfg, dict(model_cfg or {}))


@contextlib.contextmanager
def _quiet():
    """open_clip warns through the root logger that a model is randomly initialised: expected here."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def build_clip(model_name: str, *, keep: str, model_cfg: dict | None, tag: str | None, preprocess: dict | None,
               on_meta: bool) -> tuple[nn.Module, dict, dict]:
    """(open_clip model, final preprocess cfg, merged model config) with only the ``keep`` tower real."""
    import open_clip

    cfg = open_clip_config(model_name, model_cfg)
    text_cfg = cfg.get("text_cfg", {})
    if keep == "text" and text_cfg.get("hf_model_name"):
        raise RegistryError(f"open_clip model {model_name!r} has the Hugging Face text tower "
                            f"{text_cfg['hf_model_name']!r}, which transformers would download; anybind builds open_clip "
                            "towers offline (use openclip_image for its image tower, hf_text for a local HF folder)")
    force_pp = {}
    if tag:
        pcfg = open_clip.get_pretrained_cfg(model_name, tag)
        if not pcfg:
            raise RegistryError(f"open_clip model {model_name!r} has no pretrained tag {tag!r}; its tags: "
                                f"{open_clip.list_pretrained_tags_by_model(model_name)}")
        force_pp = {k: pcfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in pcfg}
        if bool(pcfg.get("quick_gelu", False)) != bool(cfg.get("quick_gelu", False)):
            raise ValueError(f"open_clip tag {tag!r} of {model_name!r} was trained with quick_gelu="
                             f"{bool(pcfg.get('quick_gelu'))} but the config has the other activation: use model_name="
                             f"{model_name + '-quickgelu' if pcfg.get('quick_gelu') else model_name.removesuffix('-quickgelu')!r}")
    force_pp.update(preprocess or {})
    overrides = {k: v for k, v in (model_cfg or {}).items() if k not in ("vision_cfg", "text_cfg")}
    if keep == "image":
        overrides.update(vision_cfg=cfg["vision_cfg"], text_cfg=_STUB_TEXT)
    else:
        overrides.update(vision_cfg=_STUB_VISION, text_cfg=text_cfg)
    context = params_on_meta() if on_meta else contextlib.nullcontext()
    with context, _quiet():
        model = open_clip.create_model(model_name, pretrained=None, pretrained_image=False, pretrained_text=False,
                                       force_preprocess_cfg=force_pp, **overrides)
    pp = dict(model.visual.preprocess_cfg) if keep == "image" else {}
    return model, pp, cfg


def image_contract(pp: dict) -> dict:
    """open_clip's final ``preprocess_cfg`` -> an anybind contract reproducing its eval transform."""
    size = pp["size"]
    size = size if isinstance(size, int) else (int(size[0]) if size[0] == size[1] else [int(s) for s in size])
    mean, std = pp["mean"], pp["std"]
    mode = pp.get("resize_mode") or "shortest"
    interpolation = _INTERPOLATIONS.get(pp.get("interpolation"), pp.get("interpolation") or "bicubic")
    if mode == "shortest" and isinstance(size, list):
        interpolation = "bicubic"  # open_clip's keep-ratio resize for a non-square size is always bicubic
    return {"compat": "open_clip", "image_size": size, "resize_size": size, "resize_mode": mode,
            "mean": [float(m) for m in (mean if isinstance(mean, (list, tuple)) else [mean] * 3)],
            "std": [float(s) for s in (std if isinstance(std, (list, tuple)) else [std] * 3)],
            "interpolation": interpolation, "fill": pp.get("fill_color", 0)}


def text_contract(model_name: str, model: nn.Module, cfg: dict) -> dict:
    text_cfg = cfg.get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name") or "siglip" in model_name.lower():
        name = text_cfg.get("hf_tokenizer_name") or f"the SigLIP tokenizer of {model_name}"
        raise RegistryError(f"open_clip model {model_name!r} tokenizes with the Hugging Face tokenizer {name!r}, whose "
                            "files are not shipped with open_clip; anybind does not download tokenizers")
    return {"compat": "open_clip", "model_name": model_name, "tokenizer": "open_clip",
            "context_length": int(model.context_length), "tokenizer_kwargs": dict(text_cfg.get("tokenizer_kwargs", {}))}


def clip_state(path: str | Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """A local open_clip checkpoint, with open_clip's own format fixes for this model class applied."""
    import open_clip

    try:
        state = read_state_dict(path)
    except CheckpointError as exc:
        if _is_torchscript(path):
            raise CheckpointError(f"pretrained weights {path} are a TorchScript archive (e.g. OpenAI's original CLIP "
                                  "release), which anybind does not execute; save its state_dict once where you trust "
                                  "it: torch.save(torch.jit.load(path).state_dict(), 'clip_state.pt')") from exc
        raise
    if "positional_embedding" in state and not hasattr(model, "positional_embedding") and hasattr(model, "text"):
        state = open_clip.model.convert_to_custom_text_state_dict(state)
    for key in ("logit_scale", "logit_bias"):
        own = getattr(model, key, None)
        if key in state and own is not None and own.ndim != state[key].ndim:
            state[key] = state[key].reshape(own.shape)
    if getattr(model, "logit_bias", None) is not None and "logit_bias" not in state and "logit_scale" in state:
        state["logit_bias"] = torch.zeros_like(state["logit_scale"])
    return state


def _is_torchscript(path: str | Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


class OpenClipImageEncoder(nn.Module):
    """An open_clip ``visual`` tower: images ``(N, 3, H, W)`` -> L2-normalized CLIP embeddings (``encode_image``)."""

    def __init__(self, visual: nn.Module, *, embed_dim: int, input_contract: dict):
        super().__init__()
        self.modality, self.embed_dim = "image", embed_dim
        self.visual = visual
        self.input_contract = dict(input_contract)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)  # open_clip pools and projects inside its tower

    def forward_head(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward_features(x).float(), dim=-1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)


class OpenClipTextEncoder(nn.Module):
    """An open_clip model without its image tower: token ids -> L2-normalized CLIP embeddings (``encode_text``).

    ``logit_scale`` (and ``logit_bias`` for SigLIP models) are the model's own, in open_clip's log space.
    """

    def __init__(self, clip: nn.Module, *, embed_dim: int, input_contract: dict):
        super().__init__()
        self.modality, self.embed_dim = "text", embed_dim
        self.clip = clip
        self.input_contract = dict(input_contract)

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    @property
    def logit_bias(self) -> nn.Parameter | None:
        return getattr(self.clip, "logit_bias", None)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(x)

    def forward_head(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward_features(x).float(), dim=-1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if hasattr(self.clip, "text"):
            self.clip.text.set_grad_checkpointing(enable)
        else:
            self.clip.transformer.grad_checkpointing = enable


def _check_embed_dim(name: str, model_name: str, own: int, embed_dim: int | None) -> None:
    if embed_dim is not None and int(embed_dim) != own:
        raise ValueError(f"{name} {model_name!r} outputs {own}-d CLIP embeddings (open_clip's own projection); "
                         f"embed_dim={embed_dim} cannot change that: set embed_dim to {own} or leave it unset")


def _source(pretrained, model_name: str, tower: str, tag, cfg: dict) -> dict:
    info = {"library": "open_clip", "model_name": model_name, "tower": tower, "tag": tag, "config": cfg}
    return weights_source(pretrained, **info) if pretrained else {**info, "weights": "random"}


@register_encoder("openclip_image", modality="image")
def openclip_image(model_name: str = "ViT-B-32", pretrained: str | Path | None = None, embed_dim: int | None = None,
                   tag: str | None = None, preprocess: dict[str, Any] | None = None,
                   model_cfg: dict[str, Any] | None = None) -> OpenClipImageEncoder:
    """open_clip ``model_name``'s image tower; ``pretrained`` a local full-CLIP (or image-tower) state_dict file."""
    meta = bool(pretrained) or weights_deferred()
    model, pp, cfg = build_clip(model_name, keep="image", model_cfg=model_cfg, tag=tag, preprocess=preprocess,
                                on_meta=meta)
    visual = model.visual
    del model
    if pretrained:
        state = clip_state(pretrained, visual)
        if any(k.startswith("visual.") for k in state):
            state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        assign_state(visual, state, source=str(pretrained), what=f"open_clip {model_name} image tower")
    width = int(cfg["embed_dim"])
    _check_embed_dim("openclip_image", model_name, width, embed_dim)
    enc = OpenClipImageEncoder(visual, embed_dim=width, input_contract=image_contract(pp))
    enc.weights_source = _source(pretrained, model_name, "image", tag, cfg)
    return enc


@register_encoder("openclip_text", modality="text")
def openclip_text(model_name: str = "ViT-B-32", pretrained: str | Path | None = None, embed_dim: int | None = None,
                  model_cfg: dict[str, Any] | None = None) -> OpenClipTextEncoder:
    """open_clip ``model_name``'s text tower (with its logit scale); ``pretrained`` a local full-CLIP state_dict."""
    meta = bool(pretrained) or weights_deferred()
    model, _, cfg = build_clip(model_name, keep="text", model_cfg=model_cfg, tag=None, preprocess=None, on_meta=meta)
    contract = text_contract(model_name, model, cfg)
    model.visual = nn.Identity()  # the stand-in image tower goes; open_clip's methods still find an attribute
    if pretrained:
        state = {k: v for k, v in clip_state(pretrained, model).items() if not k.startswith("visual.")}
        assign_state(model, state, source=str(pretrained), what=f"open_clip {model_name} text tower")
    width = int(cfg["embed_dim"])
    _check_embed_dim("openclip_text", model_name, width, embed_dim)
    enc = OpenClipTextEncoder(model, embed_dim=width, input_contract=contract)
    enc.weights_source = _source(pretrained, model_name, "text", None, cfg)
    return enc


class OpenClipVideoEncoder(nn.Module):
    """An open_clip ``visual`` tower applied to every frame: clips ``(N, C, 3, T, S, S)`` (or ``(N, 3, T, S, S)``
    with ``clips=None``) -> the L2-normalized mean of the frames' CLIP embeddings.

    Started from the image tower's weights, a still video embeds exactly like its frame, so binding video to a
    frozen OpenCLIP anchor starts from the anchor's own space (the frame-mean pooling of CLIP video retrieval,
    Luo et al., "CLIP4Clip", https://arxiv.org/abs/2104.08860); training then adapts the copy to motion.
    """

    def __init__(self, visual: nn.Module, *, embed_dim: int, input_contract: dict):
        super().__init__()
        self.modality, self.embed_dim = "video", embed_dim
        self.visual = visual
        self.input_contract = dict(input_contract)

    def _frames(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        size = self.input_contract["image_size"]
        want = 6 if self.input_contract.get("clips") else 5
        if x.ndim != want or tuple(x.shape[-4:]) != (3, self.input_contract["frames"], size, size):
            shape = "(N, clips, 3, T, S, S)" if want == 6 else "(N, 3, T, S, S)"
            raise ValueError(f"openclip_video expects {shape} with T={self.input_contract['frames']}, S={size}, got "
                             f"{tuple(x.shape)}; the video transform must use this encoder's input contract")
        lead = tuple(x.shape[:-4])
        frames = x.movedim(-3, -4).reshape(-1, 3, size, size)  # (N * clips * T, 3, S, S)
        return frames, lead

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        frames, lead = self._frames(x)
        per_frame = F.normalize(self.visual(frames).float(), dim=-1)
        return per_frame.view(lead[0], -1, per_frame.shape[-1])  # (N, clips * T, D)

    def forward_head(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return tokens.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward_head(self.forward_features(x), x), dim=-1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)


@register_encoder("openclip_video", modality="video")
def openclip_video(model_name: str = "ViT-B-32", pretrained: str | Path | None = None, embed_dim: int | None = None,
                   tag: str | None = None, preprocess: dict[str, Any] | None = None,
                   model_cfg: dict[str, Any] | None = None, frames: int = 4, clips: int | None = 2,
                   clip_duration: float = 2.0) -> OpenClipVideoEncoder:
    """A video tower that starts as open_clip ``model_name``'s image tower (``pretrained``: the same local CLIP file
    as ``openclip_image``): ``clips`` clips of ``frames`` frames, each frame through the tower, embeddings averaged."""
    image = openclip_image(model_name, pretrained=pretrained, embed_dim=embed_dim, tag=tag, preprocess=preprocess,
                           model_cfg=model_cfg)
    c = image.input_contract
    if not isinstance(c["image_size"], int) or c["resize_mode"] != "shortest":
        raise ValueError(f"openclip_video needs a square input with a 'shortest' resize (open_clip {model_name!r} has "
                         f"size {c['image_size']!r}, resize_mode {c['resize_mode']!r})")
    contract = {"image_size": c["image_size"], "mean": c["mean"], "std": c["std"], "frames": int(frames),
                "clips": int(clips) if clips else None, "clip_duration": float(clip_duration),
                "interpolation": c["interpolation"]}
    enc = OpenClipVideoEncoder(image.visual, embed_dim=image.embed_dim, input_contract=contract)
    enc.weights_source = {**image.weights_source, "tower": "video (from the image tower)"}
    return enc
