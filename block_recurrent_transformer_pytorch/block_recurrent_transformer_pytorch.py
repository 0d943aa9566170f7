"""The seed package's module path: ``from block_recurrent_transformer_pytorch.block_recurrent_transformer_pytorch
import BlockRecurrentTransformer, RecurrentTrainerWrapper`` keeps working."""

from .transformer import BlockRecurrentTransformer
from .wrapper import RecurrentTrainerWrapper

__all__ = ["BlockRecurrentTransformer", "RecurrentTrainerWrapper"]
