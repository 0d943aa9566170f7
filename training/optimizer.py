"""The optimizer and the learning-rate schedule: AdamW, or Muon for the hidden matrices with AdamW for the rest."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from block_recurrent_transformer_pytorch.config import MIXING_OPTIONS

from .config import SCHEDULES, TrainConfig

# Muon's momentum, as in Keller Jordan's Muon and torch.optim.Muon's default
MUON_MOMENTUM = 0.95


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The weights Muon trains: every nn.Linear weight but the output head's (the module named ``to_logits``
    and anything inside it, in ours and in x-transformers' TransformerWrapper alike), which, like the token
    embeddings, maps to tokens rather than between hidden layers. An LSTM gate's linear maps are hidden
    matrices too; norms, biases and learned initial states are not matrices of a linear map and stay with
    AdamW."""
    heads = [name for name, m in model.named_modules() if name.split(".")[-1] == "to_logits"]
    if len(heads) != 1:
        raise ValueError(f"expected one output head named to_logits, found {heads or 'none'}")
    head = heads[0]
    inside_head = {name for name, _ in model.named_modules() if name == head or name.startswith(head + ".")}
    return [m.weight for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name not in inside_head and m.weight.requires_grad]


# The names of the learned mixing weights (value_residual's value_mix, unet_skips' skip_weights,
# embedding_mixing's embedding_mix): a few numbers a layer, each weighing a whole path into the residual
# stream or the values, so that one step at the hidden weights' rate barely moves them.
MIXING_WEIGHTS = ("value_mix", "skip_weights", "embedding_mix")


def mixing_weights(model: nn.Module) -> list[nn.Parameter]:
    """The model's learned mixing weights (MIXING_WEIGHTS), found by name as in a wrapped or compiled model;
    none where the model has none of those options (x-transformers' XL among them)."""
    return [p for name, p in model.named_parameters()
            if name.split(".")[-1] in MIXING_WEIGHTS and p.requires_grad]


def param_groups(model: nn.Module, weight_decay: float, muon: bool, scalar_lr: Optional[float] = None
                 ) -> tuple[list[dict[str, Any]], list[nn.Parameter]]:
    """(AdamW's param groups, Muon's matrices). Weight decay only on linear and embedding weights, not on
    norms, gates' biases, attention_gate's head gates (a vector a head) or learned states; with muon, the hidden
    matrices go to Muon, not to AdamW. With scalar_lr, the mixing weights form a third group of their own at that
    peak rate ("lr"; never decayed); without it they stay in the second, so that a checkpoint's optimizer state
    has the groups it had."""
    matrices = hidden_matrices(model) if muon else []
    scalars = mixing_weights(model) if scalar_lr is not None else []
    apart = {id(p) for p in matrices + scalars}
    decay = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in apart]
    groups = [{"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
              {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}]
    if scalar_lr is not None:
        if not scalars:
            raise ValueError(f"scalar_lr={scalar_lr} is the rate of the learned mixing weights {MIXING_WEIGHTS}, "
                             f"and this model has none ({', '.join(MIXING_OPTIONS)} are off)")
        groups.append({"params": scalars, "weight_decay": 0.0, "lr": scalar_lr})
    return groups, matrices


def output_splits(model: nn.Module, matrices: list[nn.Parameter]) -> list[tuple[int, ...]]:
    """For each matrix, the sizes of the maps its rows compute, in order: a linear layer that computes several
    in one product (queries, keys and values) says so in its ``output_splits``; any other computes one."""
    layer = {id(m.weight): m for m in model.modules() if isinstance(m, nn.Linear)}
    return [tuple(getattr(layer[id(p)], "output_splits", (p.shape[0],))) for p in matrices]


def orthogonalize(updates: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float) -> Tensor:
    """torch.optim.Muon's Newton-Schulz iteration (in bf16) on a stack of matrices (batch, rows, columns) at
    once: each matrix is scaled to spectral norm at most 1 by its Frobenius norm, then steps quintic
    iterations push its singular values towards 1, on the wide orientation (rows <= columns) so that the
    Gram matrices are the small side's."""
    a, b, c = coefficients
    x = updates.bfloat16()
    tall = x.size(1) > x.size(2)
    if tall:
        x = x.transpose(1, 2)
    x = x / x.norm(dim=(1, 2), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.transpose(1, 2)
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.transpose(1, 2) if tall else x


def adjusted_lr(lr: float, adjust_lr_fn: Optional[str], shape: torch.Size) -> float:
    """torch.optim.Muon's rate for a matrix of this shape: "original" (Keller Jordan's) scales it by
    sqrt(max(1, rows / columns)); "match_rms_adamw" (Moonshot's) by 0.2 * sqrt(max(rows, columns)), which
    gives the update about AdamW's RMS."""
    rows, columns = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1.0, rows / columns))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, columns))
    return lr  # torch's rate for any other value (its constructor refuses them)


def closure_loss(closure: Optional[Callable[[], Any]]) -> Any:
    """What an optimizer's closure returns, evaluated with gradients on (a step runs under no_grad), or None."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class BatchedMuon(torch.optim.Muon):
    """torch.optim.Muon with each step's Newton-Schulz iterations batched over the matrices of one shape
    (orthogonalize), in a few batched kernels per shape instead of some 25 per matrix: an eager optimizer
    step is bound by its kernel launches on a GPU, and the long-documents model's 28 matrices come in 5
    shapes (split by output_splits, 42 blocks in 5 shapes). The same update as torch's up to bf16 rounding
    (batched products round differently from one-at-a-time ones on large matrices; tested against torch's,
    matrix by matrix). Its state is torch's (momentum_buffer). One difference, torch's bug: for bf16
    parameters without Nesterov, torch.optim.Muon (2.13) normalises the momentum buffer itself in place;
    BatchedMuon leaves it as it is.

    A param group may hold "output_splits", one tuple of row counts per parameter (output_splits()): each
    block of rows is then orthogonalised, and its rate adjusted, as a matrix of its own, which is the update
    torch's Muon gives the same maps as separate linear layers. Without the key each parameter is one matrix.
    A state saved with other splits (or none where these have some) is refused: loading it would change
    which matrices Muon orthogonalises."""

    def __init__(self, params: Any, **options: Any) -> None:
        super().__init__(params, **options)
        for group in self.param_groups:
            splits = group.get("output_splits")
            if splits is None:
                continue
            if len(splits) != len(group["params"]):
                raise ValueError(f"output_splits has {len(splits)} entries for {len(group['params'])} parameters")
            for p, rows in zip(group["params"], splits):
                if sum(rows) != p.shape[0] or min(rows) < 1:
                    raise ValueError(f"output_splits {tuple(rows)} do not divide the {p.shape[0]} rows of a "
                                     f"{tuple(p.shape)} matrix into positive parts")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load, once each saved group's output_splits are found to be this optimizer's."""
        def splits(group: dict[str, Any]) -> Optional[list[tuple[int, ...]]]:
            rows = group.get("output_splits")
            return None if rows is None else [tuple(r) for r in rows]

        for i, (saved, own) in enumerate(zip(state_dict["param_groups"], self.param_groups)):
            if splits(saved) != splits(own):
                raise ValueError(f"param group {i} was saved with output_splits {splits(saved)} and this optimizer "
                                 f"has {splits(own)}: build it with the splits the state was trained with")
        super().load_state_dict(state_dict)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = closure_loss(closure)
        for group in self.param_groups:
            splits = group.get("output_splits") or [(p.shape[0],) for p in group["params"]]
            kept = [(p, parts) for p, parts in zip(group["params"], splits) if p.grad is not None]
            if not kept:
                continue
            params, rows = [p for p, _ in kept], [parts for _, parts in kept]
            grads = [p.grad for p in params]
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
            buffers = [self.state[p]["momentum_buffer"] for p in params]
            momentum, lr, decay = group["momentum"], float(group["lr"]), group["weight_decay"]
            torch._foreach_lerp_(buffers, grads, 1 - momentum)  # an average of the gradients
            updates = torch._foreach_lerp(grads, buffers, momentum) if group["nesterov"] else buffers
            torch._foreach_mul_(params, 1 - lr * decay)
            # the matrices Muon sees: each parameter's blocks of rows (views), gathered by shape
            shapes: dict[tuple, list[tuple[Tensor, Tensor]]] = {}
            for p, update, parts in zip(params, updates, rows):
                for weight, part in zip(p.split(parts), update.split(parts)):
                    shapes.setdefault((weight.shape, weight.dtype, weight.device), []).append((weight, part))
            for (shape, dtype, _), pairs in shapes.items():
                ortho = orthogonalize(torch.stack([part for _, part in pairs]), group["ns_coefficients"],
                                      group["ns_steps"], group["eps"])
                # in the parameters' layout (a tall shape's updates come back transposed), so that one
                # fused kernel adds them all
                torch._foreach_add_([weight for weight, _ in pairs],
                                    list(ortho.to(dtype, memory_format=torch.contiguous_format).unbind(0)),
                                    alpha=-adjusted_lr(lr, group["adjust_lr_fn"], shape))
        return loss


def make_muon(matrices: list[nn.Parameter], lr: float, weight_decay: float,
              splits: Optional[list[tuple[int, ...]]] = None) -> torch.optim.Muon:
    """Muon (BatchedMuon) with its update's RMS matched to AdamW's (adjust_lr_fn="match_rms_adamw": the rate
    is scaled by 0.2 * sqrt(max(rows, columns))), so that a rate means about what it means to AdamW. Its
    decoupled weight decay multiplies the weights by 1 - lr * weight_decay each step, at Muon's own rate.
    splits (output_splits()): orthogonalise each fused projection's maps apart; None: each matrix whole."""
    group: dict[str, Any] = {"params": matrices}
    if splits is not None:
        group["output_splits"] = splits
    return BatchedMuon([group], lr=lr, weight_decay=weight_decay, momentum=MUON_MOMENTUM,
                       adjust_lr_fn="match_rms_adamw")


class MuonAdamW(torch.optim.Optimizer):
    """Muon for the hidden matrices and AdamW for every other parameter, as one optimizer.

    Its param_groups are AdamW's followed by Muon's (the same dicts), so a learning-rate scheduler scales
    each group from its own peak rate; its state_dict is one optimizer's layout (AdamW's parameters
    numbered first), so checkpoints, resume and --fsdp's gathering treat it like any other. The moments
    themselves live in .adamw.state and .muon.state (its own .state stays empty), and its groups are
    fixed: add a group to .adamw or .muon, not to it."""

    def __init__(self, adamw: torch.optim.AdamW, muon: torch.optim.Muon) -> None:
        params = [p for opt in (adamw, muon) for group in opt.param_groups for p in group["params"]]
        super().__init__(params, {})  # the hooks and bookkeeping of an Optimizer; its one group is replaced below
        self.adamw, self.muon = adamw, muon
        self.param_groups = adamw.param_groups + muon.param_groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "muon" in self.__dict__:  # after __init__: neither AdamW nor Muon would ever step the group
            raise NotImplementedError("MuonAdamW's groups are AdamW's and Muon's: add the group to its .adamw or "
                                      ".muon and build a new MuonAdamW")
        super().add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:  # pickle and deepcopy keep the two optimizers
        return {**super().__getstate__(), "adamw": self.adamw, "muon": self.muon}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.param_groups = self.adamw.param_groups + self.muon.param_groups

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """One step of both (the closure, if any, evaluated once, before them)."""
        loss = closure_loss(closure)
        self.adamw.step()
        self.muon.step()
        return loss

    def _adamw_count(self, groups: list[dict[str, Any]]) -> int:
        return sum(len(group["params"]) for group in groups[:len(self.adamw.param_groups)])

    def state_dict(self) -> dict[str, Any]:
        adamw, muon = self.adamw.state_dict(), self.muon.state_dict()
        offset = self._adamw_count(adamw["param_groups"])
        return {"state": {**adamw["state"], **{i + offset: s for i, s in muon["state"].items()}},
                "param_groups": adamw["param_groups"] + [{**g, "params": [i + offset for i in g["params"]]}
                                                         for g in muon["param_groups"]]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups, split = state_dict["param_groups"], len(self.adamw.param_groups)
        if len(groups) != len(self.param_groups):
            raise ValueError(f"the state holds {len(groups)} parameter groups, this optimizer "
                             f"{len(self.param_groups)} (AdamW's {split}, Muon's {len(self.muon.param_groups)})")
        offset = self._adamw_count(groups)
        state = state_dict["state"]
        self.adamw.load_state_dict({"state": {i: s for i, s in state.items() if i < offset},
                                    "param_groups": groups[:split]})
        self.muon.load_state_dict({"state": {i - offset: s for i, s in state.items() if i >= offset},
                                   "param_groups": [{**g, "params": [i - offset for i in g["params"]]}
                                                    for g in groups[split:]]})
        self.param_groups = self.adamw.param_groups + self.muon.param_groups  # load_state_dict made new dicts


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (param_groups' weight decay); with --optimizer muon, a MuonAdamW whose Muon trains the hidden
    matrices at peak rate --muon-lr (default: --learning-rate), with muon_split_qkv (the default) each fused
    projection's queries, keys and values as matrices of their own (AdamW ignores muon_lr and muon_split_qkv).
    With --scalar-lr, AdamW trains the mixing weights at that peak rate (param_groups)."""
    groups, matrices = param_groups(model, cfg.weight_decay, cfg.optimizer == "muon", cfg.scalar_lr)
    adamw = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")
    if cfg.optimizer != "muon":
        return adamw
    splits = output_splits(model, matrices) if cfg.muon_split_qkv else None
    return MuonAdamW(adamw, make_muon(matrices, cfg.learning_rate if cfg.muon_lr is None else cfg.muon_lr,
                                      cfg.weight_decay, splits))


def decay_factor(progress: float, schedule: str, floor: float, decay_frac: float) -> float:
    """Multiple of the peak rate after the warmup, at `progress` (0..1, past 1 as 1: a share of the run, in
    train.py of the steps after the warmup, in bench/quality.py of the whole token or time budget): cosine
    from 1 down to `floor`; wsd (warmup-stable-decay) 1 until the last `decay_frac` of the run, then
    linearly down to `floor` at its end; constant 1."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "wsd":
        return floor + (1 - floor) * min((1 - progress) / decay_frac, 1.0)
    if schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiple of the peak rates at a step: linear warmup, then cfg.schedule's decay to min_lr / learning_rate
    of them at max_steps (Muon's rate follows the same curve from --muon-lr)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.max_steps - cfg.warmup_steps, 1)
    return decay_factor(progress, cfg.schedule, cfg.min_lr / cfg.learning_rate, cfg.decay_frac)
