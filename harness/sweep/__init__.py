"""Running sweeps: expansion into trials, the Ray Tune runner, results-folder state."""
