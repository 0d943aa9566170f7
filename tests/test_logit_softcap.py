"""logit_softcap: the output logits soft-capped, c * tanh(logits / c), in every path that makes logits
(the full forward, segment by segment, cached decoding, TrainStep), and bad caps refused by name."""

from __future__ import annotations

import re

import pytest
import torch

from block_recurrent_transformer_pytorch.generation import CachedDecoder, ReferenceDecoder

from .helpers import assert_train_step_equals_wrapper_backward, decode_each_step, run_segments, small_model, tokens

CAP = 0.5  # small enough that the tiny model's logits reach it, so a path that skips the cap differs
RECURRENT = dict(recurrent_layers=(1, 3), read_recurrent_layers=(1, 2))


def test_capped_logits_are_the_plain_logits_capped_with_the_same_weights():
    plain = small_model(**RECURRENT)
    capped = small_model(**RECURRENT, logit_softcap=CAP)  # the same seed: no parameter is added or drawn
    assert plain.state_dict().keys() == capped.state_dict().keys()
    for name, weight in plain.state_dict().items():
        assert torch.equal(weight, capped.state_dict()[name]), name
    x = tokens(2, 40)
    want, _, _ = run_segments(plain, x, 16)
    got, _, _ = run_segments(capped, x, 16)
    assert got.dtype == torch.float32 and got.abs().max() <= CAP
    assert want.abs().max() > 2 * CAP  # the cap bites
    torch.testing.assert_close(got, CAP * torch.tanh(want / CAP), rtol=1e-6, atol=1e-6)


def test_the_cap_is_taken_in_float32_under_bfloat16_autocast_and_float64_stays_float64():
    plain, capped = small_model(), small_model(logit_softcap=CAP)
    x = tokens(1, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, _, _ = plain(x)
        got, _, _ = capped(x)
    assert want.dtype == torch.bfloat16 and got.dtype == torch.float32
    torch.testing.assert_close(got, CAP * torch.tanh(want.float() / CAP), rtol=0, atol=1e-6)
    logits, _, _ = capped.double()(x)
    assert logits.dtype == torch.float64


@pytest.mark.parametrize("decoder_cls", [CachedDecoder, ReferenceDecoder])
def test_decoding_equals_the_full_forward(decoder_cls):
    model = small_model(**RECURRENT, use_compressed_mem=True, logit_softcap=CAP)
    x = tokens(2, 44)
    expected, _, _ = run_segments(model, x, 16)
    got = decode_each_step(decoder_cls(model, *model.prepare(2)), x, prefill=5)
    torch.testing.assert_close(got, expected[:, 4:], rtol=1e-5, atol=1e-5)


def test_train_step_equals_wrapper_backward_and_the_loss_is_of_the_capped_logits():
    model = small_model(**RECURRENT, logit_softcap=CAP)
    assert_train_step_equals_wrapper_backward(model.train())
    model.eval()
    plain = small_model(**RECURRENT)
    plain.load_state_dict(model.state_dict())
    x = tokens(2, 17)
    loss, _, _ = model(x, return_loss=True)
    plain_logits, _, _ = plain(x[:, :-1])
    torch.testing.assert_close(loss, plain.loss(CAP * torch.tanh(plain_logits / CAP), x[:, 1:]))
    plain_loss, _, _ = plain(x, return_loss=True)
    assert not torch.allclose(loss, plain_loss)


@pytest.mark.parametrize("cap", [0, -1.0, 1e300, 10 ** 400, float("inf"), float("nan"), True])
def test_a_cap_outside_its_range_is_refused_by_name(cap):
    with pytest.raises(ValueError, match=re.escape("logit_softcap must be None (no cap) or a number in (0, 10000] ")
                       + ".*" + re.escape(f"got {cap!r}")):
        small_model(logit_softcap=cap)
