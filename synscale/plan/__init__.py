"""The plan: content-hashed stages, their graph, and the run directory."""
