"""Real evaluation sets, loaded as arrays for the evaluate stage."""
from __future__ import annotations

import numpy as np


def load_eval_set(name: str, data: dict) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits-test":
        from synscale.data.digits import load_split
        split = load_split(data["split_seed"], data["test_per_class"])
        return split.test_x, split.test_y
    raise ValueError(f"evaluation set {name!r} is not available in this version; "
                     "available: 'digits-test'")
