"""The GroupNorm module: drop-in use for nn.GroupNorm (state_dict, conversion of
a whole model) and tracing (torch.compile with fullgraph, torch.export), on the
CPU and, where a GPU is visible, on CUDA (the ``device`` fixture)."""

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from gn_detection.layers import GroupNorm, convert_group_norm
from gn_reference import ELEMENTWISE_TOL, REDUCTION_TOL, assert_close, reference_forward

FLOAT32 = ELEMENTWISE_TOL[torch.float32]


def _exact_float32(device):
    """On CUDA, convolutions in full float32 (cuDNN would use TF32), so that
    models around the op compare at float32 accuracy; nothing on the CPU."""
    if device == "cuda":
        return torch.backends.cudnn.flags(enabled=True, allow_tf32=False)
    return contextlib.nullcontext()


@pytest.fixture(autouse=True)
def _seed():
    """Every test draws its random inputs from the same seed, so failures reproduce."""
    torch.manual_seed(20240)


def _randomize_affine(module: nn.GroupNorm) -> None:
    """Fresh GroupNorm parameters are all ones and zeros; make them informative."""
    with torch.no_grad():
        module.weight.copy_(1 + 0.3 * torch.randn_like(module.weight))
        module.bias.copy_(0.3 * torch.randn_like(module.bias))


@pytest.mark.parametrize("activation", [None, "relu"])
def test_module_matches_reference(activation, device):
    module = GroupNorm(8, 32, eps=1e-4, activation=activation)
    _randomize_affine(module)
    module.to(device)
    x = torch.randn(2, 32, 6, 7).to(device)
    expected = reference_forward(x, 8, module.weight, module.bias, 1e-4, relu=activation == "relu")
    assert_close(module(x), expected, FLOAT32, "y")


def test_module_is_an_nn_group_norm():
    module = GroupNorm(4, 16, activation="relu")
    assert isinstance(module, nn.GroupNorm)
    assert [name for name, _ in module.named_parameters()] == ["weight", "bias"]
    assert "activation='relu'" in repr(module) and "16" in repr(module)
    assert "activation" not in repr(GroupNorm(4, 16))
    plain = GroupNorm(4, 16, affine=False)
    assert plain.weight is None and plain.bias is None and list(plain.parameters()) == []


@pytest.mark.parametrize("affine", [True, False])
def test_state_dict_round_trip(affine):
    """nn.GroupNorm -> ours -> nn.GroupNorm: same keys, same tensors, same outputs."""
    torch_module = nn.GroupNorm(8, 32, affine=affine)
    if affine:
        _randomize_affine(torch_module)
    ours = GroupNorm(8, 32, affine=affine)
    ours.load_state_dict(torch_module.state_dict())  # strict: keys must match exactly
    assert list(ours.state_dict()) == list(torch_module.state_dict())
    for key, value in torch_module.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key

    back = nn.GroupNorm(8, 32, affine=affine)
    back.load_state_dict(ours.state_dict())
    for key, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key

    x = torch.randn(3, 32, 5, 5)
    expected = reference_forward(x, 8, torch_module.weight, torch_module.bias)
    assert_close(ours(x), expected, FLOAT32, "ours after loading")
    assert_close(back(x), expected, FLOAT32, "nn.GroupNorm after loading ours")


def test_state_dict_keys_mismatch_is_reported():
    """An affine checkpoint does not load silently into a non-affine module."""
    with pytest.raises(RuntimeError, match="Unexpected key"):
        GroupNorm(8, 32, affine=False).load_state_dict(nn.GroupNorm(8, 32).state_dict())


def _gn_resnet18():
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=10, norm_layer=lambda channels: nn.GroupNorm(32, channels))
    for module in model.modules():
        if isinstance(module, nn.GroupNorm):
            _randomize_affine(module)
    return model


def test_convert_group_norm_on_torchvision_resnet(device):
    """Every nn.GroupNorm of a GN ResNet-18 becomes ours, with the very same
    parameter tensors; outputs and gradients stay those of the original."""
    with _exact_float32(device):
        _check_convert_group_norm_on_torchvision_resnet(device)


def _check_convert_group_norm_on_torchvision_resnet(device):
    model = _gn_resnet18().eval().to(device)
    original = copy.deepcopy(model)
    before = {name: m for name, m in model.named_modules() if isinstance(m, nn.GroupNorm)}
    params_before = {name: (m.weight, m.bias) for name, m in before.items()}
    keys_before = list(model.state_dict())
    assert len(before) == 20  # stem, 16 in the basic blocks, 3 downsample paths

    converted = convert_group_norm(model)

    assert converted is model
    after = {name: m for name, m in model.named_modules() if isinstance(m, nn.GroupNorm)}
    assert sorted(after) == sorted(before)
    assert sum(type(m) is GroupNorm for m in model.modules()) == 20
    assert sum(type(m) is nn.GroupNorm for m in model.modules()) == 0
    for name, module in after.items():
        assert module.weight is params_before[name][0] and module.bias is params_before[name][1], name
        assert (module.num_groups, module.num_channels, module.eps) == (32, before[name].num_channels, 1e-5)
    assert list(model.state_dict()) == keys_before

    x = torch.randn(2, 3, 64, 64).to(device)
    with torch.no_grad():
        expected = original(x)
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    # Training mode, backward: the same parameter gradients as the original.
    model.train()
    original.train()
    dy = torch.randn(2, 10).to(device)
    model(x).backward(dy)
    original(x).backward(dy)
    for (name, p), (_, q) in zip(model.named_parameters(), original.named_parameters()):
        scale = q.grad.abs().max().item()
        error = (p.grad - q.grad).abs().max().item()
        assert error <= 1e-4 * scale, f"{name}: gradient differs by {error:.3e} (scale {scale:.3e})"


def test_convert_group_norm_in_channels_last(device):
    """The converted model accepts channels_last inputs and gives the original's outputs."""
    model = _gn_resnet18().eval().to(device)
    original = copy.deepcopy(model)
    convert_group_norm(model).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64).to(device)
    with torch.no_grad(), _exact_float32(device):
        torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), original(x),
                                   rtol=1e-5, atol=1e-5)


def test_convert_group_norm_edge_cases():
    bare = nn.GroupNorm(2, 8, eps=1e-3, affine=False)
    converted = convert_group_norm(bare)
    assert type(converted) is GroupNorm and not converted.affine and converted.weight is None
    assert converted.eps == 1e-3 and converted.num_groups == 2
    x = torch.randn(2, 8, 3, 3)
    assert_close(converted(x), reference_forward(x, 2, eps=1e-3), FLOAT32, "y")

    ours = GroupNorm(2, 8, activation="relu")
    assert convert_group_norm(ours) is ours and ours.activation == "relu"

    untouched = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    assert convert_group_norm(untouched) is untouched
    assert type(untouched[1]) is nn.BatchNorm2d

    training = nn.GroupNorm(2, 8).train(False)
    assert convert_group_norm(training).training is False


class _SmallNet(nn.Module):
    """conv -> GroupNorm+ReLU (fused) -> conv -> GroupNorm, a minimal detection-head block."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.norm1 = GroupNorm(8, 32, activation="relu")
        self.conv2 = nn.Conv2d(32, 16, 3, padding=1)
        self.norm2 = GroupNorm(4, 16)
        _randomize_affine(self.norm1)
        _randomize_affine(self.norm2)

    def forward(self, x):
        return self.norm2(self.conv2(self.norm1(self.conv1(x))))


def _graph_ops(graph_module):
    return {str(node.target) for node in graph_module.graph.nodes if node.op == "call_function"}


def test_compile_captures_the_op_in_one_graph(device):
    """Dynamo traces the op as one node of a single graph (no graph break):
    a backend that records the graphs it receives sees exactly one, holding the op."""
    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    net = _SmallNet().to(device)
    compiled = torch.compile(net, backend=recording_backend, fullgraph=True)
    x = torch.randn(2, 3, 12, 12).to(device)
    torch.testing.assert_close(compiled(x), net(x), rtol=0, atol=0)
    assert len(graphs) == 1
    recorded = "\n".join(str(node.target) for node in graphs[0].graph.nodes)
    assert "group_norm_forward" in recorded, recorded


@pytest.mark.slow
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "cl"])
def test_torch_compile_fullgraph_matches_eager(memory_format, device):
    """torch.compile(fullgraph=True) with the default (inductor) backend runs the
    op inside a compiled graph, forward and backward, and agrees with eager."""
    with _exact_float32(device):
        _check_torch_compile_fullgraph_matches_eager(memory_format, device)


def _check_torch_compile_fullgraph_matches_eager(memory_format, device):
    torch._dynamo.reset()
    net = _SmallNet().to(device=device, memory_format=memory_format)
    compiled_net = copy.deepcopy(net)
    compiled = torch.compile(compiled_net, fullgraph=True)
    x = torch.randn(2, 3, 16, 16).to(device).contiguous(memory_format=memory_format)
    x_eager = x.clone().requires_grad_()
    x_compiled = x.clone().requires_grad_()
    dy = torch.randn(2, 16, 16, 16).to(device)

    eager_out = net(x_eager)
    compiled_out = compiled(x_compiled)
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-5, atol=1e-5)
    eager_out.backward(dy)
    compiled_out.backward(dy)
    torch.testing.assert_close(x_compiled.grad, x_eager.grad, rtol=1e-4, atol=1e-5)
    for (name, p), (_, q) in zip(compiled_net.named_parameters(), net.named_parameters()):
        scale = q.grad.abs().max().item()
        assert (p.grad - q.grad).abs().max().item() <= 1e-4 * scale, name

    # A second batch size runs too (recompiling or dynamic, without a graph break).
    x2 = torch.randn(3, 3, 16, 16).to(device).contiguous(memory_format=memory_format)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x2), net(x2), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_export(device):
    """torch.export traces the op (through its fake kernel) into the exported
    program, which then runs and matches eager, including a dynamic batch."""
    net = _SmallNet().eval().to(device)
    x = torch.randn(2, 3, 12, 12).to(device)
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(net, (x,), dynamic_shapes=({0: batch},))
    assert any("gn_detection.group_norm_forward" in op for op in _graph_ops(exported.graph_module))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), net(x), rtol=0, atol=0)
        x5 = torch.randn(5, 3, 12, 12).to(device)
        torch.testing.assert_close(exported.module()(x5), net(x5), rtol=0, atol=0)


def _real_and_fake(x, weight, bias, relu=True):
    """The six outputs of forward + backward from the real kernels and from the fake ones."""
    forward_op = torch.ops.gn_detection.group_norm_forward
    backward_op = torch.ops.gn_detection.group_norm_backward
    dy = torch.randn_like(x)
    real = forward_op(x, weight, bias, 4, 1e-5, relu)
    real_grads = backward_op(dy, x, real[1], real[2], weight, bias, 4, relu)
    with FakeTensorMode() as mode:
        fake_x, fake_w, fake_b, fake_dy = (None if t is None else mode.from_tensor(t) for t in (x, weight, bias, dy))
        fake = forward_op(fake_x, fake_w, fake_b, 4, 1e-5, relu)
        fake_grads = backward_op(fake_dy, fake_x, fake[1], fake[2], fake_w, fake_b, 4, relu)
    names = ["output", "mean", "rstd", "grad_input", "grad_weight", "grad_bias"]
    return zip(names, list(real) + list(real_grads), list(fake) + list(fake_grads))


_STRIDE_CASES = {
    "nchw": lambda: torch.randn(2, 16, 5, 6),
    "nhwc": lambda: torch.randn(2, 16, 5, 6).to(memory_format=torch.channels_last),
    "ndhwc": lambda: torch.randn(2, 16, 3, 4, 5).to(memory_format=torch.channels_last_3d),
    "nc": lambda: torch.randn(3, 16),
    "nlc": lambda: torch.randn(2, 9, 16).transpose(1, 2),
    "sliced": lambda: torch.randn(2, 16, 10, 6)[:, :, ::2],
    "n1hw1": lambda: torch.randn(1, 16, 1, 1),
    "n1_nhwc": lambda: torch.randn(1, 16, 5, 6).to(memory_format=torch.channels_last),
    "bf16_nhwc": lambda: torch.randn(2, 16, 5, 6, dtype=torch.bfloat16).to(memory_format=torch.channels_last),
    "f64": lambda: torch.randn(2, 16, 5, 6, dtype=torch.float64),
}


@pytest.mark.parametrize("case", list(_STRIDE_CASES))
def test_fake_kernel_agrees_with_real_kernel_on_shapes_and_strides(case, device):
    """The fake kernels promise the shapes and strides the real ones produce;
    a mismatch would make compiled graphs misread the op's outputs."""
    x = _STRIDE_CASES[case]()
    x = x.to(device)  # Tensor.to keeps the strides of a dense tensor (and re-packs the sliced one)
    weight = torch.randn(16, dtype=x.dtype).to(device)
    bias = torch.randn(16, dtype=x.dtype).to(device)
    for name, real, fake in _real_and_fake(x, weight, bias):
        assert (real.shape, real.stride(), real.dtype) == (fake.shape, fake.stride(), fake.dtype), (
            f"{name} of input {tuple(x.shape)} strides {x.stride()}: real {tuple(real.shape)} {real.stride()} "
            f"{real.dtype}, fake {tuple(fake.shape)} {fake.stride()} {fake.dtype}"
        )


@pytest.mark.parametrize(
    "weight_dtype, bias_dtype",
    [(torch.float32, None), (None, torch.float32), (torch.float32, torch.float32), (torch.bfloat16, None),
     (None, None)],
    ids=str,
)
def test_fake_kernel_agrees_with_real_kernel_on_dtypes(weight_dtype, bias_dtype, device):
    """bfloat16 input with float32, bfloat16 or absent parameters: every output
    of the real and fake kernels has the same dtype (the gradient slot of an
    absent parameter included, since the raw op returns it)."""
    x = torch.randn(2, 16, 5, 6, dtype=torch.bfloat16).to(device)
    weight = None if weight_dtype is None else torch.randn(16, dtype=weight_dtype).to(device)
    bias = None if bias_dtype is None else torch.randn(16, dtype=bias_dtype).to(device)
    for name, real, fake in _real_and_fake(x, weight, bias, relu=False):
        assert real.dtype == fake.dtype, f"{name}: real {real.dtype}, fake {fake.dtype}"


def test_float32_grads_of_module_match_reference(device):
    """Module parameters receive the reference gradients (through autograd and the module)."""
    module = GroupNorm(4, 16, activation="relu")
    _randomize_affine(module)
    module.to(device)
    x = torch.randn(2, 16, 5, 5)
    dy = torch.randn(2, 16, 5, 5)
    module(x.to(device)).backward(dy.to(device))
    w64 = module.weight.detach().cpu().double().requires_grad_()
    b64 = module.bias.detach().cpu().double().requires_grad_()
    F.relu(F.group_norm(x.double(), 4, w64, b64)).backward(dy.double())
    assert_close(module.weight.grad, w64.grad, REDUCTION_TOL[torch.float32], "dweight")
    assert_close(module.bias.grad, b64.grad, REDUCTION_TOL[torch.float32], "dbias")
