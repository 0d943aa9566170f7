"""The recurrent state's pieces compute the paper's formulas, initialised as the official code."""

from __future__ import annotations

import torch

from block_recurrent_transformer_pytorch.state import FixedGate, LSTMGate

from .helpers import small_model


def test_fixed_gate_is_a_learned_moving_average():
    gate = FixedGate(16)
    state, update = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    g = torch.sigmoid(gate.bias)
    torch.testing.assert_close(gate(state, update), state * g + update * (1 - g))


def test_lstm_gate_is_biased_to_remember():
    gate = LSTMGate(16)
    state, update = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    forget = torch.sigmoid(update @ gate.forget.weight.T + gate.forget.bias + 1)
    write = torch.sigmoid(update @ gate.input.weight.T + gate.input.bias - 1)
    torch.testing.assert_close(gate(state, update), state * forget + update * write)


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
