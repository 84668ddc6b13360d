"""synscale: scaling-law studies of synthetic training data."""
__version__ = "0.2.0"
