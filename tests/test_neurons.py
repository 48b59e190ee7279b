"""LIF and MLIF neurons: hand-computed dynamics, spikingjelly equivalence, surrogate gradients."""
import math

import pytest
import torch
from spikingjelly.activation_based import neuron as sj_neuron

from av_snn_ros.models.neurons import LIFNode, MLIFNode, decay_from_tau, get_surrogate

# A 3-step MLIF example worked by hand with tau = 2 (decay 0.5), V_th = 1, alpha_a = alpha_v = 0.5:
#   t1: U_a = 1.0, U_v = 3.0 -> fused [0.5*3.0; 0.5*1.0] = [1.5; 0.5] -> S_v = 1, S_a = 0 -> U_v = 2.0
#   t2: U_a = 0.5 + 1.5 = 2.0, U_v = 1.0 + 0.2 = 1.2 -> [0.6; 1.0] -> S_v = 0, S_a = 1 -> U_a = 1.0
#   t3: U_a = 0.5 + 2.5 = 3.0, U_v = 0.6 + 1.0 = 1.6 -> [0.8; 1.5] -> S_v = 0, S_a = 1 -> U_a = 2.0
C_A = [1.0, 1.5, 2.5]
C_V = [3.0, 0.2, 1.0]
S_A = [0.0, 1.0, 1.0]
S_V = [1.0, 0.0, 0.0]
FINAL_U_A, FINAL_U_V = 2.0, 1.6


def _seq(values):
    return torch.tensor(values, dtype=torch.float32).reshape(3, 1, 1, 1, 1)   # (T, B, C, H, W)


@pytest.mark.parametrize('grad', [False, True], ids=['inference-path', 'autograd-path'])
def test_mlif_matches_hand_computed_example(grad):
    node = MLIFNode(tau=2.0, v_threshold=1.0, alpha_init=0.5)
    c_a, c_v = _seq(C_A).requires_grad_(grad), _seq(C_V).requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        s_a, s_v = node(c_a, c_v)
    assert s_a.flatten().tolist() == S_A
    assert s_v.flatten().tolist() == S_V
    assert float(node.v_a.detach()) == pytest.approx(FINAL_U_A)
    assert float(node.v_v.detach()) == pytest.approx(FINAL_U_V)


def test_mlif_single_step_mode_matches_multi_step():
    node = MLIFNode(step_mode='s')
    out = [node(_seq(C_A)[t], _seq(C_V)[t]) for t in range(3)]
    assert [float(s_a.detach()) for s_a, _ in out] == S_A
    assert [float(s_v.detach()) for _, s_v in out] == S_V


def test_mlif_fusion_weights_change_which_modality_fires():
    """With alpha_a = 1 the audio membrane of t1 (1.0) reaches threshold: the scaling is really used."""
    node = MLIFNode(alpha_init=0.5)
    with torch.no_grad():
        node.alpha_a.fill_(1.0)
        s_a, s_v = node(_seq(C_A), _seq(C_V))
    assert s_a.flatten().tolist()[0] == 1.0
    assert s_v.flatten().tolist() == S_V        # the visual half only depends on alpha_v


def test_mlif_gradients_reach_alpha_and_inputs_through_the_surrogate():
    torch.manual_seed(0)
    node = MLIFNode()
    c_a = (torch.randn(4, 2, 3, 5, 5) * 2).requires_grad_()
    c_v = (torch.randn(4, 2, 3, 5, 5) * 2).requires_grad_()
    s_a, s_v = node(c_a, c_v)
    (s_a.sum() + 2 * s_v.sum()).backward()
    for grad in (node.alpha_a.grad, node.alpha_v.grad, c_a.grad, c_v.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_lif_surrogate_gradient_equals_the_sigmoid_derivative():
    """One step from rest: U = C, S = H(C - 1); dS/dC is the sigmoid surrogate alpha*sig*(1-sig)."""
    alpha = 4.0
    x = torch.tensor([[0.3, 0.9, 1.0, 1.7]], requires_grad=True)    # (T=1, N)
    LIFNode(tau=2.0, surrogate='sigmoid', surrogate_alpha=alpha)(x).sum().backward()
    sig = torch.sigmoid(alpha * (x.detach() - 1.0))
    torch.testing.assert_close(x.grad, alpha * sig * (1 - sig))


@pytest.mark.parametrize('tau', [2.0, 3.0])
@pytest.mark.parametrize('decay_input,v_reset', [(False, None), (True, 0.0), (False, 0.0), (True, None)])
def test_lif_matches_spikingjelly_lif(tau, decay_input, v_reset):
    torch.manual_seed(1)
    x = torch.randn(6, 3, 40) * 2
    ref = sj_neuron.LIFNode(tau=tau, decay_input=decay_input, v_reset=v_reset, step_mode='m')
    expected = ref(x)
    ours = LIFNode(tau=tau, decay_input=decay_input, v_reset=v_reset)
    autograd_out = ours(x.clone().requires_grad_())
    v_autograd = ours.v.detach().clone()
    ours.reset()
    with torch.no_grad():
        inference_out = ours(x)
    assert torch.equal(autograd_out, expected)
    assert torch.equal(inference_out, expected)
    torch.testing.assert_close(v_autograd, ref.v, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.v, v_autograd, rtol=0, atol=0)


def test_lif_inference_path_leaves_its_input_untouched():
    x = torch.randn(4, 2, 8) * 3
    before = x.clone()
    with torch.no_grad():
        LIFNode(decay_input=False)(x)
        LIFNode(decay_input=True, v_reset=0.0)(x)
    assert torch.equal(x, before)


def test_paper_tau_is_rejected_with_an_explanation():
    assert decay_from_tau(2.0) == 0.5
    with pytest.raises(ValueError, match='tau = 0.2'):
        LIFNode(tau=0.2)
    with pytest.raises(ValueError, match='tau must be'):
        MLIFNode(tau=1.0)


def test_surrogates_by_name_are_fresh_modules():
    a, b = get_surrogate('sigmoid', 4.0), get_surrogate('sigmoid', 4.0)
    assert a is not b and math.isclose(a.alpha, 4.0)
    assert type(get_surrogate('atan', 2.0)).__name__ == 'ATan'
    with pytest.raises(ValueError, match='unknown surrogate'):
        get_surrogate('relu')


def test_mlif_rejects_mismatched_modalities():
    with pytest.raises(ValueError, match='equal audio and visual shapes'):
        MLIFNode()(torch.zeros(2, 1, 3, 4, 4), torch.zeros(2, 1, 3, 4, 5))
