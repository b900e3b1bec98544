"""Data augmentation inside the compiled epoch: what random_translation does, pixel for pixel, and that
fit applies an augmentation to every training batch (never to eval data), reproducibly and on resume."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import draws, losses, train


def _shifted(image, dy, dx):
    """``image`` (H, W, C) moved down by dy and right by dx, zeros where nothing comes in (NumPy)."""
    height, width = image.shape[:2]
    out = np.zeros_like(image)
    out[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        image[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return out


def test_random_translation_moves_each_image_by_its_own_shift_within_the_bound():
    images = np.asarray(draws.uniform(jax.random.PRNGKey(0), (64, 7, 6, 2)) + 0.5)  # no zero pixels
    shifted = np.asarray(train.random_translation(2)(jax.random.PRNGKey(1), jnp.asarray(images)))
    seen = set()
    for image, out in zip(images, shifted):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(out, _shifted(image, dy, dx))]
        assert len(matches) == 1, "each output is exactly one shift of its input, within ±2 pixels"
        seen.add(matches[0])
    assert len(seen) >= 15, f"the shifts are drawn per image (seen {sorted(seen)})"
    flat = train.random_translation(2, image_shape=(7, 6, 2))(jax.random.PRNGKey(1),
                                                                jnp.asarray(images.reshape(64, -1)))
    np.testing.assert_array_equal(np.asarray(flat).reshape(shifted.shape), shifted)
    same = train.random_translation(0)(jax.random.PRNGKey(1), jnp.asarray(images))
    np.testing.assert_array_equal(np.asarray(same), images)


def test_random_translation_names_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="max_shift must be an int >= 0"):
        train.random_translation(-1)
    with pytest.raises(ValueError, match=r"image_shape must be \(H, W, C\)"):
        train.random_translation(2, image_shape=(28, 28))
    with pytest.raises(ValueError, match=r"\(N, 784\) for image_shape \(28, 28, 1\), got \(3, 100\)"):
        train.random_translation(2, image_shape=(28, 28, 1))(jax.random.PRNGKey(0), jnp.zeros((3, 100)))
    with pytest.raises(ValueError, match=r"expected a batch of images \(N, H, W, C\), got \(3, 100\)"):
        train.random_translation(2)(jax.random.PRNGKey(0), jnp.zeros((3, 100)))
    with pytest.raises(ValueError, match=r"a shift of up to 5 pixels can move a 5x6 image out of the frame"):
        train.random_translation(5)(jax.random.PRNGKey(0), jnp.zeros((3, 5, 6, 1)))
    data = (jnp.zeros((8, 4, 4, 1)), jnp.zeros(8, jnp.int32))
    model = fnnet.serial(fnnet.Flatten, fnnet.Dense(2))
    options = dict(epochs=1, batch_size=4, key=jax.random.PRNGKey(0), verbose=False)
    with pytest.raises(ValueError, match=r"makes the augmentation, e\.g\. fit\(\.\.\., augment=train\.random_translation\(1\)\)"):
        train.fit(model, losses.softmax_cross_entropy, optax.sgd(0.1), data, augment=train.random_translation,
                  **options)
    with pytest.raises(ValueError, match=r"augment must return a batch of the shape and dtype it was given, "
                                         r"\(4, 4, 4, 1\) float32; got \(4, 2, 4, 1\) float32"):
        train.fit(model, losses.softmax_cross_entropy, optax.sgd(0.1), data, augment=lambda key, x: x[:, :2],
                  **options)
    with pytest.raises(ValueError, match="augment must be a function"):
        train.fit(fnnet.Dense(1), losses.mse, optax.sgd(0.1), (jnp.zeros((4, 2)), jnp.zeros((4, 1))), epochs=1,
                  batch_size=2, key=jax.random.PRNGKey(0), verbose=False, augment="shift")


MODEL = fnnet.serial(fnnet.Dense(8), fnnet.Relu, fnnet.Dense(3))


def _data(n=200):
    kx, kw = jax.random.split(jax.random.PRNGKey(3))
    x = draws.normal(kx, (n, 5))
    return x, jnp.argmax(x @ draws.normal(kw, (5, 3)), -1)


def test_fit_augments_every_training_batch_and_never_the_eval_data():
    """Training with augment(key, x) = -x is training on -x: the same parameters, step for step (a padded
    last batch included); the eval figures are those of the data as given."""
    x, y = _data(203)
    options = dict(epochs=2, batch_size=50, key=jax.random.PRNGKey(0), verbose=False)
    negated, history = train.fit(MODEL, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), eval_data=(x, y),
                                 augment=lambda key, xb: -xb, **options)
    reference, _ = train.fit(MODEL, losses.softmax_cross_entropy, optax.adam(1e-2), (-x, y), **options)
    chex.assert_trees_all_close(negated.params, reference.params, rtol=1e-6, atol=1e-6)
    result = train.evaluate(MODEL, losses.softmax_cross_entropy, negated.params, (x, y))
    assert history.eval_loss[-1] == pytest.approx(result["loss"], rel=1e-6)


def test_augmented_runs_repeat_from_their_seed_and_resume_to_the_same_parameters(tmp_path):
    x, y = _data(120)
    noise = lambda key, xb: xb + 0.3 * draws.normal(key, xb.shape)  # noqa: E731
    options = dict(batch_size=32, key=jax.random.PRNGKey(4), verbose=False, augment=noise)
    whole, _ = train.fit(MODEL, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=3, **options)
    again, _ = train.fit(MODEL, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=3, **options)
    chex.assert_trees_all_equal(whole.params, again.params)
    train.fit(MODEL, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=1, checkpoint_dir=tmp_path,
              **options)
    resumed, _ = train.fit(MODEL, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=3,
                           checkpoint_dir=tmp_path, resume=True, **options)
    chex.assert_trees_all_close(resumed.params, whole.params, rtol=1e-6, atol=1e-7)
    plain, _ = train.fit(MODEL, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=3,
                         **dict(options, augment=None))
    assert not np.allclose(np.asarray(plain.params[0]["w"]), np.asarray(whole.params[0]["w"]))
