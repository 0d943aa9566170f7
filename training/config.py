"""The run's config (every flag of train.py) and the error a user can fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional

import torch

ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
ENWIK8_BYTES = 100_000_000

# the learning rate's curves after the warmup (training/optimizer.py's decay_factor)
SCHEDULES = ("cosine", "wsd", "constant")


def _opt(default: Any, help: str, choices: Optional[tuple[str, ...]] = None, metavar: Optional[str] = None) -> Any:
    """A config field with its command-line help text (and allowed values or a name for its value)."""
    return field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar})


@dataclass
class TrainConfig:
    """Everything a run depends on.

    The model, batch and dropout defaults are the seed package's enwik8 setup (and its 1e-4 rate);
    the optimisation adds AdamW, warmup then cosine decay (or --schedule's), and gradient clipping.
    """

    preset: Optional[str] = _opt(None, "start from a named set of flags (PRESETS in training/config.py), any flag "
                                       "passed overriding it (not on --resume or --eval-only: the checkpoint's "
                                       "flags stand): long-documents = the configuration measured best on long "
                                       "documents (bench/RESULTS.md)", choices=("long-documents",))
    # data and files
    data: Optional[str] = _opt(None, "train on this file of bytes instead of enwik8, split 90/5/5 by "
                                     "fraction (a .gz or single-member .zip is unpacked)", metavar="PATH")
    data_tokens: Optional[str] = _opt(None, "train on a token directory written by data/prepare.py, read by "
                                            "memory map (its meta.json gives --num-tokens)", metavar="DIR")
    init_from: Optional[str] = _opt(None, "start a new run (step 0, fresh optimizer) from the weights save_pretrained "
                                          "wrote in DIR, e.g. a run's out-dir/final; model flags default to its "
                                          "config.json and may not differ from it", metavar="DIR")
    data_dir: str = _opt("data", "where enwik8 is looked for and downloaded to", metavar="DIR")
    enwik8_url: str = _opt(ENWIK8_URL, "where enwik8.zip is downloaded from when data-dir has no copy", metavar="URL")
    out_dir: str = _opt("runs/enwik8", "checkpoint, metrics.jsonl, bpc.png and the final weights (final/) go here",
                        metavar="DIR")
    # model (byte-level: 256 tokens, unless --data-tokens says otherwise)
    num_tokens: Optional[int] = _opt(None, "vocabulary size (default: 256 bytes, or the --data-tokens directory's)")
    dim: int = _opt(512, "model width")
    depth: int = _opt(6, "number of layers")
    heads: int = _opt(8, "query heads")
    dim_head: int = _opt(64, "width of a head")
    kv_heads: int = _opt(1, "key/value heads (1: multi-query, as in the seed)")
    ff_mult: float = _opt(4.0, "feed-forward expansion")
    max_seq_len: int = _opt(1024, "tokens per segment (one forward call); memories and states carry across")
    block_width: int = _opt(512, "tokens per block: the unit of attention and of state updates")
    xl_memory_blocks: int = _opt(1, "blocks the XL memory holds: how many blocks back each block's attention reaches "
                                    "(1: the previous block, as the seed)")
    num_state_vectors: int = _opt(512, "recurrent state vectors per recurrent layer")
    recurrent_layers: Optional[tuple[int, ...]] = _opt(None, "layers (numbered from 1) that hold a recurrent state "
                                                             "(default: the middle layer, max(depth // 2, 1))")
    read_recurrent_layers: Optional[tuple[int, ...]] = _opt(None, "layer reading each state (default: its own)")
    gate_type: str = _opt("fixed", "state gate", choices=("fixed", "lstm"))
    all_layers_qk_rmsnorm: bool = _opt(False, "qk-rmsnorm in every layer, not only recurrent ones")
    use_compressed_mem: bool = _opt(False, "also keep compressed memories of older blocks")
    compressed_mem_factor: int = _opt(4, "compression factor of compressed memories")
    use_flash_attn: bool = _opt(True, "attention through torch SDPA (flash kernel on CUDA with bf16)")
    knn_layers: tuple[int, ...] = _opt((), "layers with kNN memory attention over a long-range store")
    knn_memory_size: int = _opt(262144, "entries per row in each kNN layer's store (a multiple of block-width)")
    knn_top_k: int = _opt(32, "entries each query retrieves (routed: each block)")
    knn_retrieval: str = _opt("exact", "kNN store retrieval", choices=("exact", "query_routed", "routed"))
    knn_route_groups: int = _opt(32, "query_routed: groups of 16 consecutive entries each query searches")
    qk_rmsnorm_scale: float = _opt(8.0, "attention temperature where queries and keys are rms-normalised")
    xpos_scale_base: int = _opt(512, "xpos length scale of the rotary positions")
    rotary_theta: float = _opt(10000.0, "rotary embedding base")
    rotary_dim: Optional[int] = _opt(None, "channels of each head that rotary positions rotate, the rest matching "
                                           "by content alone (default: all, as the seed; x-transformers: half)")
    memory_kv_from_inputs: bool = _opt(False, "the XL memory keeps each layer's inputs and norms and projects them to "
                                              "keys/values with the current weights (Transformer-XL's way: they learn "
                                              "from attention to memory), not the keys/values cached a block earlier")
    token_shift: bool = _opt(False, "half of each attention's input channels come from the token before (zeros at "
                                    "a block's start); measured worse in the long-documents preset")
    value_residual: bool = _opt(False, "every layer above the first mixes the first layer's values into its own "
                                       "(v = a * v + b * v_first, learned a and b; ResFormer's value residual)")
    unet_skips: bool = _opt(False, "the first half's layer outputs are added again, times learned weights, to the "
                                   "inputs of their mirror layers in the second half (U-net skips)")
    embedding_mixing: bool = _opt(False, "every layer above the first takes a * h + b * x0, the residual stream h "
                                         "mixed with the block's token embeddings x0 (learned a and b per layer, "
                                         "from 1 and 0)")
    attention_gate: bool = _opt(False, "each head's attention output times 2 * sigmoid(w . x), x the layer's normed "
                                       "input, w learned per head from zero (a head-wise output gate)")
    logit_softcap: Optional[float] = _opt(None, "soft-cap the output logits at this size, c * tanh(logits / c) "
                                                "(default: no cap, as the seed)")
    embedding_init_std: float = _opt(1.0, "standard deviation of the token embeddings' initial values (1.0: the "
                                          "seed's; 0.02 learns far faster, see --preset)")
    xl_memories_dropout: float = _opt(0.1, "chance a training segment starts without XL memories (a kNN store is kept)")
    state_dropout: float = _opt(0.1, "chance a training segment starts from the initial states")
    bptt_segments: int = _opt(1, "segments the gradient flows back through before memories and states "
                                 "are detached (truncated backprop through time)")
    activation_checkpointing: bool = _opt(False, "recompute block activations in the backward pass (less memory)")
    # optimisation; one step = batch_size * grad_accum * world_size samples of seq_len tokens
    seq_len: int = _opt(2048, "tokens per training sample, a multiple of max-seq-len (segments per sample)")
    batch_size: int = _opt(4, "samples per micro-batch, per GPU")
    grad_accum: int = _opt(4, "micro-batches accumulated per optimizer step")
    max_steps: int = _opt(100_000, "optimizer steps; also the length of the learning-rate schedule")
    learning_rate: float = _opt(1e-4, "peak learning rate (the seed's constant rate; see the schedule above)")
    min_lr: float = _opt(1e-5, "learning rate at the end of the decay (Muon's ends at the same share of "
                               "--muon-lr)")
    warmup_steps: int = _opt(1000, "steps of linear warmup (see the schedule above)")
    schedule: str = _opt("cosine", "the rate after the warmup: cosine down to --min-lr; wsd (warmup-stable-decay): "
                                   "held at the peak, then linearly down to --min-lr over the last --decay-frac of "
                                   "the steps after the warmup; constant: held at the peak", choices=SCHEDULES)
    decay_frac: float = _opt(0.4, "--schedule wsd: the share of the steps after the warmup that its linear decay "
                                  "takes, in (0, 1]")
    weight_decay: float = _opt(0.1, "AdamW decoupled weight decay of linear and embedding weights")
    beta1: float = _opt(0.9, "AdamW beta1")
    beta2: float = _opt(0.95, "AdamW beta2")
    optimizer: str = _opt("adamw", "muon: Muon (torch.optim.Muon's update, batched by shape; its RMS matched to "
                                   "AdamW's) trains every linear weight but the output head's, AdamW the embeddings, "
                                   "head, norms and states; not with --fsdp (Muon needs each whole matrix)",
                          choices=("adamw", "muon"))
    muon_lr: Optional[float] = _opt(None, "--optimizer muon: Muon's peak rate, on the same warmup and decay "
                                          "(default: --learning-rate)")
    muon_split_qkv: bool = _opt(True, "--optimizer muon: orthogonalise the queries', keys' and values' rows of each "
                                      "fused projection as matrices of their own, as for separate linear layers "
                                      "(--no-muon-split-qkv: each fused matrix whole, 0.022-0.030 bits/byte worse "
                                      "in the long-documents preset; no effect with --optimizer adamw)")
    scalar_lr: Optional[float] = _opt(None, "AdamW's peak rate for the learned mixing weights of --value-residual, "
                                            "--unet-skips and --embedding-mixing (a few numbers a layer), on the same "
                                            "warmup and decay (default: --learning-rate, with the other AdamW "
                                            "parameters)")
    grad_clip: float = _opt(0.5, "clip the global gradient norm to this (0: off)")
    # evaluation, logging, checkpoints (an interval of 0 turns the thing off)
    eval_interval: int = _opt(100, "steps between validation estimates")
    eval_batches: int = _opt(8, "random validation batches per estimate (the same ones every time)")
    eval_streams: int = _opt(4, "contiguous streams the final full val/test pass runs in parallel")
    doc_separator: Optional[int] = _opt(None, "the byte that ends each document of the data (e.g. 0): the final "
                                              "evaluation then also reports bits per byte by offset in the document",
                                        metavar="BYTE")
    documents: bool = _opt(False, "each batch row reads whole documents from their start, one after another, "
                                  "segment by segment, its memories and states carried from step to step and reset "
                                  "where its next document starts; the final evaluation reads every document so "
                                  "(needs --doc-separator, or a --data-tokens directory: its separator)")
    log_interval: int = _opt(10, "steps between train-loss records")
    checkpoint_interval: int = _opt(1000, "steps between checkpoints (one is also written at the end)")
    sample_interval: int = _opt(500, "steps between printed samples")
    prime_length: int = _opt(128, "bytes of validation text that prime a sample")
    sample_length: int = _opt(512, "new bytes generated per sample")
    temperature: float = _opt(1.0, "sampling temperature (0: greedy)")
    filter_thres: float = _opt(0.9, "sample from the top (1 - filter_thres) of the vocabulary")
    # system
    seed: int = _opt(1337, "seed of initialisation, data sampling and dropout (rank r uses seed + r)")
    device: str = _opt("auto", "auto: cuda if available, else cpu", choices=("auto", "cuda", "cpu"))
    amp: bool = _opt(True, "bf16 autocast on CUDA (no effect on CPU)")
    # None (the default): decided by fast_path() from the device and the rest of the config
    compile: Optional[bool] = _opt(None, "torch.compile the model (default: on a CUDA GPU together with "
                                         "--cuda-graph's TrainStep; --no-compile: never)")
    cuda_graph: Optional[bool] = _opt(None, "train through TrainStep: each segment's forward and backward on its "
                                            "own, replayed from a CUDA graph on a GPU (the same computation, "
                                            "eagerly, on a CPU); needs --bptt-segments 1 and no kNN layers "
                                            "(default: on a CUDA GPU wherever it applies; --no-cuda-graph: never)")
    fsdp: bool = _opt(False, "under torchrun, shard parameters, gradients and optimizer state over the processes "
                             "(FSDP2, one unit per layer), for models whose training does not fit one GPU; trains "
                             "on the eager loop (no TrainStep, no compile)")
    resume: bool = _opt(False, "continue the checkpoint in out-dir (its config, changed only by flags you pass)")
    eval_only: bool = _opt(False, "only evaluate the checkpoint in out-dir on the whole val and test splits")
    stop_at_step: Optional[int] = _opt(None, "stop with a checkpoint after this step, keeping the max-steps "
                                            "schedule (for job time limits; continue with --resume)")
    allow_data_change: bool = _opt(False, "resume (or evaluate) although the data differ from the checkpoint's "
                                          "(its size or CRC-32)")

    def __post_init__(self) -> None:
        if self.data is not None and self.data_tokens is not None:
            raise TrainError("pass --data (a file of bytes) or --data-tokens (a token directory), not both")
        if self.data_tokens is not None and self.doc_separator is not None:
            raise TrainError("--doc-separator applies to byte data (--data, enwik8): a token directory's documents "
                             "are not measured by offset yet")
        if self.num_tokens is None:
            from .tokens import read_meta

            self.num_tokens = 256 if self.data_tokens is None else read_meta(self.data_tokens)["vocab_size"]
        positive = ("seq_len", "batch_size", "grad_accum", "max_steps", "eval_batches", "eval_streams",
                    "log_interval", "prime_length", "sample_length")
        for name in positive:
            if getattr(self, name) < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.documents and self.doc_separator is None and self.data_tokens is None:
            raise TrainError("--documents needs the byte that ends each document: pass --doc-separator (e.g. 0), "
                             "or train on a --data-tokens directory (its meta.json names the separator)")
        if self.doc_separator is not None and not 0 <= self.doc_separator <= 255:
            raise TrainError(f"--doc-separator must be a byte value in 0..255, got {self.doc_separator}")
        if self.seq_len % self.max_seq_len != 0:
            raise TrainError(f"--seq-len ({self.seq_len}) must be a multiple of --max-seq-len ({self.max_seq_len}): "
                             f"a sample is processed as whole segments")
        if self.cuda_graph and (self.bptt_segments != 1 or self.knn_layers):
            raise TrainError(f"--cuda-graph needs --bptt-segments 1 and no --knn-layers, got "
                             f"--bptt-segments {self.bptt_segments} --knn-layers {list(self.knn_layers)}")
        if self.fsdp and (self.cuda_graph or self.compile):
            given = " ".join(flag for flag, on in (("--cuda-graph", self.cuda_graph), ("--compile", self.compile)) if on)
            raise TrainError(f"--fsdp trains on the eager loop, not with {given}: a CUDA graph cannot hold FSDP's "
                             f"all-gathers, and compiling the sharded layers is untested; drop {given}")
        if self.optimizer not in ("adamw", "muon"):
            raise TrainError(f"--optimizer must be adamw or muon, got {self.optimizer!r}")
        if self.optimizer == "muon":
            if not hasattr(torch.optim, "Muon"):
                raise TrainError(f"--optimizer muon needs torch.optim.Muon (torch 2.9 or later), this is torch "
                                 f"{torch.__version__}: use --optimizer adamw")
            if self.fsdp:
                raise TrainError("--optimizer muon (which --preset long-documents sets) orthogonalises each whole "
                                 "weight matrix, which --fsdp shards over the processes: pass --optimizer adamw with "
                                 "--fsdp")
        if self.schedule not in SCHEDULES:
            raise TrainError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 < self.decay_frac <= 1:
            raise TrainError(f"--decay-frac must lie in (0, 1] (a share of the steps after the warmup), "
                             f"got {self.decay_frac}")
        if self.muon_lr is not None and not self.muon_lr > 0:
            raise TrainError(f"--muon-lr must be positive, got {self.muon_lr}")
        if self.scalar_lr is not None and not self.scalar_lr > 0:
            raise TrainError(f"--scalar-lr must be positive, got {self.scalar_lr}")
        if self.stop_at_step is not None and not 1 <= self.stop_at_step <= self.max_steps:
            raise TrainError(f"--stop-at-step must lie in 1..max-steps={self.max_steps}, got {self.stop_at_step}")


# Named flag sets (--preset NAME): the flags passed override them.
PRESETS: dict[str, dict[str, Any]] = {
    # The seed's model (19M parameters at 256 tokens) trained as measured on long C files in
    # bench/RESULTS.md (2026-11-30, issue 15): small initial embeddings (the seed's N(0, 1) learns far
    # slower), each row reading whole documents with its memories and states carried from step to
    # step and reset at a document's start, a rate for ~100k steps (train.py's default --max-steps: 6.6B tokens
    # at 32 x 2048 a step; bench/RESULTS.md measures it at 100M-213M tokens: pass --max-steps for such a run, so that
    # the decay ends where it stops).
    # xpos is off (a length scale of 1e9 keeps every scale within 1e-5 of 1 over the few thousand
    # positions a block context spans): measured 0.011 better at 30M tokens.
    # Blocks of 1024 (a window of 1024 + the previous 1024), two per segment so that the state
    # write gets a gradient within the segment: 0.029 better than blocks of 512 at 100M tokens.
    # Rotary positions on half of each head (32 of 64 channels, as x-transformers; the other half match
    # by content alone at any distance) and the XL memory's keys/values projected from the cached layer
    # inputs with the current weights (Transformer-XL's way): together 0.036 better at 100M tokens
    # (0.844 against 0.881, same data).
    # Four key/value heads (grouped-query attention; the seed's one head is multi-query): 0.055
    # better at 100M tokens on two seeds each (0.850 against 0.905), for 1.38M more parameters
    # (19.93M, 7% over the seed's), where two heads gain 0.047.
    # A 50-step warmup: with 200, seed 2's training loss stayed near 2 bits/byte through step 800 and the
    # run ended at 0.965 (seeds 0 and 1: 0.853, 0.847); with 50 every seed leaves that plateau by step
    # 700 and the three score 0.857, 0.866 and 0.873 (mean 0.865 against 0.888; 100 steps: 0.880).
    # Against x-transformers' XL like for like (four key/value heads too, its feed-forward matched to
    # 19.93M), over five seeds, it is level with the XL with twice our window (1024 + 1024: 0.874 both;
    # ahead at three seeds, behind at two) and leads the XL with our window (512 + 512) by 0.043. A peak
    # rate of 1e-3 or 4e-4 instead of 6e-4 was worse at both seeds tried (by 0.022 and 0.046). The state's
    # reads barely pay: held at zero, the same weights and data score 0.0078 worse at seed 0 and 0.0006
    # at seed 2 (paired).
    # The recurrent layer is the 4th of 6, as in every measurement of the preset (bench/quality.py's
    # seed config; train.py's default is the middle one, the 3rd); the 5th measured level (+0.002).
    # 128 state vectors, a GELU feed-forward, a 1,000-step warmup and a qk-rmsnorm temperature of 16
    # each measured level or worse (bench/RESULTS.md, thirteenth session; the warmup, sixteenth). With qk-rmsnorm
    # in every layer a temperature of 16 scored 0.0022 better (seed 0, paired, 32 of 50 documents; thirty-second
    # session): one seed, not adopted.
    # Muon for the hidden matrices at 3e-3 (5x AdamW's 6e-4, the update's RMS matched to AdamW's), AdamW
    # for the rest: 0.031 better at 100M tokens (0.8300 and 0.8313 against 0.8574 and 0.8658 at seeds 0
    # and 1, paired; 1.2e-3 gained 0.025 at seed 0; 6e-3 lost 0.033), at about 6% fewer tokens/s with
    # torch's Muon (bench/RESULTS.md, twenty-first session; train.py's BatchedMuon takes 4.1 ms a step on
    # an H200, torch's 16.6 ms: twenty-second). It helps x-transformers' XL more: with Muon for both the XL
    # 1024 + 1024 leads by 0.017-0.026, and on 32 rows a step (ours on 32 x 2048: 0.005 better, one seed)
    # by 0.040. 8 rows a step (the XL's step count) lost 0.035.
    # Muon takes each fused projection's queries, keys and values as matrices of their own (muon_split_qkv,
    # TrainConfig's default): 0.0277 and 0.0296 better at seeds 0 and 1 (0.8023 and 0.8017), 0.0224 on 32 rows
    # (paired; bench/RESULTS.md, twenty-third session). On the same 32k tokens a step (the XL on 32 x 1024) the
    # XL 1024 + 1024 still leads by 0.017 and 0.013; ours leads the XL 512 + 512 by 0.044. The recurrent layer's
    # parameters given to the feed-forward instead score the same (0.8022).
    # value_residual and unet_skips together: 0.0137 and 0.0111 better at seeds 0 and 1 (0.7886 and 0.7906; each
    # alone 0.006-0.007 at seed 0), 50 and 46 of 50 documents, paired, 3-5% slower uncompiled (bench/RESULTS.md,
    # twenty-seventh session). The XL 1024 + 1024 then leads by 0.004 and 0.002; ours leads the XL 512 + 512 by 0.057.
    # Logits soft-capped at 15 (15 * tanh(logits / 15), no parameters): 0.0056 and 0.0042 better at seeds 0 and 1
    # (0.7830 and 0.7864; 38 and 34 of 50 documents, paired; a cap of 30: 0.0030 at seed 0). Ours is then 0.0020 and
    # 0.0022 ahead of the XL 1024 + 1024 and 0.063 and 0.067 ahead of the XL 512 + 512 (bench/RESULTS.md, twenty-eighth
    # and twenty-ninth sessions).
    # qk-rmsnorm in every layer (all_layers_qk_rmsnorm; before, only the recurrent layer's): 0.0181 and 0.0163 better
    # at seeds 0 and 1 (0.7649 and 0.7701; 50 and 49 of 50 documents, paired; bench/RESULTS.md, thirty-first session),
    # 9-14% fewer tokens/s uncompiled. (A cut screen before Muon, sixteenth session, found no gain.) Ours is then 0.020
    # and 0.019 ahead of the XL 1024 + 1024 and 0.081 and 0.083 ahead of the XL 512 + 512 at equal tokens.
    # 32 rows a step instead of 16: level per token on the preset of the twenty-third session (+0.0004, seed 0)
    # and faster per second with the optimizer's cost per step halved per token (1,182k tokens/s compiled on an H200
    # against 1,063k; 0.0039 better after 180 s at seed 0, thirtieth and thirty-first sessions). On today's preset
    # (with the value residual, U-net skips, the cap and qk-rmsnorm in every layer) 32 rows scored 0.0180 and 0.0127
    # worse than 16 at 100M tokens (0.7829 and 0.7828; still 0.002 and 0.006 ahead of the XL 1024 + 1024 and 0.063
    # and 0.070 ahead of the XL 512 + 512), and after 180 s 0.0033 better than 32 rows without qk-rmsnorm in every
    # layer (0.7117, 1,122k tokens/s; thirty-second session). At equal time 32 rows win on it: after 180 s, with wsd,
    # 0.7040 against 16 rows' 0.7118 (0.0078 better, 39 of 50 documents; 1,121.5k tokens/s against 1,022.1k;
    # thirty-third session), so the preset keeps 32.
    # --batch-size 16 --grad-accum 2 takes the same steps in half the activation memory.
    # The warmup-stable-decay schedule (the peak rate held, then a linear decay over the last 40% of the steps after
    # the warmup) instead of the cosine: 0.0059 and 0.0051 better at seeds 0 and 1 (0.7590 and 0.7650 on 16 rows,
    # 39 and 37 of 50 documents, paired; thirty-first and thirty-second sessions). On 32 rows at 100M tokens, seed 0,
    # compiled: 0.7696 against the cosine's 0.7829 (uncompiled; 46 of 50 documents), 0.0155 ahead of the XL 1024 +
    # 1024 (42 of 50). After 180 s: 0.7040 against the cosine's 0.7117 (another call), 0.0762 ahead of the XL 1024 +
    # 1024 on the same schedule in the same call (50 of 50; the XL scored 0.0034 worse with it than with the cosine).
    # Muon at 4.2e-3 instead of 3e-3 on 32 rows: 0.0015 worse (seed 0; thirty-third session).
    # The mixing weights at their own AdamW rate of 1e-2 (--scalar-lr) scored level on 16 rows (+0.0004, seed 0); with
    # embedding_mixing too, 0.0056 better (32 of 50 documents): one seed, on 16 rows, not adopted (thirty-third).
    # Not with --fsdp: pass --optimizer adamw there.
    # The data must say where documents end: --doc-separator BYTE, or a --data-tokens directory.
    "long-documents": dict(embedding_init_std=0.02, xpos_scale_base=10 ** 9, block_width=1024, max_seq_len=2048,
                           rotary_dim=32, memory_kv_from_inputs=True, kv_heads=4, recurrent_layers=(4,),
                           value_residual=True, unet_skips=True, logit_softcap=15.0, all_layers_qk_rmsnorm=True,
                           documents=True, batch_size=32, seq_len=2048, grad_accum=1, learning_rate=6e-4,
                           min_lr=6e-5, warmup_steps=50, schedule="wsd", decay_frac=0.4, optimizer="muon",
                           muon_lr=3e-3),
}


# What a checkpoint written before a field existed trained with (AdamW before --optimizer, Muon on whole
# fused matrices before --muon-split-qkv, whose default is now on, the cosine before --schedule): resuming
# such a checkpoint fills the missing field from here, so that its run continues as it trained.
FORMER_DEFAULTS: dict[str, Any] = dict(optimizer="adamw", muon_lr=None, muon_split_qkv=False, schedule="cosine",
                                       decay_frac=0.4, scalar_lr=None)


# flags of one invocation, not of the run: never stored with it, nor taken from its checkpoint
INVOCATION_FLAGS = dict(resume=False, eval_only=False, stop_at_step=None, allow_data_change=False)


def run_config(cfg: TrainConfig) -> dict[str, Any]:
    """cfg as stored in the checkpoint and config.json: the run's flags, those of the invocation at their defaults."""
    return asdict(replace(cfg, **INVOCATION_FLAGS))


class TrainError(Exception):
    """A problem the user can fix (missing data, no checkpoint, bad flag): reported without a traceback."""
