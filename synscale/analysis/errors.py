"""The error of a fit that the points cannot support: its own module so that
fit.py and bootstrap.py (which counts the resamples that raise it) both
import it without importing each other."""


class FitError(ValueError):
    """The points cannot support the requested fit; the message says why."""
