"""bench/quality.py with every compressor starting as mean pooling (an experiment, not a library option).

MemoryCompressor's strided convolution is drawn as usual (so every other weight is drawn as in a run with the
seed's random compressor), then set so that each compressed entry is the mean of the compressed_mem_factor keys
(or values) it stands for: weight[c, c mod dim_head, :] = 1 / factor, bias 0. Training moves it from there.

    python bench/results/2026-12-01_cpu_9b3543a/mean_init_quality.py FLAGS...   (bench/quality.py's flags)
"""
import os
import sys

import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
sys.path.insert(0, os.path.join(REPO, "bench"))
sys.path.insert(0, REPO)
from block_recurrent_transformer_pytorch import memory  # noqa: E402

_drawn = memory.MemoryCompressor.__init__


def _mean_pooling_init(self, config):
    _drawn(self, config)
    conv, d = self.conv, config.dim_head
    with torch.no_grad():
        conv.weight.zero_()
        channels = torch.arange(conv.weight.shape[0])
        conv.weight[channels, channels % d, :] = 1.0 / config.compressed_mem_factor
        conv.bias.zero_()


memory.MemoryCompressor.__init__ = _mean_pooling_init

import quality  # noqa: E402

if __name__ == "__main__":
    quality.main(sys.argv[1:])
