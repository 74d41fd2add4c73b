"""Datasets: MNIST (shipped, checksum-verified), CIFAR-10 binary batches, ImageNet folders. Images in [0, 1]."""
from robustkit.datasets._common import ChecksumError, ImageTensorDataset
from robustkit.datasets.cifar import cifar10
from robustkit.datasets.imagenet import ImageFolderDataset, imagenet_folder, read_classes_file
from robustkit.datasets.mnist import MNIST_SHA256, mnist

__all__ = ["mnist", "cifar10", "imagenet_folder", "read_classes_file", "ImageTensorDataset",
           "ImageFolderDataset", "ChecksumError", "MNIST_SHA256"]
