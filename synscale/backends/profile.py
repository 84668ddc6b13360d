"""Site profiles: what a cluster offers. A name reads synscale/profiles/<name>.toml
(shipped with the package); a path ending in .toml is a site's own file.

Resources a study asks for are checked against the profile before anything
is submitted, so an impossible request fails at validation, never at sbatch
time.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

PROFILES = Path(__file__).resolve().parents[1] / "profiles"


@dataclass(frozen=True)
class Profile:
    partition: str = ""           # sbatch --partition; empty: the cluster's default
    account: str = ""             # sbatch --account
    qos: str = ""                 # sbatch --qos
    constraint: str = ""          # sbatch --constraint (node features)
    max_nodes: int = 1            # most nodes one job may span
    max_gpus_per_node: int = 0    # GPUs a node has
    max_mem_gb: float = 8.0       # memory a node has
    max_time_min: int = 60        # the partition's time limit
    setup: list = field(default_factory=list)  # shell lines run before the tasks
    analysis_partition: str = ""  # CPU partition for the job that fits results; empty: partition
    path: str = ""                # where it was read from


def profile_path(name: str, study_file: str) -> Path:
    if name.endswith(".toml"):
        p = Path(name)
        return p if p.is_absolute() else Path(study_file).parent / p
    return PROFILES / f"{name}.toml"


def load_profile(name: str, study_file: str) -> tuple[Profile | None, list[str]]:
    where = f"{study_file}: backend.profile = {name!r}"
    path = profile_path(name, study_file)
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES.glob("*.toml"))
        return None, [f"{where}: no profile at {path}; allowed: a shipped profile "
                      f"({', '.join(known)}) or a path to a site's .toml file"]
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        return None, [f"{path}: not valid TOML: {e}"]
    allowed = {f.name: f for f in fields(Profile) if f.name != "path"}
    problems = []
    for key, value in raw.items():
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            problems.append(f"{path}: {key}: unknown key; allowed: {', '.join(allowed)}"
                            + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            continue
        default = allowed[key].default if key != "setup" else []
        kind = type(default)
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if not ok or isinstance(value, bool):
            problems.append(f"{path}: {key} = {value!r}: expected {kind.__name__}")
        elif isinstance(value, float) and not math.isfinite(value):
            # a nan limit lets every request through check_resources; 1e400 reads as inf
            problems.append(f"{path}: {key} = {value!r}: must be a finite number")
    if problems:
        return None, problems
    return Profile(**raw, path=str(path)), []


def check_resources(resources: dict, profile: Profile, study_file: str) -> list[str]:
    out = []
    for kind, r in resources.items():
        where = f"{study_file}: resources.{kind}"
        limits = (("nodes", r.nodes, profile.max_nodes), ("gpus", r.gpus, profile.max_gpus_per_node),
                  ("mem_gb", r.mem_gb, profile.max_mem_gb),
                  ("time_min", r.time_min, profile.max_time_min))
        for key, value, most in limits:
            if value > most:
                out.append(f"{where}.{key} = {value}: the profile {profile.path} allows at most "
                           f"{most}")
    return out
