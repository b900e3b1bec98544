"""MNIST with a small CNN (conv-BN-ReLU-pool x2, dropout, dense), every backward hand-written: ~99.3%.

Writes curves, a confusion matrix and a grid of misclassified digits to ``runs/mnist-cnn/``.
Run: ``python examples/mnist_cnn.py [--epochs 12] [--out runs/mnist-cnn]``
"""

from cnn_classifier import main

from fnnet import datasets

if __name__ == "__main__":
    main("mnist", datasets.mnist, epochs=12, bar=0.992)  # measured 99.29-99.34% over numerically equal programs
