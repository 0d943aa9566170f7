"""Loading a model of the seed package (lucidrains' block-recurrent-transformer-pytorch 0.4.4).

``BlockRecurrentTransformer.from_seed(state_dict, **seed_keywords)`` builds the model that computes
what the seed's model with those weights computes (tested against fixtures made with the seed).
The parameters map almost one to one; what differs:

- the seed's state update is ``state_out_to_gate(to_state_out(...))``: two linear maps, the second
  with a bias. They are folded into one (``to_update``, with ``state_update_bias=True``);
- the seed's gate is ``sigmoid(beta) * z + (1 - sigmoid(beta)) * state``, ours
  ``state * g + z * (1 - g)`` with ``g = sigmoid(bias)``: bias = -beta;
- the seed computes a qk-rmsnorm temperature but never applies it: its qk-normed attention scores
  are scaled by dim_head ** -0.5, which the config reproduces with ``qk_rmsnorm_scale=dim_head ** -0.5``;
- the seed orders its states (and a layer's state reads) by layer, whatever the order of
  ``recurrent_layers``: the config lists the recurrent layers sorted, with their read layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

import torch
from torch import Tensor, nn

from .config import BlockRecurrentConfig, coerce_seed_values

# the seed's BlockRecurrentTransformer constructor, all keyword-only
SEED_KEYWORDS = ("num_tokens", "dim", "depth", "dim_head", "heads", "all_layers_qk_rmsnorm", "ff_mult", "max_seq_len",
                 "block_width", "recurrent_layers", "read_recurrent_layers", "num_state_vectors", "ignore_index",
                 "use_flash_attn", "use_compressed_mem", "compressed_mem_factor")


def seed_config(**keywords) -> BlockRecurrentConfig:
    """The config of the model the seed's constructor builds from these keywords."""
    unknown = sorted(set(keywords) - set(SEED_KEYWORDS))
    if unknown:
        raise TypeError(f"from_seed takes the seed 0.4.4 constructor's keywords {SEED_KEYWORDS}; got {unknown}")
    missing = [name for name in ("num_tokens", "dim", "depth") if name not in keywords]
    if missing:
        raise TypeError(f"from_seed needs the seed model's constructor keywords; missing {missing}")
    keywords = {name: coerce_seed_values(name, value) for name, value in keywords.items()}
    write, read = keywords.get("recurrent_layers"), keywords.get("read_recurrent_layers")
    if isinstance(write, tuple) and (read is None or (isinstance(read, tuple) and len(read) == len(write))):
        read = write if read is None else read
        try:
            pairs = sorted(zip(write, read))
        except TypeError:  # not ints: the config's check says so
            pairs = list(zip(write, read))
        keywords["recurrent_layers"] = tuple(w for w, _ in pairs)
        keywords["read_recurrent_layers"] = tuple(r for _, r in pairs)
    dim_head = keywords.get("dim_head", 64)
    scale = dim_head ** -0.5 if isinstance(dim_head, int) and dim_head > 0 else 8.0
    return BlockRecurrentConfig(**keywords, qk_rmsnorm_scale=scale, state_update_bias=True)


def _unwrapped(key: str) -> str:
    """A state-dict key without DistributedDataParallel's ``module.`` or torch.compile's ``_orig_mod.``."""
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def convert_state_dict(state_dict: Union[Mapping[str, Tensor], nn.Module], config: BlockRecurrentConfig) -> dict:
    """The seed model's state dict as this package's, for the config ``seed_config`` made."""
    if isinstance(state_dict, nn.Module):
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"from_seed takes the seed model's state_dict(), got {type(state_dict).__name__}")
    # a state dict saved from a DDP-wrapped or compiled model names every key under a prefix
    source = {_unwrapped(key): value for key, value in state_dict.items()}
    out: dict[str, Tensor] = {}

    def take(key: str) -> Tensor:
        if key not in source:
            raise ValueError(f"the seed state dict lacks {key!r}: are the constructor keywords the seed model's?")
        return source.pop(key)

    def norm(key: str) -> Tensor:
        """A seed LayerNorm's gain; its bias is a buffer of zeros that ours does not have."""
        beta = take(f"{key}.beta")
        if beta.count_nonzero():
            raise ValueError(f"{key}.beta is not zero: this package's layer norms have no bias")
        return take(f"{key}.gamma")

    def gains(ours: str, seed: str) -> None:
        out[f"{ours}.qk_norm.q_gain"], out[f"{ours}.qk_norm.k_gain"] = take(f"{seed}.q_scale"), take(f"{seed}.k_scale")

    out["token_emb.weight"] = take("token_emb.weight")
    writes_at = {layer: i for i, layer in enumerate(config.recurrent_layers)}
    for index in range(config.depth):
        layer, p = index + 1, f"layers.{index}."
        out[p + "0.norm.weight"] = norm(p + "0.norm")
        out[p + "0.to_qkv.weight"] = torch.cat((take(p + "0.to_q.weight"), take(p + "0.to_kv.weight")))
        if config.qk_rmsnorm(layer):
            gains(p + "0.attend", p + "0.attn")
        out[p + "0.to_out.weight"] = take(p + "0.to_out.weight")
        out[p + "1.norm.weight"] = norm(p + "1.0")
        out[p + "1.proj_in.weight"] = take(p + "1.1.weight")
        out[p + "1.proj_out.weight"] = take(p + "1.3.weight")
        if layer not in writes_at:
            continue
        seed, ours = p + "0.state_container.", f"states.{writes_at[layer]}."
        out[ours + "init_state"] = take(seed + "init_state")
        out[ours + "state_ids"] = take(seed + "state_pos_ids")
        out[ours + "norm.weight"] = norm(seed + "state_norm")
        out[ours + "to_read_q.weight"] = take(seed + "q_to_state.weight")
        out[ours + "to_write_q.weight"] = torch.cat((take(seed + "state_to_q.weight"), take(seed + "q_from_state.weight")))
        out[ours + "to_kv.weight"] = take(seed + "state_to_kv.weight")
        for mine, theirs in (("read_attend", "to_state_cross_attn"), ("self_attend", "state_self_attn"),
                             ("cross_attend", "from_state_cross_attn")):
            gains(ours + mine, seed + theirs)
        # z = W_gate (W_out s) + b_gate: one linear map, folded in float64
        w_out, w_gate = take(seed + "to_state_out.weight"), take(seed + "state_out_to_gate.weight")
        out[ours + "to_update.weight"] = (w_gate.double() @ w_out.double()).to(w_out.dtype)
        out[ours + "to_update.bias"] = take(seed + "state_out_to_gate.bias")
        out[ours + "gate.bias"] = -take(seed + "learned_ema_beta")  # ours keeps sigmoid(b) of the old state
    if config.use_compressed_mem:
        # the seed: per layer, a Conv1d over [keys | values] channels with groups=2; ours: one Conv1d
        # whose groups are (layer, key/value) in that order
        convs = [f"mem_manager.layers.{index}.1.1" for index in range(config.depth)]
        out["compressor.conv.weight"] = torch.cat([take(c + ".weight") for c in convs])
        out["compressor.conv.bias"] = torch.cat([take(c + ".bias") for c in convs])
    out["norm_out.weight"] = norm("to_logits.0")
    out["to_logits.weight"] = take("to_logits.1.weight")
    if source:
        raise ValueError(f"the seed state dict holds entries this configuration has no place for: {sorted(source)}; "
                         f"are the constructor keywords the seed model's?")
    return out
