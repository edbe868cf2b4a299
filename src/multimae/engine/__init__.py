"""Training machinery applied from outside the model: precision (and, later, the loop, checkpoints)."""
