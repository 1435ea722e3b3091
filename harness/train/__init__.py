"""Training one trial: the loop, checkpoints, data-parallel plumbing, metrics."""
