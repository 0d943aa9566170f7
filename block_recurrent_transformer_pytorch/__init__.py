"""Block-Recurrent Transformer (Hutchins et al. 2022) in PyTorch."""

from .config import BlockRecurrentConfig
from .memory import Memories
from .train_step import TrainStep
from .transformer import BlockRecurrentTransformer
from .wrapper import RecurrentTrainerWrapper

__all__ = ["BlockRecurrentConfig", "BlockRecurrentTransformer", "Memories", "RecurrentTrainerWrapper", "TrainStep"]
