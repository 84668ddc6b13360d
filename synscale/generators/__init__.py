"""Class-conditional image generators. Heavy imports (torch, diffusers) stay inside functions."""
