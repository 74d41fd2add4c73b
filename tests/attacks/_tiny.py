from tests._tiny import labelled_by, other_class, tiny_batch, tiny_cnn  # noqa: F401  (the shared tiny-model helper)
