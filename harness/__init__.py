"""Everything that runs methods: data, models, the training loop, the Ray Tune runner, results, the CLI."""
