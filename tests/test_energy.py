"""Energy estimator: hand-computed layers with known firing rates, reuse per window, a real model."""
import pytest
import torch
import torch.nn as nn

from av_snn_ros.tools.export import preprocess_config_for, real_window
from av_snn_ros.models import calibrate_batchnorm, create_model
from av_snn_ros.models.blocks import SeqConvBN
from av_snn_ros.models.energy import EnergyMeter, estimate_energy

T, H, W = 2, 4, 4
PJ_PER_MJ = 1e9
# The paper's estimator (MISNet Sec. 4.4 follows Spikformer-style estimates) uses 45 nm CMOS energies
# (Horowitz, ISSCC 2014): a 32-bit float add 0.9 pJ (one accumulate per synaptic operation) and a
# 32-bit float multiply 3.7 pJ + add 0.9 pJ = 4.6 pJ per MAC. Written here as literals, not imported
# from the module under test, so a changed constant there fails these hand computations.
PJ_PER_SOP = 0.9
PJ_PER_MAC = 3.7 + 0.9


class Toy(nn.Module):
    """Real-valued first layer on audio, a conv on a spike map taken from visual, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.first = SeqConvBN(1, 4, kernel_size=3)
        self.second = nn.Conv2d(2, 3, kernel_size=3, padding=1, bias=False)
        self.head = nn.Linear(3 + 4, 2)

    def forward(self, audio, visual):
        x = self.first(audio)                                         # (T, B, 4, H, W), real-valued input
        spikes = (visual > 0).to(visual.dtype)                        # known firing rate
        y = self.second(spikes.flatten(0, 1)).unflatten(0, visual.shape[:2])
        feats = torch.cat([x.mean((3, 4)), y.mean((3, 4))], dim=2)    # (T, B, 7), real-valued
        logits = self.head(feats).mean(0)
        return logits, logits, logits


def _spike_input(batch: int, rate_quarters: int) -> torch.Tensor:
    """(T, B, 2, H, W) with exactly ``rate_quarters / 4`` of the elements positive."""
    flat = torch.full((T * batch * 2 * H * W // 4, 4), -1.0)
    flat[:, :rate_quarters] = 1.0                 # the first k of every 4 consecutive elements
    return flat.view(T, batch, 2, H, W)


def _hand_energy_mj(rate: float) -> float:
    first_macs = T * 4 * H * W * (1 * 3 * 3)         # output elements x (C_in x k x k), per sample
    second_macs = T * 3 * H * W * (2 * 3 * 3)
    head_macs = T * 2 * 7
    return (first_macs * PJ_PER_MAC + second_macs * rate * PJ_PER_SOP + head_macs * PJ_PER_MAC) / PJ_PER_MJ


@pytest.mark.parametrize('batch', [1, 3])
def test_energy_of_layers_with_known_firing_rate_equals_hand_computation(batch):
    model = Toy().eval()
    audio = torch.randn(T, batch, 1, H, W)
    report = estimate_energy(model, audio, _spike_input(batch, 1))
    layers = {layer.name: layer for layer in report.per_layer}
    assert set(layers) == {'first', 'second', 'head'}
    assert layers['first'].kind == 'mac' and layers['head'].kind == 'mac'
    assert layers['second'].kind == 'sop' and layers['second'].rate == pytest.approx(0.25)
    assert layers['second'].flops == T * 3 * H * W * 18
    assert report.total_mj == pytest.approx(_hand_energy_mj(0.25), rel=1e-12)
    assert report.total_mj == pytest.approx(sum(layer.mj for layer in report.per_layer))


def test_meter_is_reusable_and_only_rates_change_between_windows():
    model = Toy().eval()
    audio = torch.randn(T, 1, 1, H, W)
    with EnergyMeter(model) as meter:
        quarter = meter.measure(audio, _spike_input(1, 1))
        with torch.no_grad():
            model(audio, _spike_input(1, 3))          # the runtime's own forward pass
        three_quarters = meter.report()
    assert three_quarters.total_mj == pytest.approx(_hand_energy_mj(0.75), rel=1e-12)
    assert [layer.flops for layer in quarter.per_layer] == [layer.flops for layer in three_quarters.per_layer]
    assert not model._forward_pre_hooks and not model.second._forward_pre_hooks     # closed: hooks removed


def test_one_meter_wraps_every_window_of_a_runtime():
    """The node's pattern: ``with meter: forward`` per window, then ``dict(meter.report())``."""
    model = Toy().eval()
    meter = EnergyMeter(model)
    audio = torch.randn(T, 1, 1, H, W)
    for quarters in (1, 3, 2):
        with meter, torch.no_grad():
            model(audio, _spike_input(1, quarters))
        numbers = dict(meter.report())
        assert numbers['energy_mj'] == pytest.approx(_hand_energy_mj(quarters / 4), rel=1e-12)
        assert numbers['energy_j'] == pytest.approx(numbers['energy_mj'] * 1e-3)
        assert numbers['firing_rate'] == pytest.approx(quarters / 4)
        assert numbers['synops'] == pytest.approx(T * 3 * H * W * 18 * quarters / 4)
        assert not model._forward_pre_hooks                     # detached between windows


def test_report_needs_a_forward_pass():
    with EnergyMeter(Toy()) as meter, pytest.raises(RuntimeError, match='forward pass'):
        meter.report()


def test_misnet_tiny_energy_on_a_real_window(data_root):
    torch.manual_seed(0)
    model = create_model('misnet_tiny')
    pre = preprocess_config_for(model)
    audio, visual = (torch.from_numpy(x) for x in real_window(pre, data_root, batch=10))
    calibrate_batchnorm(model, [(audio, visual)])
    report = estimate_energy(model, audio[:, :1], visual[:, :1])
    layers = {layer.name: layer for layer in report.per_layer}
    first = layers['stages.0.spike_gen.audio.conv_bn']
    assert first.kind == 'mac' and layers['stages.0.spike_gen.visual.conv_bn'].kind == 'mac'
    assert first.flops == pre.timesteps * 16 * 32 * 32 * 9
    assert first.mj == pytest.approx(first.flops * PJ_PER_MAC / PJ_PER_MJ)
    sew = [layer for name, layer in layers.items() if '.sew.' in name]
    assert sew and all(layer.kind == 'sop' and 0.0 <= layer.rate <= 1.0 for layer in sew)
    assert any(layer.rate > 0 for layer in sew)
    assert 0 < report.total_mj == pytest.approx(report.mac_mj + report.sop_mj)
