"""Sharded data parallelism (FSDP2) as a Lightning strategy: ``ModelParallelStrategy`` with every process in
one data-parallel group.

Lightning's ``ModelParallelStrategy`` sizes its "auto" data-parallel dimension by the number of nodes (it
expects tensor parallelism inside a node); for pure sharding the data-parallel size is the world size, which
is known only once the processes exist. The policy's ``configure_model`` does the sharding (FSDP2's
``fully_shard`` on each transformer block, then the model). Unlike Lightning's ``FSDPStrategy`` (FSDP1, GPU
only), this runs on CPU processes too, so the sharded path is tested without a GPU.
"""

from __future__ import annotations

from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn


class ShardedDataParallel(ModelParallelStrategy):
    def __init__(self, save_distributed_checkpoint: bool = True, **kwargs):
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint, **kwargs)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.world_size  # before the device mesh is built from it
        super().setup_environment()


def parameters_at_rest(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's parameters by name, sharded if it is sharded: FSDP2 leaves the root module's parameters
    gathered after a forward, and copies to or from snapshots must see one layout."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    return dict(model.named_parameters())
