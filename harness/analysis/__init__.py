"""Analyses of trained trials: loss landscapes and the Zipf paper's analyses."""
