"""multimae: multi-modal, multi-task masked autoencoders for vision."""

__version__ = "0.1.0"
