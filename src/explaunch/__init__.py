"""explaunch: Hydra sweeps of ML experiments with measured speed, energy and complete records."""

__version__ = "0.1.0"
