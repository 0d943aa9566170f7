"""bench/fsdp_check.py with FSDP2's pre-forward hook as torch 2.11 and earlier have it.

There, in an activation-checkpointing recomputation during the backward (the unit's state is
PRE_BACKWARD), the hook returns at once without gathering the unit's weights (pytorch issues 153354,
187437); later torch gathers them. train.py --fsdp must work on both: the GPU machine has torch 2.11.
tests/test_fsdp.py runs the sharded gradient check with activation checkpointing through this script
(torchrun tests/fsdp_check_torch211.py FLAGS: fsdp_check.py's flags).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from torch.distributed.fsdp._fully_shard._fsdp_common import TrainingState
from torch.distributed.fsdp._fully_shard._fsdp_state import FSDPState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import fsdp_check  # noqa: E402

later_pre_forward = FSDPState._pre_forward


def pre_forward_before_212(self: FSDPState, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """FSDPState._pre_forward of torch <= 2.11: nothing gathered during a recomputation in the backward."""
    if self._training_state == TrainingState.PRE_BACKWARD:
        return args, kwargs
    return later_pre_forward(self, module, args, kwargs)


if __name__ == "__main__":
    FSDPState._pre_forward = pre_forward_before_212
    sys.exit(fsdp_check.main())
