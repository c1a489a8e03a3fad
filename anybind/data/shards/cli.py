"""``anybind-shard input=<manifest|folder> out=<folder>`` (Hydra: ``conf/shard.yaml``, schema :class:`ShardConfig`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

log = logging.getLogger("anybind.data.shards")


@dataclass
class ShardConfig:
    input: str = MISSING  # a manifest (.jsonl / .csv) or a folder
    out: str = MISSING  # the shard folder
    max_size_mb: float = 256.0
    max_count: int = 10_000
    modalities: Optional[list[str]] = None
    split: Optional[str] = None
    check: bool = True
    overwrite: bool = False
    progress: bool = True


def run_shard(cfg) -> dict:
    """Shard per a composed ``conf/shard.yaml`` (or a plain dict with the same keys); returns the index."""
    from omegaconf import DictConfig, OmegaConf

    from .writer import describe, write_shards

    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    index = write_shards(c["input"], c["out"], max_size=int(float(c.get("max_size_mb", 256)) * 2**20),
                         max_count=int(c.get("max_count", 10_000)), modalities=c.get("modalities"),
                         split=c.get("split"), check=c.get("check", True), overwrite=c.get("overwrite", False),
                         progress=c.get("progress", True))
    print(describe(index))
    print(f"wrote {c['out']}/shards.json")
    return index


def main() -> None:
    import hydra
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="shard_schema", node=ShardConfig)

    @hydra.main(version_base=None, config_path="pkg://conf", config_name="shard")
    def app(cfg) -> None:
        from ...console import user_errors

        with user_errors("anybind-shard"):  # a user error: one line, exit 2 (anybind.console)
            run_shard(cfg)

    app()


if __name__ == "__main__":
    main()
