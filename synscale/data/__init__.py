"""Real datasets and the FFCV files that carry images between stages."""
