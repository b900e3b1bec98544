"""Data augmentation on the device, inside the compiled epoch.

An augmentation is a pure function ``augment(key, x) -> x'`` of one training batch: the
same shape and dtype, new examples drawn with ``key``. :func:`fnnet.train.fit` (and
:func:`fnnet.train.make_epoch`) call it on every gathered training batch inside the
``lax.scan``, with the key :func:`augment_key` of the step, so no batch leaves the device and a
run is reproducible from its seed (a resumed run, or the replay of a diverged epoch, sees the
same examples). Evaluation data is never augmented.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from fnnet import train
  >>> shift = train.random_translation(1, image_shape=(4, 4, 1))
  >>> x = jnp.arange(2 * 16, dtype=jnp.float32).reshape(2, 16)      # two flat 4x4 images
  >>> shifted = shift(jax.random.PRNGKey(0), x)
  >>> shifted.shape, shifted.dtype
  ((2, 16), dtype('float32'))
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

_AUGMENT_STREAM = 0x61756720  # "aug ": keeps augmentation keys apart from dropout's fold_in(key, step)


def augment_key(state):
    """The key of the augmentation of the batch of ``state``'s next step:
    ``fold_in(fold_in(state.key, "aug "), state.step)`` (independent of the dropout key of the step,
    ``fold_in(state.key, state.step)``)."""
    return jax.random.fold_in(jax.random.fold_in(state.key, _AUGMENT_STREAM), state.step)


def augment_batch(augment, state, x):
    """``augment(augment_key(state), x)``: the training batch ``x`` of ``state``'s next step as
    augmented, checked to keep its shape and dtype (a ValueError naming ``augment`` otherwise)."""
    out = augment(augment_key(state), x)
    if jnp.shape(out) != x.shape or jnp.result_type(out) != x.dtype:
        raise ValueError(f"augment must return a batch of the shape and dtype it was given, "
                         f"{x.shape} {x.dtype}; got {jnp.shape(out)} {jnp.result_type(out)}")
    return out


def random_translation(max_shift: int = 1, image_shape=None):
    """Shifts each image by its own random ``(dy, dx)``, each uniform in ``[-max_shift, max_shift]``
    pixels, filling the uncovered border with zeros (the background of MNIST-like images).

    ``x' [n, i, j, c] = x[n, i - dy_n, j - dx_n, c]`` (0 outside the image).

    Args:
      max_shift: the largest shift in pixels, in each direction (an int >= 0, smaller than the
        images' height and width; 0 changes nothing).
      image_shape: ``(H, W, C)`` of one image when batches hold flat examples (``(N, H·W·C)``,
        as ``fnnet train mnist`` feeds its CNN); ``None`` when they are already ``(N, H, W, C)``.

    Returns:
      ``augment(key, x) -> x'`` for :func:`fnnet.train.fit`'s ``augment``.
    """
    if not isinstance(max_shift, int) or isinstance(max_shift, bool) or max_shift < 0:
        raise ValueError(f"random_translation: max_shift must be an int >= 0 (pixels), got {max_shift!r}; "
                         f"random_translation(max_shift) makes the augmentation, e.g. "
                         f"fit(..., augment=train.random_translation(1))")
    if image_shape is not None:
        image_shape = tuple(image_shape)
        if len(image_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in image_shape):
            raise ValueError(f"random_translation: image_shape must be (H, W, C), got {image_shape}")

    def augment(key, x):
        images = x
        if image_shape is not None:
            if x.shape[1:] != (math.prod(image_shape),):
                raise ValueError(f"random_translation: expected a batch of flat images of shape "
                                 f"(N, {math.prod(image_shape)}) for image_shape {image_shape}, got {x.shape}")
            images = x.reshape((x.shape[0],) + image_shape)
        elif x.ndim != 4:
            raise ValueError(f"random_translation: expected a batch of images (N, H, W, C), got {x.shape}; "
                             f"for flat images give image_shape=(H, W, C)")
        n, height, width, _ = images.shape
        if max_shift >= min(height, width):
            raise ValueError(f"random_translation: a shift of up to {max_shift} pixels can move a {height}x{width} "
                             f"image out of the frame; give max_shift < {min(height, width)}")
        if max_shift == 0:
            return x
        s = max_shift
        padded = jnp.pad(images, ((0, 0), (s, s), (s, s), (0, 0)))
        # corner of the window to read: s - shift, in [0, 2s]
        corners = jax.random.randint(key, (n, 2), 0, 2 * s + 1)

        def window(image, corner):
            return lax.dynamic_slice(image, (corner[0], corner[1], 0), (height, width, image.shape[-1]))

        shifted = jax.vmap(window)(padded, corners)
        return shifted.reshape(x.shape)

    return augment
