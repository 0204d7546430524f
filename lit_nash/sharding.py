"""Sharded data parallelism (FSDP2) as a Lightning strategy: ``ModelParallelStrategy`` with every process in
one data-parallel group.

Lightning's ``ModelParallelStrategy`` sizes its "auto" data-parallel dimension by the number of nodes (it
expects tensor parallelism inside a node); for pure sharding the data-parallel size is the world size, which
is known only once the processes exist. The policy's ``configure_model`` does the sharding (FSDP2's
``fully_shard`` on each transformer block, then the model). Unlike Lightning's ``FSDPStrategy`` (FSDP1, GPU
only), this runs on CPU processes too, so the sharded path is tested without a GPU.

With ``save_distributed_checkpoint=true`` a checkpoint is a folder that every rank writes its shard into,
and Lightning writes it in place (its ``CheckpointIO``, lit_nash's atomic writer, is bypassed): a kill
mid-save would leave a mix of the old and the new shards. Here every rank writes into a temporary sibling
``.<name>.tmp-<rank 0's pid>``; after a barrier (all shards written) rank 0 swaps it in for the previous
folder atomically (``lit_nash.checkpointing.replace_path``), and the ranks wait for the swap. A kill or an
error on any rank before the swap leaves the previous checkpoint as it was; the next run's start removes
the dead writer's temporary folder (``remove_stale_temporaries``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy


class ShardedDataParallel(ModelParallelStrategy):
    def __init__(self, save_distributed_checkpoint: bool = True, **kwargs):
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint, **kwargs)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.world_size  # before the device mesh is built from it
        super().setup_environment()

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options: Any | None = None) -> None:
        if not self._save_distributed_checkpoint or storage_options is not None or "://" in str(filepath):
            return super().save_checkpoint(checkpoint, filepath, storage_options)  # one file: the atomic writer
        from lit_nash.checkpointing import CheckpointWriteError, _remove, config_containers, replace_path

        if found := config_containers(checkpoint):  # plain types only, or eval and resume cannot read it
            raise TypeError(f"a checkpoint must hold plain Python values and tensors, but it holds OmegaConf "
                            f"containers at {', '.join(found[:5])}: convert with OmegaConf.to_container")
        path = Path(self.broadcast(str(filepath)))  # rank 0's path and temporary name for every rank
        tmp = Path(self.broadcast(str(path.with_name(f".{path.name}.tmp-{os.getpid()}"))))
        try:
            if self.global_rank == 0:
                path.parent.mkdir(parents=True, exist_ok=True)
                _remove(tmp)  # an earlier attempt of this process
            self.barrier("lit_nash.sharded_save.start")
            super().save_checkpoint(checkpoint, tmp)  # the shards of every rank, meta.pt from rank 0
            self.barrier("lit_nash.sharded_save.written")  # every rank's shard is complete
            if self.global_rank == 0:
                replace_path(tmp, path)
            self.barrier("lit_nash.sharded_save.swapped")  # no rank goes on (or reads it) before the swap
        except OSError as e:  # a full disk, a quota, a read-only folder: say which, and what is kept
            if self.global_rank == 0:
                _remove(tmp)
            raise CheckpointWriteError(path, e) from e


    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        # Lightning loads a sharded checkpoint's shards into the model's existing tensors, before any hook:
        # the snapshots it holds (taken during training, so not in a fresh model) must exist first
        path = Path(self.broadcast(str(checkpoint_path)))
        if path.is_dir() and self.lightning_module is not None:
            from torch.distributed.checkpoint import FileSystemReader

            head = "state_dict."
            keys = [k[len(head):] for k in FileSystemReader(str(path)).read_metadata().state_dict_metadata
                    if k.startswith(head)]
            self.lightning_module.on_load_checkpoint({"state_dict": dict.fromkeys(keys)})
        return super().load_checkpoint(path, weights_only)
