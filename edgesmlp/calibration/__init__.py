"""Calibration and evaluation images: sources, preprocessing, and the bundled digits."""
