"""Reference networks: four small MNIST architectures, ResNet-50 (torchvision-compatible) and a CIFAR
ResNet-18. All take images in [0, 1] and return logits; each normalises its input itself
(``normalize=True``, constants not stored in the state dict)."""
from robustkit.models._normalization import (CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, MNIST_MEAN,
                                             MNIST_STD)
from robustkit.models.mnist import MLP, MNIST_MODELS, ConvNet, LeNet, VGGSmall
from robustkit.models.resnet import ResNet18Cifar, ResNet50, resnet50
from robustkit.models.train import evaluate_accuracy, train_classifier, trained_mnist_model

__all__ = ["MLP", "LeNet", "ConvNet", "VGGSmall", "MNIST_MODELS", "ResNet50", "resnet50", "ResNet18Cifar",
           "train_classifier", "evaluate_accuracy", "trained_mnist_model",
           "MNIST_MEAN", "MNIST_STD", "CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD"]
