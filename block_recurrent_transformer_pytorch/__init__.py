"""Block-Recurrent Transformer (Hutchins et al. 2022) in PyTorch."""

from .config import BlockRecurrentConfig
from .memory import Memories
from .pretrained import PretrainedError
from .train_step import TrainStep
from .transformer import BlockRecurrentTransformer
from .wrapper import RecurrentTrainerWrapper

__all__ = ["BlockRecurrentConfig", "BlockRecurrentTransformer", "Memories", "PretrainedError", "RecurrentTrainerWrapper", "TrainStep"]
