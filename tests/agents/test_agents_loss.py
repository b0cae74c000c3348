"""The clipped surrogate loss: hand-computed values, the three aggregations, KL, clip metrics, masking."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from ospo_gym.agents.loss import policy_loss  # noqa: E402


def test_hand_computed_clipped_surrogate():
    # one sequence, three tokens: ratio 1.5 (A>0, clipped at 1.2), ratio 0.5 (A<0, clipped at 0.8), ratio 1 (A=2)
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, metrics = policy_loss(logp, old, adv, mask, epsilon=0.2)
    # per token: -min(1.5, 1.2) = -1.2; -min(-0.5, -0.8) = 0.8; -2
    assert math.isclose(float(loss), (-1.2 + 0.8 - 2.0) / 3, rel_tol=1e-6)
    assert metrics["clip_fraction"] == pytest.approx(2 / 3)
    assert metrics["clip_high_fraction"] == pytest.approx(1 / 3)
    assert metrics["clip_low_fraction"] == pytest.approx(1 / 3)
    assert metrics["kl"] == 0.0


def test_epsilon_high_widens_the_upper_clip():
    logp = torch.log(torch.tensor([[1.5]]))
    loss, metrics = policy_loss(logp, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool),
                                epsilon=0.2, epsilon_high=0.28)  # fmt: skip
    assert float(loss) == pytest.approx(-1.28)
    assert metrics["clip_high_fraction"] == 1.0


def test_aggregations_hand_case():
    per_token_adv = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    logp = torch.zeros(2, 3)  # ratio 1: per-token loss = -A
    token_mean, _ = policy_loss(logp, logp, per_token_adv, mask, aggregation="token_mean")
    sequence_mean, _ = policy_loss(logp, logp, per_token_adv, mask, aggregation="sequence_mean")
    constant, _ = policy_loss(logp, logp, per_token_adv, mask, aggregation="constant", max_tokens=5)
    assert float(token_mean) == pytest.approx(-(1 + 2 + 3 + 4) / 4)
    assert float(sequence_mean) == pytest.approx(-(2.0 + 4.0) / 2)
    assert float(constant) == pytest.approx(-(1 + 2 + 3 + 4) / (2 * 5))


def test_kl_k3_and_its_coefficient():
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    ref = torch.log(torch.tensor([[0.25, 0.25]]))
    mask = torch.ones(1, 2, dtype=torch.bool)
    zero_adv = torch.zeros(1, 2)
    loss, metrics = policy_loss(logp, logp.detach(), zero_adv, mask, beta=0.1, ref_logprobs=ref)
    delta = math.log(0.5)  # ref - logp on the first token; 0 on the second
    kl_first = math.exp(delta) - delta - 1
    assert metrics["kl"] == pytest.approx(kl_first / 2)
    assert float(loss) == pytest.approx(0.1 * kl_first / 2)
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(logp, logp, zero_adv, mask, beta=0.1)


def test_masked_tokens_get_no_gradient_and_change_nothing():
    logp = torch.randn(2, 4, requires_grad=True)
    adv = torch.randn(2, 4)
    mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
    loss, _ = policy_loss(logp, logp.detach(), adv, mask)
    loss.backward()
    assert torch.all(logp.grad[~mask] == 0)
    changed = adv.clone()
    changed[~mask] = 100.0
    again, _ = policy_loss(logp.detach(), logp.detach(), changed, mask)
    assert float(again) == pytest.approx(float(loss.detach()))


def test_ratio_one_gradient_is_minus_the_advantage():
    logp = torch.zeros(1, 2, requires_grad=True)
    adv = torch.tensor([[0.5, -2.0]])
    loss, _ = policy_loss(logp, logp.detach(), adv, torch.ones(1, 2, dtype=torch.bool), aggregation="token_mean")
    loss.backward()
    torch.testing.assert_close(logp.grad, -adv / 2)


def test_unknown_aggregation():
    x = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="token_mean"):
        policy_loss(x, x, x, x.bool(), aggregation="mean")
