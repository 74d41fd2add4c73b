from tests._tiny import other_class, tiny_batch, tiny_cnn  # noqa: F401  (the shared tiny-model helper)
