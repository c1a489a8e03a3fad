"""Worker for test_losses.py: run by ``torchrun --nproc_per_node=2`` (gloo, CPU).

Each rank takes its contiguous shard of one global batch, computes the contrastive loss through DDP (features
gathered with gradient, local loss) and rank 0 writes the averaged loss and the DDP-synchronized gradients.
The test computes the same numbers in one process on the whole batch and compares.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import nn

from anybind.losses import ContrastiveLoss

MODALITIES = ("image", "audio", "text")
GLOBAL_BATCH, IN_DIM, EMBED = 8, 6, 5


class Binder(nn.Module):
    """One linear 'encoder' per modality plus the loss: the smallest module with the trainer's structure."""

    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.ModuleDict({m: nn.Linear(IN_DIM, EMBED) for m in MODALITIES})
        self.loss = ContrastiveLoss([("image", "audio"), ("image", "text")], kind=kind,
                                    weights={"image-text": 0.5}, init_temperature=0.5)

    def forward(self, inputs, valid):
        feats = {m: F.normalize(self.proj[m](x), dim=-1) for m, x in inputs.items()}
        return self.loss(feats, valid)


def global_batch():
    g = torch.Generator().manual_seed(1)
    inputs = {m: torch.randn(GLOBAL_BATCH, IN_DIM, generator=g) for m in MODALITIES}
    valid = {m: torch.ones(GLOBAL_BATCH, dtype=torch.bool) for m in MODALITIES}
    valid["audio"][[1, 6]] = False  # missing audio on both ranks' shards
    valid["text"][[0, 1, 2, 3]] = False  # rank 0 has no image-text row at all
    return inputs, valid


def main(out_path: str) -> None:
    torch_dist.init_process_group("gloo")
    rank, world = torch_dist.get_rank(), torch_dist.get_world_size()
    per = GLOBAL_BATCH // world
    inputs, valid = global_batch()
    shard = slice(rank * per, (rank + 1) * per)
    tensors = {}
    for kind in ("infonce", "siglip"):
        model = nn.parallel.DistributedDataParallel(Binder(kind))
        out = model({m: x[shard] for m, x in inputs.items()}, {m: v[shard] for m, v in valid.items()})
        out.loss.backward()
        loss = out.loss.detach().clone()
        torch_dist.all_reduce(loss)
        tensors[f"{kind}.loss"] = (loss / world).reshape(1)
        tensors.update({f"{kind}.grad.{n}": p.grad.contiguous() for n, p in model.module.named_parameters()})
    del model, out  # DDP's reducer goes before the process group, not at interpreter exit after it
    if rank == 0:
        from safetensors.torch import save_file

        save_file(tensors, out_path)
    torch_dist.barrier()
    torch_dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
