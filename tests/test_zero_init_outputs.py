"""zero_init_output_projections: every layer's attention and feed-forward output projections start at
zero, so the model starts as embeddings -> head; every other weight keeps its draw, and every weight
learns within two steps."""

from __future__ import annotations

import torch

from .helpers import VOCAB, small_model, tokens

RECURRENT = dict(recurrent_layers=(1, 3), read_recurrent_layers=(1, 2))


def _output_projection(name: str) -> bool:
    return name.endswith((".to_out.weight", ".proj_out.weight"))  # a layer's attention's and feed-forward's


def test_only_the_output_projections_start_at_zero_and_the_rest_keep_their_draw():
    plain = small_model(**RECURRENT).state_dict()
    zeroed = small_model(**RECURRENT, zero_init_output_projections=True).state_dict()
    assert plain.keys() == zeroed.keys()
    names = [name for name in plain if _output_projection(name)]
    assert len(names) == 2 * 3  # both projections of each of the tiny model's three layers
    for name, weight in plain.items():
        if name in names:
            assert torch.count_nonzero(zeroed[name]) == 0 and torch.count_nonzero(weight) > 0, name
        else:
            assert torch.equal(weight, zeroed[name]), name


def test_the_model_starts_as_embeddings_then_head():
    model = small_model(**RECURRENT, zero_init_output_projections=True)
    x = tokens(2, 16)
    logits, _, _ = model(x)
    with torch.no_grad():
        want = model.to_logits(model.norm_out(model.token_emb(x)))
    torch.testing.assert_close(logits, want)


def test_every_weight_learns_within_two_steps():
    """At the first step the output projections (and the embeddings and head) get a gradient and
    nothing behind them does, since the zeros pass no gradient back; after one step every weight does."""
    model = small_model(**RECURRENT, zero_init_output_projections=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, labels = tokens(2, 16), tokens(2, 16, seed=2)

    def gradients() -> dict[str, torch.Tensor]:
        optimizer.zero_grad(set_to_none=False)
        logits, _, _ = model(x)
        torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1)).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if name.endswith("weight")}

    first = gradients()
    outputs = [name for name in first if _output_projection(name)]
    behind = [name for name in first if name.endswith((".to_qkv.weight", ".proj_in.weight"))]
    assert len(outputs) == len(behind) == 2 * 3
    assert all(torch.count_nonzero(first[name]) > 0 for name in outputs)
    assert all(torch.count_nonzero(first[name]) == 0 for name in behind)
    optimizer.step()
    second = gradients()
    assert all(torch.count_nonzero(second[name]) > 0 for name in outputs + behind)
