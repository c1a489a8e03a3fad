"""LoRA adapters on any tower, through ``peft`` (Hu et al., https://arxiv.org/abs/2106.09685).

:func:`add_lora` injects adapters into a tower's ``nn.Linear`` layers in place (``peft.inject_adapter_in_model``)
and records what it did in ``tower.lora_spec``; a saved model keeps the adapters and that spec, so
:func:`anybind.load` re-injects them before the weights load. :func:`merge_lora` folds the adapters into plain
``nn.Linear`` weights (for export: the merged tower embeds like the adapted one).

Default targets: the ``nn.Linear`` layers inside the tower's transformer blocks (attention and MLP), found as the
longest ``nn.ModuleList`` of the tower (``trunk.blocks``, BERT's ``encoder.layer``, ...) unless the tower
defines ``blocks()``.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

INSTALL_HINT = "LoRA needs peft: pip install anybind[lora]"


def blocks_of(tower: nn.Module) -> nn.ModuleList:
    """The tower's sequence of transformer blocks: ``tower.blocks()`` when defined, else its longest ModuleList."""
    if callable(getattr(tower, "blocks", None)):
        return tower.blocks()
    lists = [m for m in tower.modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError(f"the {getattr(tower, 'modality', '?')} tower ({type(tower).__name__}) has no block list "
                         "(nn.ModuleList); give tune.lora.targets explicitly or define blocks()")
    return max(lists, key=len)


def linear_names(tower: nn.Module) -> list[str]:
    return [n for n, m in tower.named_modules() if isinstance(m, nn.Linear)]


def resolve_targets(tower: nn.Module, targets: Sequence[str] | None) -> list[str]:
    """Full names of the Linear layers to adapt. A target matches a layer's full name or its last dotted parts
    (``"qkv"``, ``"attention.self.query"``); a target that matches nothing raises, listing what exists."""
    modality = getattr(tower, "modality", "?")
    if targets is None:
        blocks = blocks_of(tower)
        in_blocks = {id(m) for m in blocks.modules()}
        names = [n for n, m in tower.named_modules() if isinstance(m, nn.Linear) and id(m) in in_blocks]
        if not names:
            raise ValueError(f"the {modality} tower's blocks hold no nn.Linear layer for LoRA; give tune.lora.targets")
        return names
    if isinstance(targets, str):
        targets = [targets]
    known = linear_names(tower)
    out: list[str] = []
    for t in targets:
        hits = [n for n in known if n == t or n.endswith("." + t)]
        if not hits:
            leaves = sorted({n.rsplit(".", 1)[-1] for n in known})
            raise ValueError(f"tune.lora.targets: {t!r} matches no nn.Linear layer of the {modality} tower "
                             f"({type(tower).__name__}); its Linear layers end in: {', '.join(leaves) or 'none'}")
        out += [h for h in hits if h not in out]
    return out


def add_lora(tower: nn.Module, *, rank: int = 8, alpha: float = 16, dropout: float = 0.0,
             targets: Sequence[str] | None = None) -> list[str]:
    """Inject LoRA adapters into ``tower`` (in place); freeze everything else; returns the adapted layer names.

    The tower's own projection into the shared space (``proj`` / ``head``, when present) stays trainable.
    """
    try:
        import peft
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    if rank <= 0:
        raise ValueError(f"tune.lora.rank must be positive, got {rank}")
    names = resolve_targets(tower, targets)
    tower.requires_grad_(False)
    config = peft.LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=float(dropout), target_modules=names)
    peft.inject_adapter_in_model(config, tower)
    for n, p in tower.named_parameters():
        if ".lora_" in n or n.split(".", 1)[0] in ("proj", "head"):
            p.requires_grad_(True)
    tower.lora_spec = {"rank": int(rank), "alpha": float(alpha), "dropout": float(dropout), "targets": names}
    return names


def has_lora(module: nn.Module) -> bool:
    return any(type(m).__module__.startswith("peft.") for m in module.modules())


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every LoRA adapter under ``module`` into its base layer and remove the adapters (in place)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(n, m) for n, m in module.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in layers:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent_name) if parent_name else module, child, layer.get_base_layer())
    for m in module.modules():
        if getattr(m, "lora_spec", None) is not None:
            m.lora_spec = None
    return module


def lora_spec(tower: nn.Module) -> dict[str, Any] | None:
    return getattr(tower, "lora_spec", None)
