"""MNIST with a small residual CNN: each conv block followed by ``Residual(Conv-ReLU-Conv)``.

``fnnet.Residual(block)`` is ``serial(FanOut(2), parallel(block, Identity), FanInSum)``: its
backward adds the gradient of the skip path to the block's (the fan-out's chain rule,
written once). Writes the figures to ``runs/mnist-resnet/``.
Run: ``python examples/resnet_mnist.py [--epochs 6]``
"""

from cnn_classifier import main

from fnnet import datasets

if __name__ == "__main__":
    main("mnist", datasets.mnist, epochs=6, bar=0.99, kind="resnet")
