"""Embedding a manifest for evaluation, per modality, through the one embedding loop (:mod:`anybind.embedding`)."""

from __future__ import annotations

from typing import Sequence

from ..embedding import Autocast

import torch


@torch.no_grad()
def embed_manifest(
    model,
    manifest,
    modalities: Sequence[str] | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    *,
    match_key: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    autocast: Autocast = False,
    errors: list | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    """Embed every sample of ``manifest`` (a path or a :class:`~anybind.data.manifest.Manifest`) per modality.

    Returns ``(embeddings, keys)``: modality -> ``(N_m, D)`` float32 unit vectors on the CPU, and modality -> the
    match key of each row (see :meth:`Sample.key`). Samples that fail to load are skipped (appended to ``errors``
    when a list is given). ``modalities`` defaults to every modality of the model that the manifest has.
    """
    from ..data.dataset import ManifestDataset
    from ..data.manifest import Manifest, load_manifest
    from ..embedding import encode_batches, make_loader

    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    if split is not None or limit is not None:
        manifest = manifest.select(split, limit=limit)
    mods = [m for m in (modalities or model.modalities) if m in manifest.modalities()]
    encoders = getattr(model, "encoders", model)
    device = next(iter(encoders.parameters())).device
    ds = ManifestDataset(manifest, {m: encoders[m].input_contract for m in mods})
    was_training = model.training
    model.eval()
    embeddings, keys = {}, {}
    try:
        for m in mods:
            items = [(i, (m,), (m,)) for i in manifest.indices_with(m)]
            batches = [items[k:k + batch_size] for k in range(0, len(items), batch_size)]
            loader = make_loader(ds, collate_fn=ds.collate, batch_sampler=batches, num_workers=num_workers,
                                 device=device)
            chunks, row_keys = [], []
            tagged = ((batch, batch["inputs"].get(m)) for batch in loader)
            for batch, z in encode_batches(encoders[m], tagged, device=device, autocast=autocast):
                if errors is not None:
                    errors.extend(batch["errors"])
                if z is None:
                    continue
                chunks.append(z)
                row_keys += [manifest[int(i)].key(match_key) for i, ok in zip(batch["index"], batch["valid"][m]) if ok]
            if chunks:
                embeddings[m], keys[m] = torch.cat(chunks), row_keys
    finally:
        model.train(was_training)
    return embeddings, keys
