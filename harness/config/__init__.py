"""Typed configuration: trial specs, sweep files, presets, and turning them into arguments."""
