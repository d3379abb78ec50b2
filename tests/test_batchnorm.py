"""csdn.model.batchnorm: channels-last training BatchNorm with the default layout's accuracy.

The reference is ``nn.BatchNorm2d`` in float64. Float results are compared with stated
tolerances: the point of the module is that its float32 error stays at the level of the
default-layout kernel (~1e-7 relative), where a kernel summing each channel sequentially is
off by ~1e-5 on an activation this large.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from csdn.model.batchnorm import BatchNorm2d, use_accurate_batchnorm

CHANNELS_LAST = torch.channels_last


def _pair(channels: int, momentum: float | None = 0.1) -> tuple[BatchNorm2d, nn.BatchNorm2d]:
    ours = BatchNorm2d(channels, momentum=momentum)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        ours.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
        ours.bias.copy_(torch.randn(channels, generator=gen))
        ours.running_mean.copy_(torch.randn(channels, generator=gen))
        ours.running_var.copy_(torch.rand(channels, generator=gen) + 0.5)
    reference = nn.BatchNorm2d(channels, momentum=momentum).double()
    reference.load_state_dict(ours.state_dict())
    return ours, reference


def _run(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().requires_grad_()
    out = module(x)
    out.backward(grad.to(out.dtype))
    return [out, x.grad, module.weight.grad, module.bias.grad, module.running_mean, module.running_var]


def _relative_errors(got: list[torch.Tensor], want: list[torch.Tensor]) -> list[float]:
    return [float((g.detach().double() - w.detach()).norm() / w.detach().norm()) for g, w in zip(got, want)]


def test_training_step_matches_float64_reference_on_a_large_channels_last_activation() -> None:
    gen = torch.Generator().manual_seed(0)
    shape = (48, 64, 72, 36)  # 124k values per channel: sequential float32 sums drift here
    x = torch.randn(shape, generator=gen) * 3 + 1
    grad = torch.randn(shape, generator=gen)
    ours, reference = _pair(shape[1])
    got = _run(ours, x.contiguous(memory_format=CHANNELS_LAST), grad.contiguous(memory_format=CHANNELS_LAST))
    want = _run(reference, x.double(), grad.double())
    errors = _relative_errors(got, want)
    names = ["output", "input grad", "weight grad", "bias grad", "running mean", "running var"]
    assert max(errors) < 1e-6, dict(zip(names, errors))
    assert got[0].is_contiguous(memory_format=CHANNELS_LAST) and got[1].is_contiguous(memory_format=CHANNELS_LAST)
    assert int(ours.num_batches_tracked) == 1


def test_gradient_arriving_in_the_default_layout_is_handled() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 5, 7, 4, generator=gen)
    grad = torch.randn(6, 5, 7, 4, generator=gen)  # NCHW, as some upstream ops return
    ours, reference = _pair(5)
    errors = _relative_errors(
        _run(ours, x.contiguous(memory_format=CHANNELS_LAST), grad), _run(reference, x.double(), grad.double())
    )
    assert max(errors) < 1e-6


def test_other_inputs_take_nn_batchnorm2d_exactly() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 5, 6, generator=gen)
    for layout, training, momentum in (
        (torch.contiguous_format, True, 0.1),  # default layout: torch's kernel is accurate there
        (CHANNELS_LAST, False, 0.1),  # eval: running statistics
        (CHANNELS_LAST, True, None),  # cumulative averaging
    ):
        ours, _ = _pair(3, momentum)
        plain = nn.BatchNorm2d(3, momentum=momentum)
        plain.load_state_dict(ours.state_dict())
        ours.train(training), plain.train(training)
        inp = x.contiguous(memory_format=layout)
        assert torch.equal(ours(inp), plain(inp))
        assert torch.equal(ours.running_mean, plain.running_mean) and torch.equal(ours.running_var, plain.running_var)


def test_one_value_per_channel_is_refused_like_nn_batchnorm2d() -> None:
    ours, _ = _pair(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ours(torch.randn(1, 3, 1, 1).contiguous(memory_format=CHANNELS_LAST))


def test_use_accurate_batchnorm_replaces_plain_ones_and_keeps_their_state() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4), nn.BatchNorm1d(4)))
    with torch.no_grad():
        net[1].running_mean.fill_(0.5)
        net[2][0].weight.fill_(2.0)
    before = {key: value.clone() for key, value in net.state_dict().items()}
    use_accurate_batchnorm(net)
    assert type(net[1]) is BatchNorm2d and type(net[2][0]) is BatchNorm2d
    assert type(net[2][1]) is nn.BatchNorm1d
    after = net.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[key], value) for key, value in before.items())
    wide = use_accurate_batchnorm(nn.Sequential(nn.BatchNorm2d(4).double()))
    assert type(wide[0]) is BatchNorm2d and wide[0].weight.dtype == torch.float64  # placed like the original
