"""Fashion-MNIST with the same 784-512-512-10 MLP as mnist.py: >= 88.5% test accuracy.

Zalando's clothing images are harder than digits; the same hand-written
backward and Adam get close to 90%. Writes curves, a confusion matrix (with
class names) and misclassified images to ``runs/fashion-mnist/``.

Run: ``python examples/fashion_mnist.py [--epochs 15] [--out runs/fashion-mnist]``
"""

from image_classifier import main

from fnnet import datasets

if __name__ == "__main__":
    main("fashion-mnist", datasets.fashion_mnist, epochs=15, bar=0.885,
         class_names=datasets.FASHION_CLASSES)
