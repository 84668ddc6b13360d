"""synscale: scaling-law studies of synthetic training data."""
__version__ = "0.1.0"
