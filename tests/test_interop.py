"""PyTorch ↔ fnnet: every supported module, an MLP and a CNN give the same outputs (eval and train
mode) and the same loss gradients for every parameter (fnnet's hand-written backward against torch
autograd), in float64 and float32; fnnet → torch → fnnet is the identity."""

import functools
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet import draws
from fnnet.layer import layer_children

torch = pytest.importorskip("torch", reason="the interop extra: pip install 'fnnet[interop]'")
from fnnet.interop import ConversionError, from_torch, to_torch  # noqa: E402

nn = torch.nn


def _cases():
    """(name, torch module factory, fnnet example shape, input kind) for each supported module."""
    return [
        ("linear", lambda: nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3, bias=False)), (6,), "features"),
        ("activations", lambda: nn.Sequential(
            nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.LeakyReLU(0.2),
            nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8), nn.GELU(approximate="tanh"), nn.Identity(),
            nn.Linear(8, 3), nn.Softmax(dim=-1)), (6,), "features"),
        ("conv2d", lambda: nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(6, 4, 3, padding="same", dilation=2, groups=2, bias=False), nn.Flatten(),
            nn.Linear(4 * 4 * 4, 3)), (8, 8, 3), "image"),
        ("conv1d", lambda: nn.Sequential(
            nn.Conv1d(3, 4, 5, padding=2), nn.Conv1d(4, 4, 3, groups=4, padding="valid"), nn.Flatten(),
            nn.Linear(4 * 8, 3)), (10, 3), "image"),
        ("batchnorm and pools", lambda: nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=0.2), nn.MaxPool2d(2),
            nn.AvgPool2d(3, stride=1, padding=1), nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, 3)),
         (8, 8, 2), "image"),
        ("global pool", lambda: nn.Sequential(
            nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)), (6, 6, 3), "image"),
        ("global pool then 1x1 conv", lambda: nn.Sequential(
            nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Conv2d(5, 4, 1), nn.Flatten()), (6, 6, 3), "image"),
        ("nested global pool, relu, 1x1 conv and batchnorm", lambda: nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d((1, 1))), nn.ReLU(),
            nn.Sequential(nn.Conv2d(5, 4, 1, bias=False), nn.BatchNorm2d(4)), nn.Flatten(), nn.Linear(4, 3)),
         (6, 6, 3), "image"),
        ("layernorm and dropout", lambda: nn.Sequential(
            nn.Linear(6, 8), nn.LayerNorm(8), nn.Dropout(0.3), nn.Linear(8, 3)), (6,), "features"),
        ("rmsnorm", lambda: nn.Sequential(nn.Linear(6, 8), nn.RMSNorm(8, eps=1e-6), nn.Linear(8, 3)), (6,), "features"),
        ("flatten then layernorm", lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(), nn.LayerNorm(48), nn.Linear(48, 3)), (4, 4, 2), "image"),
        ("embedding", lambda: nn.Sequential(nn.Embedding(11, 6), nn.Linear(6, 3)), (5,), "tokens"),
        ("nested", lambda: nn.Sequential(nn.Sequential(nn.Linear(6, 5), nn.GELU()),
                                         nn.Sequential(nn.Sequential(nn.Linear(5, 3)))), (6,), "features"),
    ]


CASES = _cases()


def _randomise(module, generator):
    """Non-trivial BatchNorm affine parameters and running statistics (init gives 1, 0, 0, 1)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.uniform_(-0.5, 0.5, generator=generator)
                m.running_mean.uniform_(-1, 1, generator=generator)
                m.running_var.uniform_(0.5, 2, generator=generator)


def _inputs(shape, kind, dtype, batch=4, seed=0):
    """(torch input, fnnet input): the same examples, NCHW for torch and NHWC for fnnet."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "tokens":
        ids = torch.randint(0, 11, (batch,) + shape, generator=generator)
        return ids, ids.numpy().astype(np.int32)
    if kind == "image":
        x = torch.randn((batch, shape[-1]) + shape[:-1], generator=generator, dtype=dtype)
        return x, np.moveaxis(x.numpy(), 1, -1)
    x = torch.randn((batch,) + shape, generator=generator, dtype=dtype)
    return x, x.numpy()


def _built(factory, dtype, dropout=None):
    torch.manual_seed(0)
    module = factory().to(dtype)
    _randomise(module, torch.Generator().manual_seed(1))
    if dropout is not None:
        for m in module.modules():
            if isinstance(m, nn.Dropout):
                m.p = dropout
    return module


def _relative(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("name,factory,shape,kind", CASES, ids=[c[0] for c in CASES])
def test_outputs_and_gradients_agree_in_float64(x64, name, factory, shape, kind):
    module = _built(factory, torch.float64, dropout=0.0)
    model, params, state = from_torch(module, shape)
    x_torch, x_fnnet = _inputs(shape, kind, torch.float64)
    apply = jax.jit(functools.partial(fnnet.apply_with_state, model), static_argnames="train")  # not op by op
    for train in (False, True):
        module.train(train)
        y_torch = module(x_torch)
        y_fnnet, _ = apply(params, state, x_fnnet, train=train)
        assert _relative(np.asarray(y_fnnet), y_torch.detach().numpy()) <= 1e-10, (name, train)

    # the gradients of one loss with respect to every parameter, in training mode
    module.train(True)
    target = torch.randn(y_torch.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    module.zero_grad()
    torch.mean((module(x_torch) - target) ** 2).backward()
    grad_fn = jax.jit(fnnet.value_and_grad(model, fnnet.losses.mse, with_state=True), static_argnames="train")
    (value, _), grads = grad_fn(params, state, x_fnnet, target.numpy(), train=True)
    twin = to_torch(model, jax.tree.map(np.asarray, grads), state)   # the gradients in torch's layout
    scale = max(float(param.grad.abs().max()) for param in module.parameters())  # a conv bias before a
    for (param_name, param), (_, grad) in zip(module.named_parameters(), twin.named_parameters()):  # BatchNorm: 0
        error = float(np.max(np.abs(grad.detach().numpy() - param.grad.numpy())))
        assert error <= 1e-10 * scale, (name, param_name, error, scale)
    assert float(value) == pytest.approx(float(torch.mean((module(x_torch) - target) ** 2).detach()), rel=1e-12)


def _specs(layer):
    children = layer_children(layer)
    return (layer.spec, tuple(_specs(c) for c in children))


@pytest.mark.parametrize("name,factory,shape,kind", CASES, ids=[c[0] for c in CASES])
def test_float32_outputs_agree_and_fnnet_to_torch_to_fnnet_is_the_identity(name, factory, shape, kind):
    module = _built(factory, torch.float32, dropout=0.0)
    model, params, state = from_torch(module, shape)
    x_torch, x_fnnet = _inputs(shape, kind, torch.float32)
    apply = jax.jit(functools.partial(fnnet.apply_with_state, model), static_argnames="train")
    for train in (False, True):
        module.train(train)
        y_fnnet, _ = apply(params, state, x_fnnet, train=train)
        assert y_fnnet.dtype == jnp.float32
        assert _relative(np.asarray(y_fnnet), module(x_torch).detach().numpy()) <= 1e-5, (name, train)
    again, params_again, state_again = from_torch(to_torch(model, params, state), shape)
    assert _specs(again) == _specs(model)
    chex.assert_trees_all_equal(params_again, params)
    chex.assert_trees_all_equal(state_again, state)


def test_an_fnnet_cnn_and_mlp_run_the_same_in_torch(x64):
    """The other direction, from models fnnet built: the CLI's CNN shape and an MLP."""
    cnn = fnnet.serial(fnnet.Conv(8, 3, use_bias=False), fnnet.BatchNorm(), fnnet.Relu, fnnet.MaxPool(2),
                       fnnet.Conv(16, 3, padding=((1, 1), (1, 1))), fnnet.BatchNorm(), fnnet.Relu, fnnet.MaxPool(2),
                       fnnet.Flatten, fnnet.Dropout(0.3), fnnet.Dense(32), fnnet.Relu, fnnet.Dense(10))
    mlp = fnnet.serial(fnnet.Flatten, fnnet.Dense(32), fnnet.Tanh, fnnet.Dense(10))
    for model, shape in ((cnn, (12, 12, 1)), (mlp, (6, 6, 1))):
        _, params, state = fnnet.init_with_state(model, jax.random.PRNGKey(0), shape)
        x = draws.normal(jax.random.PRNGKey(1), (3,) + shape)
        y, _ = jax.jit(lambda p, s, v: fnnet.apply_with_state(model, p, s, v, train=False))(params, state, x)
        net = to_torch(model, params, state).eval()
        y_torch = net(torch.from_numpy(np.moveaxis(np.array(x), -1, 1).copy())).detach().numpy()
        assert _relative(np.asarray(y), y_torch) <= 1e-10


def test_adaptive_avg_pool_without_flatten_keeps_its_1x1_axes(x64):
    """AdaptiveAvgPool2d(1) at the end gives torch's (N, C, 1, 1) as fnnet's (N, 1, 1, C), and back."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1)).double()
    model, params, state = from_torch(module, (6, 6, 3))
    x_torch, x_fnnet = _inputs((6, 6, 3), "image", torch.float64)
    y, _ = fnnet.apply_with_state(model, params, state, x_fnnet)
    assert y.shape == (4, 1, 1, 5)
    assert _relative(np.asarray(y), np.moveaxis(module(x_torch).detach().numpy(), 1, -1)) <= 1e-10
    assert [type(m) for m in to_torch(model, params, state)] == [nn.Conv2d, nn.AdaptiveAvgPool2d]


def test_bfloat16_modules_convert_with_bfloat16_params():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                           nn.Linear(64, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    _randomise(module, torch.Generator().manual_seed(1))
    module = module.to(torch.bfloat16).eval()
    model, params, state = from_torch(module, (4, 4, 2))
    assert {leaf.dtype for leaf in jax.tree.leaves((params, state))} == {jnp.dtype(jnp.bfloat16)}
    _, params32, state32 = from_torch(module.float(), (4, 4, 2))   # bfloat16 → float32 is exact
    module.to(torch.bfloat16)
    chex.assert_trees_all_equal((params, state),
                                jax.tree.map(lambda v: np.asarray(v).astype(jnp.bfloat16), (params32, state32)))
    x_torch, x_fnnet = _inputs((4, 4, 2), "image", torch.float32)   # rounded to bfloat16 the same way
    y, _ = jax.jit(lambda p, s, v: fnnet.apply_with_state(model, p, s, v))(params, state,
                                                                           np.asarray(x_fnnet).astype(jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    y_torch = module(x_torch.to(torch.bfloat16)).detach().float().numpy()
    assert _relative(np.asarray(y, np.float32), y_torch) <= 3e-2
    back = to_torch(model, params, state)   # the same bfloat16 numbers, exactly
    for (name, theirs), (_, ours) in zip(module.state_dict().items(), back.state_dict().items()):
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), name


def test_to_torch_returns_the_module_in_evaluation_mode():
    model = fnnet.serial(fnnet.Dense(4), fnnet.BatchNorm(), fnnet.serial(fnnet.Dropout(0.5), fnnet.Dense(2)))
    _, params, state = fnnet.init_with_state(model, jax.random.PRNGKey(0), (3,))
    net = to_torch(model, params, state)
    assert [m.training for m in net.modules()] == [False] * len(list(net.modules()))


def test_unsupported_modules_and_layers_are_named_with_their_position():
    with pytest.raises(ConversionError, match=r"module 1\.0 \(PReLU\) has no fnnet twin"):
        from_torch(nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.PReLU())), (3,))
    with pytest.raises(ConversionError, match=r"module 0 \(Linear\).*channels-first image"):
        from_torch(nn.Sequential(nn.Linear(8, 4)), (8, 8, 3))
    with pytest.raises(ConversionError, match=r"module 0 \(Conv2d → Conv\(4, 3x3\)\): w has shape \(3, 3, 3, 4\), the layer expects "
                       r"\(3, 3, 1, 4\) on examples of shape \(8, 8, 1\) \(in_shape is one example in fnnet's layout"):
        from_torch(nn.Sequential(nn.Conv2d(3, 4, 3)), (8, 8, 1))
    with pytest.raises(ConversionError, match=r"momentum None"):
        from_torch(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=None)), (3,))
    model = fnnet.serial(fnnet.Dense(4), fnnet.Residual(fnnet.Dense(4)))
    _, params = model.init(jax.random.PRNGKey(0), (3,))
    with pytest.raises(ConversionError, match=r"layer 1 \(Residual\(Dense\(4\)\)\) has no PyTorch twin"):
        to_torch(model, params)
    model = fnnet.serial(fnnet.Conv(4, 3, strides=2))
    _, params = model.init(jax.random.PRNGKey(0), (8, 8, 1))
    with pytest.raises(ConversionError, match=r"'SAME' padding with strides"):
        to_torch(model, params)
    model = fnnet.serial(fnnet.Dense(4), fnnet.BatchNorm())
    _, params, _ = fnnet.init_with_state(model, jax.random.PRNGKey(0), (3,))
    with pytest.raises(ConversionError, match=r"pass model_state"):
        to_torch(model, params)
    _, params, _ = fnnet.init_with_state(fnnet.BatchNorm(), jax.random.PRNGKey(0), (3,))
    with pytest.raises(ConversionError, match=r"model has state \(BatchNorm\(momentum=0.9\)\): pass model_state"):
        to_torch(fnnet.BatchNorm(), params)   # one layer, not a serial


def test_float64_weights_without_x64_are_an_error_not_a_silent_cast():
    with pytest.raises(ConversionError, match=r"float64 but JAX's x64 mode is off"):
        from_torch(nn.Sequential(nn.Linear(3, 2)).double(), (3,))


def test_without_the_extra_each_door_says_what_to_install():
    code = ("import sys; sys.modules['torch'] = sys.modules['onnx'] = sys.modules['onnxruntime'] = None\n"
            "import jax, fnnet\n"
            "from fnnet.interop import check_onnx, from_nanogpt, from_torch, to_onnx\n"
            "model = fnnet.serial(fnnet.Dense(2))\n"
            "for call in (lambda: from_torch(None, (3,)), lambda: from_nanogpt('ckpt.pt'),\n"
            "             lambda: to_onnx(model, model.init(jax.random.PRNGKey(0), (3,))[1], (3,), 'm.onnx'),\n"
            "             lambda: check_onnx('m.onnx', model, (), None)):\n"
            "    try:\n        call()\n    except ImportError as e:\n        print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.count("pip install 'fnnet[interop]'") == 4, out


def test_batchnorm_momentum_and_running_variance_conventions(x64):
    """PyTorch's momentum m weighs the new batch statistic, fnnet's the old value: 1 - m. The running
    variance torch keeps averages unbiased batch variances: one step apart by m/(m-1) as documented."""
    bn = nn.BatchNorm1d(3, momentum=0.25).double()
    model, params, state = from_torch(nn.Sequential(bn), (3,))
    assert model.children[0].spec["momentum"] == 0.75
    x = torch.randn(8, 3, dtype=torch.float64)
    bn.train()
    bn(x)
    _, new_state = fnnet.apply_with_state(model, params, state, x.numpy(), train=True)
    np.testing.assert_allclose(new_state[0]["mean"], bn.running_mean.numpy(), rtol=1e-12)
    biased, unbiased = x.var(0, unbiased=False).numpy(), x.var(0, unbiased=True).numpy()
    np.testing.assert_allclose(new_state[0]["var"], 0.75 + 0.25 * biased, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.75 + 0.25 * unbiased, rtol=1e-12)


def test_module_docstrings_run():
    import doctest

    from fnnet.interop import pytorch

    assert doctest.testmod(pytorch, raise_on_error=False).failed == 0
