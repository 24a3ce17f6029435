"""preftrack gateway. This distribution also owns the TensorFlow-free event schema and feature
definitions, because the gateway computes the features online and the trainer (a later stage of the
data's path) reuses them offline."""
