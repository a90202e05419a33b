"""Reusable parts of the pretraining recipe: arguments, optimizers, checkpoints, logs, pictures."""
