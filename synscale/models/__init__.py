"""Models that score or consume images: the reference classifier for generated data."""
