"""Reference networks: four small MNIST architectures, ResNet-50 (torchvision-compatible), a CIFAR
ResNet-18 and Wong et al.'s MNIST CNN. All take images in [0, 1] and return logits; each normalises its input itself
(``normalize=True``, constants not stored in the state dict), except Wong et al.'s CNN, which takes raw pixels as
theirs does. Architectures only: training lives in
:mod:`robustkit.training`, cached trained models in :mod:`robustkit.zoo`."""
from robustkit.models.deep_defense_nets import CaffeLeNet, DeepDefenseMLP
from robustkit.models.mnist import MLP, MNIST_MEAN, MNIST_MODELS, MNIST_STD, ConvNet, LeNet, VGGSmall
from robustkit.models.resnet import (CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, ResNet18Cifar, ResNet50,
                                     resnet50)
from robustkit.models.wong_mnist import wong_mnist_cnn

__all__ = ["CaffeLeNet", "DeepDefenseMLP", "MLP", "LeNet", "ConvNet", "VGGSmall", "MNIST_MODELS", "ResNet50", "resnet50", "ResNet18Cifar", "wong_mnist_cnn",
           "MNIST_MEAN", "MNIST_STD", "CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD"]
