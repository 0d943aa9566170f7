"""The recurrent state's pieces compute the paper's formulas, initialised as the official code."""

from __future__ import annotations

import math

import pytest
import torch

from block_recurrent_transformer_pytorch.state import FixedGate, LSTMGate

from .helpers import small_model, tokens


def test_fixed_gate_is_a_learned_moving_average():
    gate = FixedGate(16)
    state, update = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    g = torch.sigmoid(gate.bias)
    torch.testing.assert_close(gate(state, update), state * g + update * (1 - g))


@pytest.mark.parametrize("retention", [0.5, 0.95])
def test_fixed_gate_starts_at_the_configured_retention(retention):
    """fixed_gate_retention sets where g = sigmoid(b) starts, per channel about it (noise 0.1 in the
    logit); the seed's 0.5 keeps the seed's initialisation draw for draw."""
    model = small_model(dim=256, heads=8, dim_head=32, fixed_gate_retention=retention)
    g = torch.sigmoid(model.states[0].gate.bias)
    assert abs(g.mean().item() - retention) < 0.01
    assert g.std().item() > 0  # channels still differ
    torch.manual_seed(3)
    seed_like = FixedGate(256)
    torch.manual_seed(3)
    configured = FixedGate(256, retention)
    torch.testing.assert_close(configured.bias - seed_like.bias,
                               torch.full((256,), math.log(retention / (1 - retention))))


def test_fixed_gate_max_half_life_spreads_the_channels_over_time_scales():
    """fixed_gate_max_half_life=H: channel half-lives (blocks until a write keeps half its weight,
    g ** h = 0.5) start log-spaced from 1 to H, so the state keeps its writes for 1 to H blocks."""
    model = small_model(dim=64, heads=4, dim_head=16, fixed_gate_max_half_life=64)
    g = torch.sigmoid(model.states[0].gate.bias.double())
    half_lives = math.log(0.5) / torch.log(g)
    torch.testing.assert_close(half_lives, torch.logspace(0, math.log10(64), 64, dtype=torch.float64),
                               rtol=1e-5, atol=0)
    assert g[0].item() == pytest.approx(0.5) and g[-1].item() == pytest.approx(0.5 ** (1 / 64))
    # the state's own writes then decay at those rates: one written with update u, then kept k blocks
    state, update = torch.zeros(1, 2, 64), torch.ones(1, 2, 64)
    written = model.states[0].gate(state, update)
    kept = written
    for _ in range(4):
        kept = model.states[0].gate(kept, torch.zeros_like(update))
    torch.testing.assert_close(kept, written * g.float() ** 4)


def test_fixed_gate_max_half_life_draws_every_other_weight_alike():
    """The spread replaces the gate's starting bias only: at one seed every other weight is the
    default model's, draw for draw, so the two compare paired."""
    default, spread = small_model(seed=2), small_model(seed=2, fixed_gate_max_half_life=64)
    for (name, p), q in zip(spread.named_parameters(), default.parameters()):
        if not name.endswith("gate.bias"):
            torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_fixed_gate_keeps_long_half_lives_under_a_bfloat16_update():
    """Under autocast the update is bfloat16 and the state float32: the gate mixes in the state's
    precision, so a half-life of up to 1e6 blocks still writes 1 - g of the update (bfloat16 would
    round g to 1 past 177 blocks and write nothing)."""
    gate = FixedGate(8, max_half_life=1e6)
    g = torch.sigmoid(gate.bias)
    assert (g < 1).all()
    written = gate(torch.zeros(1, 1, 8), torch.ones(1, 1, 8, dtype=torch.bfloat16))
    assert written.dtype == torch.float32
    torch.testing.assert_close(written[0, 0], 1 - g, rtol=1e-6, atol=0)
    half_lives = math.log(2) / torch.log1p(torch.exp(-gate.bias.double()))  # -log g, exact from the logit
    torch.testing.assert_close(half_lives[-1].item(), 1e6, rtol=1e-5, atol=0)


def test_lstm_gate_is_biased_to_remember():
    """The gates read the attention outputs h (24 wide here) the update z was projected from."""
    gate = LSTMGate(24, 16)
    state, update, hidden = torch.randn(2, 5, 16), torch.randn(2, 5, 16), torch.randn(2, 5, 24)
    forget = torch.sigmoid(hidden @ gate.forget_gate.weight.T + gate.forget_gate.bias + 1)
    write = torch.sigmoid(hidden @ gate.input_gate.weight.T + gate.input_gate.bias - 1)
    torch.testing.assert_close(gate(state, update, hidden), state * forget + update * write)


def test_lstm_gate_reads_the_attention_outputs_starts_small_and_learns():
    """As the official code: gates over the write's attention outputs (2 * heads * dim_head wide),
    kernels of variance 0.1 / fan_in (truncated normal), biases N(0, 0.1); gradients reach them."""
    model = small_model(dim=256, heads=8, dim_head=32, num_state_vectors=256, gate_type="lstm").train()
    gate = model.states[0].gate
    fan_in = 2 * 8 * 32
    for linear in (gate.forget_gate, gate.input_gate):
        assert linear.weight.shape == (256, fan_in)
        assert abs(linear.weight.var().item() - 0.1 / fan_in) < 0.1 * 0.1 / fan_in
        assert linear.weight.abs().max() <= 2 * math.sqrt(0.1 / fan_in) / 0.87962566103423978
        assert abs(linear.bias.std().item() - 0.1) < 0.015
    model(tokens(2, 17), return_loss=True)[0].backward()
    for p in (gate.forget_gate.weight, gate.forget_gate.bias, gate.input_gate.weight, gate.input_gate.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_initialisation_statistics():
    """Initial state N(0, 0.1), state ids N(0, 1) (added after a norm), fixed-gate bias N(0, 0.1)."""
    state = small_model(dim=256, num_state_vectors=256).states[0]
    for tensor, std in ((state.init_state, 0.1), (state.state_ids, 1.0), (state.gate.bias, 0.1)):
        assert abs(tensor.mean().item()) < 0.1 * std
        assert abs(tensor.std().item() - std) < 0.15 * std


def test_state_ids_enter_after_the_norm_and_only_the_projections():
    """The view adds the ids to the normed state; the gate blends the raw state, not the normed one."""
    state = small_model().states[0]
    s = torch.randn(2, 6, 32)
    view = state.view(s)
    torch.testing.assert_close(view.normed, state.norm(s) + state.state_ids)
    assert view.state is s


def test_an_lstm_checkpoint_from_before_the_official_gate_does_not_load():
    """The old gates read the update z (Linear(dim, dim) named forget/input): loading one must fail
    loudly, also where the shapes would match (dim == 2 * heads * dim_head), not compute another gate."""
    model = small_model(gate_type="lstm", dim=32, heads=2, dim_head=16)
    old = {k.replace("forget_gate", "forget").replace("input_gate", "input"): v for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="gate.forget.weight"):
        model.load_state_dict(old)


@pytest.mark.parametrize("detach", [False, True])
def test_detached_state_write_passes_no_gradient_to_the_block(detach):
    """detach_state_write_kv: the same new state from the same weights, but only without it does the
    block's keys/values' gradient come back from it."""
    model, reference = small_model(detach_state_write_kv=detach), small_model()  # the same draw
    block_k, block_v = (torch.randn(2, 1, 8, 8, requires_grad=True) for _ in range(2))
    written = model.states[0].write(model.states[0].view(model.states[0].initial(2)), block_k, block_v)
    with torch.no_grad():
        expected = reference.states[0].write(reference.states[0].view(reference.states[0].initial(2)), block_k, block_v)
    torch.testing.assert_close(written, expected, rtol=0, atol=0)
    written.square().sum().backward()
    for t in (block_k, block_v):
        assert (t.grad is None) if detach else (t.grad.abs().sum() > 0)


def test_detached_state_write_changes_only_what_the_tokens_learn_from_it():
    """Four blocks in one segment, so the state carries a write three blocks on. Detaching the write's
    keys/values changes no output, and, with one state read at the layer that writes it, not the
    state's own gradient: a layer's keys/values come from its input, which no read at or above it
    changes. (A read below the writing layer, or a second recurrent layer, would feed the state's
    parameters into the keys/values; there detaching changes the state's gradient too.) It changes
    what the layers that make those keys/values learn."""
    x = tokens(2, 33)
    plain = small_model(max_seq_len=32).train()
    detached = small_model(max_seq_len=32, detach_state_write_kv=True).train()
    detached.load_state_dict(plain.state_dict())
    outputs = []
    for model in (plain, detached):
        loss, _, states = model(x, return_loss=True)
        loss.backward()
        outputs.append((loss, states))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    for (name, p), q in zip(plain.states.named_parameters(), detached.states.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    recurrent_kv = plain.layers[1][0].to_qkv.weight.grad, detached.layers[1][0].to_qkv.weight.grad
    below = plain.layers[0][0].to_qkv.weight.grad, detached.layers[0][0].to_qkv.weight.grad
    for a, b in (recurrent_kv, below):
        assert not torch.allclose(a, b)
