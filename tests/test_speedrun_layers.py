"""The speedrun's new pieces against PyTorch in float64: RMSNorm (``nn.RMSNorm``), ReLU², the logit
soft cap, and causal attention with QK-norm (``F.rms_norm``) and rotary positions (a reference
written here from the RoFormer paper's rotate-half form, as GPT-NeoX and Llama apply it), forward
outputs and every gradient (fnnet's hand-written backward against torch autograd). The catalogue
(tests/test_catalogue.py) checks the same layers against ``jax.grad`` and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet

torch = pytest.importorskip("torch", reason="the interop extra: pip install 'fnnet[interop]'")
F = torch.nn.functional

TOLERANCE = 1e-10


def _close(fnnet_value, torch_value):
    fnnet_value, torch_value = np.asarray(fnnet_value), torch_value.detach().numpy()
    assert fnnet_value.shape == torch_value.shape
    scale = max(1.0, float(np.max(np.abs(torch_value))))
    assert float(np.max(np.abs(fnnet_value - torch_value))) <= TOLERANCE * scale


def _fnnet_vjp(layer, params, x, dy):
    """``(y, dparams, dx)`` by fnnet's own forward and hand-written backward."""
    @jax.jit
    def vjp(params, x, dy):
        y, residuals = layer.forward(params, x)
        return (y, *layer.backward(params, residuals, dy))
    return vjp(params, x, dy)


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape)


@pytest.mark.parametrize("use_scale", [True, False])
def test_rmsnorm_equals_torch_rmsnorm(use_scale):
    x, dy = _random((3, 5, 8), 0), _random((3, 5, 8), 1)
    layer = fnnet.RMSNorm(epsilon=1e-6, use_scale=use_scale)
    module = torch.nn.RMSNorm(8, eps=1e-6, elementwise_affine=use_scale, dtype=torch.float64)
    params = ()
    if use_scale:
        scale = 1 + 0.3 * _random((8,), 2)
        with torch.no_grad():
            module.weight.copy_(torch.tensor(scale))
        params = {"scale": jnp.asarray(scale)}
    y, dparams, dx = _fnnet_vjp(layer, params, jnp.asarray(x), jnp.asarray(dy))
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = module(x_torch)
    y_torch.backward(torch.tensor(dy))
    _close(y, y_torch)
    _close(dx, x_torch.grad)
    if use_scale:
        _close(dparams["scale"], module.weight.grad)


@pytest.mark.parametrize("layer, reference", [
    (fnnet.ReluSquared, lambda z: torch.relu(z) ** 2),
    (fnnet.SoftCap(3.0), lambda z: 3.0 * torch.tanh(z / 3.0)),
])
def test_relu_squared_and_soft_cap_equal_torch(layer, reference):
    x, dy = 4 * _random((4, 9), 3), _random((4, 9), 4)
    y, _, dx = _fnnet_vjp(layer, (), jnp.asarray(x), jnp.asarray(dy))
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = reference(x_torch)
    y_torch.backward(torch.tensor(dy))
    _close(y, y_torch)
    _close(dx, x_torch.grad)


def _rotary_reference(t, base=10000.0):
    """RoPE on ``t (B, H, T, D)`` as the rotate-half implementations write it."""
    length, size = t.shape[-2], t.shape[-1]
    inverse_frequencies = 1.0 / base ** (torch.arange(0, size, 2, dtype=torch.float64) / size)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inverse_frequencies)
    angles = torch.cat([angles, angles], dim=-1)
    first, second = t[..., : size // 2], t[..., size // 2:]
    return t * angles.cos() + torch.cat([-second, first], dim=-1) * angles.sin()


def _attention_reference(x, w_qkv, b_qkv, w_out, b_out, heads, rope, qk_norm):
    """Causal self-attention in torch: q/k/v from one projection, [QK-norm], [RoPE], SDPA, projection."""
    batch, length, features = x.shape
    q, k, v = (x @ w_qkv + b_qkv).split(features, dim=-1)
    q, k, v = (t.view(batch, length, heads, features // heads).transpose(1, 2) for t in (q, k, v))
    if qk_norm:
        q, k = F.rms_norm(q, (q.shape[-1],), eps=1e-6), F.rms_norm(k, (k.shape[-1],), eps=1e-6)
    if rope:
        q, k = _rotary_reference(q), _rotary_reference(k)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return out.transpose(1, 2).reshape(batch, length, features) @ w_out + b_out


@pytest.mark.parametrize("rope, qk_norm", [(True, False), (False, True), (True, True)])
def test_attention_with_rope_and_qk_norm_equals_a_torch_reference(rope, qk_norm):
    heads, shape = 2, (3, 7, 8)
    layer = fnnet.CausalSelfAttention(heads, rope=rope, qk_norm=qk_norm)
    _, params = layer.init(jax.random.PRNGKey(0), shape[1:])
    params = {key: np.asarray(value) + 0.3 * _random(value.shape, index)
              for index, (key, value) in enumerate(sorted(params.items()))}
    x, dy = _random(shape, 10), _random(shape, 11)
    y, dparams, dx = _fnnet_vjp(layer, jax.tree.map(jnp.asarray, params), jnp.asarray(x), jnp.asarray(dy))
    leaves = {key: torch.tensor(value, requires_grad=True) for key, value in params.items()}
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = _attention_reference(x_torch, leaves["w_qkv"], leaves["b_qkv"], leaves["w_out"], leaves["b_out"],
                                   heads, rope, qk_norm)
    y_torch.backward(torch.tensor(dy))
    _close(y, y_torch)
    _close(dx, x_torch.grad)
    for key, leaf in leaves.items():
        _close(dparams[key], leaf.grad)


def test_rotary_scores_depend_on_the_offset_alone():
    """(R_s q)·(R_t k) = (R_{s+n} q)·(R_{t+n} k): what makes rotary positions relative."""
    from fnnet.layers.attention import rope_tables, rotate
    q, k = jnp.asarray(_random((1, 8), 20)), jnp.asarray(_random((1, 8), 21))
    cos, sin = rope_tables(12, 8, dtype=jnp.float64)
    turned_q, turned_k = rotate(jnp.tile(q, (12, 1)), cos, sin), rotate(jnp.tile(k, (12, 1)), cos, sin)
    scores = turned_q @ turned_k.T
    np.testing.assert_allclose(scores[5, 2], scores[9, 6], rtol=1e-12)
    np.testing.assert_allclose(scores[3, 3], q @ k.T, rtol=1e-12)  # no turn between equal positions


def test_from_torch_converts_rmsnorm_without_a_scale_and_its_default_epsilon():
    from fnnet.interop import ConversionError, from_torch, to_torch
    module = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.RMSNorm(6, elementwise_affine=False))
    model, params, _ = from_torch(module, (5,))      # float32; eps None: float32's machine epsilon, as torch
    assert model.children[1].spec["epsilon"] == float(torch.finfo(torch.float32).eps)
    x = _random((4, 5), 30).astype(np.float32)
    y = np.asarray(model.apply(params, jnp.asarray(x)))
    np.testing.assert_allclose(y, module(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConversionError, match="has no scale, so nothing in it says its width"):
        to_torch(model, params)
