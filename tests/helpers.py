"""Small models and inputs shared by the tests."""

from __future__ import annotations

from typing import Optional

import torch

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer

VOCAB = 64


def small_model(seed: int = 0, **overrides) -> BlockRecurrentTransformer:
    """A tiny fp32 model whose every component is live: 3 layers, blocks of 8, 6 state vectors."""
    torch.manual_seed(seed)
    kwargs = dict(num_tokens=VOCAB, dim=32, depth=3, dim_head=8, heads=4, max_seq_len=16, block_width=8,
                  num_state_vectors=6, recurrent_layers=(2,))
    kwargs.update(overrides)
    return BlockRecurrentTransformer(**kwargs).eval()


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=g)


def run_segments(model: BlockRecurrentTransformer, x: torch.Tensor, seg: int, memories=None, states=None,
                 resets: Optional[dict[int, torch.Tensor]] = None):
    """Logits of x run segment by segment, memories and states carried; also the final ones.
    resets: segment number -> the bool (batch,) ``reset`` passed with that segment."""
    outs = []
    for i, chunk in enumerate(x.split(seg, dim=1)):
        reset = None if resets is None else resets.get(i)
        logits, memories, states = model(chunk, xl_memories=memories, states=states, reset=reset)
        outs.append(logits)
    return torch.cat(outs, dim=1), memories, states


def decode_each_step(decoder, x: torch.Tensor, prefill: int) -> torch.Tensor:
    """Logits after x[:, :prefill] and then after every later token, fed one at a time: (b, n - prefill + 1, vocab)."""
    with torch.no_grad():
        got = [decoder.append(x[:, :prefill])] + [decoder.append(x[:, t:t + 1]) for t in range(prefill, x.shape[1])]
    return torch.stack(got, dim=1)
