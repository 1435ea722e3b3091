"""Benchmarks that print measured tables (`tfbench bench ...`)."""
