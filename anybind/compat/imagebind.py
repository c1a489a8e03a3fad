"""Load ImageBind checkpoints into anybind towers and reproduce ImageBind's outputs.

``load_imagebind("imagebind_huge.pth")`` reads an ImageBind state dict (memory-mapped, so a 4.8 GB checkpoint
needs about its own size in memory), infers every tower's sizes from the tensor shapes, builds the registry's
``imagebind_*`` towers on the meta device and assigns the checkpoint's tensors to them without copying.

The returned :class:`ImageBindModel` is an :class:`~anybind.model.AnyBindModel` (``embed`` returns unit vectors,
using ImageBind's preprocessing pinned by each tower's ``input_contract["compat"] == "imagebind"``) that also offers
:meth:`ImageBindModel.forward_imagebind`, which takes ImageBind's input dict and returns exactly ImageBind's output
dict (logit-scaled, multi-clip means without re-normalization). :meth:`ImageBindModel.to_anybind` gives a plain
model that :func:`anybind.save_model` writes and :func:`anybind.load` rebuilds by registry name.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, torch_load_problem
from ..model import AnyBindModel
from ..registry import create_encoder

log = logging.getLogger(__name__)

# ImageBind's modality keys -> anybind modality names ("vision" also serves "video").
MODALITIES = {"vision": "image", "text": "text", "audio": "audio", "depth": "depth", "thermal": "thermal", "imu": "imu"}
DEFAULT_NUM_HEADS = {"vision": 16, "text": 16, "audio": 12, "depth": 8, "thermal": 12, "imu": 8}
MAX_LOGIT_SCALE = 100.0

# (ImageBind key pattern, anybind key template); {m} is ImageBind's modality key. Patterns are tried in order.
_RULES: list[tuple[str, str]] = [
    (r"modality_preprocessors\.vision\.rgbt_stem\.proj\.1\.weight", "stem.proj.weight"),
    (r"modality_preprocessors\.(?P<m>\w+)\.(?:rgbt|depth|imu)_stem\.proj\.weight", "stem.proj.weight"),
    (r"modality_preprocessors\.(?P<m>\w+)\.(?:rgbt|depth|imu)_stem\.norm_layer\.(?P<p>weight|bias)", "stem.norm.{p}"),
    (r"modality_preprocessors\.(?P<m>\w+)\.cls_token", "stem.cls_token"),
    (r"modality_preprocessors\.(?P<m>\w+)\.(?:pos_embedding_helper\.)?pos_embed", "stem.pos_embed"),
    (r"modality_preprocessors\.text\.token_embedding\.weight", "stem.token_embedding.weight"),
    (r"modality_trunks\.vision\.pre_transformer_layer\.0\.(?P<p>weight|bias)", "stem.norm_pre.{p}"),
    (r"modality_trunks\.(?P<m>\w+)\.blocks\.(?P<i>\d+)\.attn\.in_proj_(?P<p>weight|bias)", "trunk.blocks.{i}.attn.qkv.{p}"),
    (r"modality_trunks\.(?P<m>\w+)\.blocks\.(?P<i>\d+)\.attn\.out_proj\.(?P<p>weight|bias)",
     "trunk.blocks.{i}.attn.proj.{p}"),
    (r"modality_trunks\.(?P<m>\w+)\.blocks\.(?P<i>\d+)\.attn\.(?P<p>bias_k|bias_v)", "trunk.blocks.{i}.attn.{p}"),
    (r"modality_trunks\.(?P<m>\w+)\.blocks\.(?P<i>\d+)\.norm_(?P<n>[12])\.(?P<p>weight|bias)",
     "trunk.blocks.{i}.norm{n}.{p}"),
    (r"modality_trunks\.(?P<m>\w+)\.blocks\.(?P<i>\d+)\.mlp\.(?P<f>fc[12])\.(?P<p>weight|bias)",
     "trunk.blocks.{i}.mlp.{f}.{p}"),
    (r"modality_heads\.text\.proj\.0\.(?P<p>weight|bias)", "head.norm.{p}"),
    (r"modality_heads\.text\.proj\.1\.weight", "head.proj.weight"),
    (r"modality_heads\.(?P<m>\w+)\.0\.(?P<p>weight|bias)", "head.norm.{p}"),
    (r"modality_heads\.(?P<m>\w+)\.[23]\.weight", "head.proj.weight"),  # imu has a Dropout at index 2
    (r"modality_postprocessors\.(?P<m>\w+)\.1\.log_logit_scale", "log_logit_scale"),
]
_COMPILED = [(re.compile(p), t) for p, t in _RULES]
_TEXT_MASK = "modality_preprocessors.text.mask"


def map_key(key: str) -> tuple[str, str]:
    """ImageBind state-dict key -> (ImageBind modality key, tower-relative anybind key)."""
    for pattern, template in _COMPILED:
        hit = pattern.fullmatch(key)
        if hit:
            groups = hit.groupdict()
            modality = groups.get("m") or key.split(".")[1]
            return modality, template.format(**groups)
    raise CheckpointError(f"unexpected ImageBind checkpoint key {key!r}: no anybind parameter corresponds to it")


_STEM_NAMES = {"vision": "rgbt_stem", "audio": "rgbt_stem", "thermal": "rgbt_stem", "depth": "depth_stem",
               "imu": "imu_stem"}
_HEAD_PROJ_INDEX = {"imu": 3}  # ImageBind's IMU head has a Dropout before its Linear


def imagebind_key(modality: str, key: str) -> str:
    """Inverse of :func:`map_key`: (ImageBind modality key, tower-relative anybind key) -> ImageBind key."""
    pre, trunk, head = (f"modality_preprocessors.{modality}", f"modality_trunks.{modality}",
                        f"modality_heads.{modality}")
    parts = key.split(".")
    if key == "stem.proj.weight":
        return f"{pre}.rgbt_stem.proj.1.weight" if modality == "vision" else f"{pre}.{_STEM_NAMES[modality]}.proj.weight"
    if parts[:2] == ["stem", "norm"]:
        return f"{pre}.{_STEM_NAMES[modality]}.norm_layer.{parts[2]}"
    if parts[:2] == ["stem", "norm_pre"]:
        return f"{trunk}.pre_transformer_layer.0.{parts[2]}"
    if key == "stem.pos_embed":
        return f"{pre}.pos_embed" if modality in ("text", "imu") else f"{pre}.pos_embedding_helper.pos_embed"
    if key in ("stem.cls_token", "stem.token_embedding.weight"):
        return f"{pre}.{key[5:]}"
    if parts[:2] == ["trunk", "blocks"]:
        i, rest = parts[2], parts[3:]
        renames = {("attn", "qkv"): ["attn", f"in_proj_{rest[-1]}"], ("attn", "proj"): ["attn", "out_proj", rest[-1]],
                   ("norm1",): ["norm_1", rest[-1]], ("norm2",): ["norm_2", rest[-1]]}
        for prefix, new_rest in renames.items():
            if tuple(rest[: len(prefix)]) == prefix:
                rest = new_rest
                break
        return f"{trunk}.blocks.{i}.{'.'.join(rest)}"
    if parts[:2] == ["head", "norm"]:
        return f"{head}.proj.0.{parts[2]}" if modality == "text" else f"{head}.0.{parts[2]}"
    if key == "head.proj.weight":
        return f"{head}.proj.1.weight" if modality == "text" else f"{head}.{_HEAD_PROJ_INDEX.get(modality, 2)}.weight"
    if key == "log_logit_scale":
        return f"modality_postprocessors.{modality}.1.log_logit_scale"
    raise CheckpointError(f"anybind key {key!r} of the {modality} tower has no ImageBind counterpart")


def to_imagebind_state_dict(towers: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """ImageBind-keyed state dict of anybind ``imagebind_*`` towers keyed by anybind modality (``video`` skipped);
    the text tower's causal mask is added. Tensors are shared, not copied."""
    by_anybind = {v: k for k, v in MODALITIES.items()}
    out: dict[str, torch.Tensor] = {}
    for m, tower in towers.items():
        if m == "video":
            continue
        if m not in by_anybind:
            raise CheckpointError(f"ImageBind has no {m!r} modality (has {list(by_anybind)})")
        for key, value in tower.state_dict().items():
            out[imagebind_key(by_anybind[m], key)] = value
        if m == "text":
            n = tower.stem.pos_embed.shape[1]
            out[_TEXT_MASK] = torch.full((n, n), float("-inf")).triu(1)
    return out


def split_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Group an ImageBind state dict by ImageBind modality, with anybind tower-relative keys."""
    towers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key == _TEXT_MASK:
            _check_causal_mask(value)
            continue
        modality, name = map_key(key)
        if modality not in MODALITIES:
            raise CheckpointError(f"ImageBind checkpoint key {key!r} names an unknown modality {modality!r}")
        towers.setdefault(modality, {})[name] = value
    return towers


def _check_causal_mask(mask: torch.Tensor) -> None:
    n = mask.shape[-1]
    expected = torch.full((n, n), float("-inf")).triu(1)
    if mask.shape != (n, n) or not torch.equal(mask.float(), expected):
        raise CheckpointError("ImageBind text mask is not the causal mask anybind's causal attention implements")


def _blocks(sd: Mapping[str, torch.Tensor]) -> int:
    return len({k.split(".")[2] for k in sd if k.startswith("trunk.blocks.")})


def _isqrt_exact(n: int, what: str) -> int:
    r = math.isqrt(n)
    if r * r != n:
        raise CheckpointError(f"ImageBind {what}: {n} patches do not form a square grid")
    return r


def infer_tower(imagebind_key: str, sd: Mapping[str, torch.Tensor], num_heads: int) -> tuple[str, dict[str, Any]]:
    """Registry name and builder kwargs that rebuild one ImageBind tower from its (mapped) tensors' shapes."""
    m = imagebind_key
    need = ["head.proj.weight", "stem.pos_embed", "trunk.blocks.0.mlp.fc1.weight"]
    missing = [k for k in need if k not in sd]
    if missing:
        raise CheckpointError(f"ImageBind {m} tower is incomplete: missing {missing}")
    embed_dim, width = sd["head.proj.weight"].shape
    kw: dict[str, Any] = {"width": int(width), "depth": _blocks(sd), "num_heads": int(num_heads),
                          "embed_dim": int(embed_dim),
                          "mlp_ratio": sd["trunk.blocks.0.mlp.fc1.weight"].shape[0] / width}
    tokens = sd["stem.pos_embed"].shape[1]
    if m == "vision":
        _, _, tubelet, patch, _ = sd["stem.proj.weight"].shape
        side = _isqrt_exact(tokens - 1, "vision positions")
        kw.update(image_size=int(side * patch), patch_size=int(patch), frames=int(tubelet), tubelet=int(tubelet),
                  pre_norm="stem.norm_pre.weight" in sd)
        return "imagebind_vision", kw
    if m == "text":
        vocab, _ = sd["stem.token_embedding.weight"].shape
        kw.update(vocab_size=int(vocab), context_length=int(tokens))
    elif m == "audio":
        kernel = sd["stem.proj.weight"].shape[-1]
        kw.update(kernel_size=int(kernel))
        grid = ((128 - kernel) // 10 + 1) * ((204 - kernel) // 10 + 1)
        if grid + 1 != tokens:
            raise CheckpointError(f"ImageBind audio positions ({tokens}) do not match 128 mel bins x 204 frames "
                                  f"with kernel {kernel} stride 10 ({grid + 1} tokens)")
    elif m in ("depth", "thermal"):
        kernel = sd["stem.proj.weight"].shape[-1]
        kw.update(kernel_size=int(kernel), image_size=int(_isqrt_exact(tokens - 1, f"{m} positions") * kernel))
    elif m == "imu":
        features = sd["stem.proj.weight"].shape[1]
        if features % 6:
            raise CheckpointError(f"ImageBind imu projection takes {features} features, not a multiple of 6 channels")
        window = features // 6
        kw.update(channels=6, window=int(window), length=int((tokens - 1) * window))
    if "log_logit_scale" in sd:
        kw["logit_scale"] = float(sd["log_logit_scale"])
    if m in ("audio", "depth", "thermal", "imu") and "trunk.blocks.0.attn.bias_k" not in sd:
        raise CheckpointError(f"ImageBind {m} tower has no bias_k/bias_v; anybind's imagebind_{m} expects them")
    return f"imagebind_{m}", kw


def _read_state_dict(path: str | Path, mmap: bool) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ImageBind checkpoint {path} does not exist")
    def read(use_mmap: bool):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
        except Exception as exc:
            if use_mmap and "mmap" in str(exc):  # a legacy (non-zip) file: read it into memory instead
                log.warning("%s cannot be memory-mapped; reading it into memory", path)
                return read(False)
            raise CheckpointError(f"ImageBind checkpoint {path} could not be read: {torch_load_problem(exc)}") from exc

    state = read(mmap)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict) and len(state) <= 4:
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not an ImageBind state dict (expected a dict of tensors)")
    return state


class ImageBindModel(AnyBindModel):
    """anybind towers holding ImageBind weights. ``encoders`` holds ``image`` (and a ``video`` tower sharing its
    weights), ``text``, ``audio``, ``depth``, ``thermal``, ``imu`` (those present in the checkpoint)."""

    def forward_imagebind(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """ImageBind's forward: ``{"vision": (B,3,H,W) or (B,S,3,T,H,W), "text": (B,77) ids, "audio":
        (B,S,1,128,204), "depth"/"thermal": (B,1,H,W), "imu": (B,6,2000)}`` -> ``{key: (B, D)}``.

        Outputs are L2-normalized, then (all but vision) multiplied by ``min(exp(log_logit_scale), 100)``; inputs
        with 5 or more dimensions are ``(B, S, ...)`` clips whose outputs are averaged over S (not re-normalized).
        """
        out = {}
        for key, x in inputs.items():
            if key not in MODALITIES or MODALITIES[key] not in self.encoders:
                raise KeyError(f"no ImageBind tower for input {key!r} (has: {', '.join(self.imagebind_keys)})")
            out[key] = imagebind_forward(self.encoders[MODALITIES[key]], x)
        return out

    @property
    def imagebind_keys(self) -> list[str]:
        return [k for k, m in MODALITIES.items() if m in self.encoders]

    def embed(self, inputs: Mapping[str, Any], **kwargs) -> dict[str, torch.Tensor]:
        """:meth:`AnyBindModel.embed` with ImageBind's preprocessing; ``vision`` is accepted for ``image``.
        Returns unit vectors (ImageBind's outputs divided by their norm)."""
        renamed = {("image" if k == "vision" else k): v for k, v in inputs.items()}
        out = super().embed(renamed, **kwargs)
        return {k: out["image" if k == "vision" else k] for k in inputs}

    def to_anybind(self, *, video: bool = False) -> AnyBindModel:
        """A plain :class:`AnyBindModel` over the same towers (shares tensors). The ``video`` tower duplicates the
        vision weights when saved, so it is left out unless asked for."""
        towers = {m: e for m, e in self.encoders.items() if video or m != "video"}
        return AnyBindModel(towers, self.embed_dim)


def imagebind_forward(tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One ImageBind modality: stem -> trunk -> head -> L2 normalize -> logit scale; clip mean for ndim >= 5."""
    clips = x.ndim >= 5
    if clips:
        B, S = x.shape[:2]
        x = x.flatten(0, 1)
    z = F.normalize(tower.forward_head(tower.forward_features(x), x), dim=-1)
    scale = getattr(tower, "log_logit_scale", None)
    if scale is not None:
        z = z * torch.clamp(scale.exp(), max=MAX_LOGIT_SCALE)
    if clips:
        z = z.view(B, S, -1).mean(dim=1)
    return z


def _tie_video(image: nn.Module, video_name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """A ``video`` tower that shares every tensor of the ``image`` tower (built empty on the meta device)."""
    with torch.device("meta"):
        video = create_encoder(video_name, **kwargs)
    video.stem, video.trunk, video.head = image.stem, image.trunk, image.head
    return video


def load_imagebind(
    path: str | Path | Mapping[str, torch.Tensor],
    num_heads: Mapping[str, int] | None = None,
    *,
    video: bool = True,
    mmap: bool = True,
    device: str | torch.device = "cpu",
) -> ImageBindModel:
    """Build an :class:`ImageBindModel` from an ImageBind checkpoint file (or its state dict).

    ``num_heads`` overrides the attention heads per ImageBind modality (defaults: the released huge model's
    ``DEFAULT_NUM_HEADS``); every other size comes from the tensor shapes. With ``mmap`` the checkpoint's tensors
    are used in place from the memory-mapped file (no copy). ``video`` adds a ``video`` tower tied to ``image``.
    """
    heads = {**DEFAULT_NUM_HEADS, **(num_heads or {})}
    unknown = set(heads) - set(DEFAULT_NUM_HEADS)
    if unknown:
        raise ValueError(f"num_heads has unknown ImageBind modalities {sorted(unknown)}; use {list(DEFAULT_NUM_HEADS)}")
    state = dict(path) if isinstance(path, Mapping) else _read_state_dict(path, mmap)
    source = "<state dict>" if isinstance(path, Mapping) else str(path)
    towers: dict[str, nn.Module] = {}
    for key, sd in split_state_dict(state).items():
        name, kwargs = infer_tower(key, sd, heads[key])
        if kwargs["width"] % kwargs["num_heads"]:
            raise CheckpointError(f"ImageBind {key} width {kwargs['width']} is not divisible by "
                                  f"num_heads={kwargs['num_heads']}; pass the checkpoint's head count")
        with torch.device("meta"):
            tower = create_encoder(name, **kwargs)
        try:
            tower.load_state_dict(sd, strict=True, assign=True)
        except RuntimeError as exc:
            raise CheckpointError(f"ImageBind {key} tower in {source} does not match {name}: {exc}") from exc
        towers[MODALITIES[key]] = tower
    if not towers:
        raise CheckpointError(f"{source} holds no ImageBind tower")
    if video and "image" in towers:
        kw = dict(towers["image"].build_kwargs)
        towers["video"] = _tie_video(towers["image"], "imagebind_video", kw)
    dims = {t.embed_dim for t in towers.values()}
    if len(dims) != 1:
        raise CheckpointError(f"ImageBind towers disagree on the output size: { {m: t.embed_dim for m, t in towers.items()} }")
    model = ImageBindModel(towers, dims.pop())
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise CheckpointError(f"{source} does not provide {leftover[:5]}")
    return model.to(device).eval()
