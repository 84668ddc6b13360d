import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DS_ACCELERATOR", "cpu")
# Two test processes share two cores (make test): one thread per local stage, or
# the OpenMP threads of both oversubscribe the machine (they spin while waiting).
os.environ.setdefault("SYNSCALE_THREADS", "1")

# A reduced embedded study: every stage kind, three sizes per source (the
# fewest a power law accepts), one width, few steps.
SMALL_STUDY = """
[study]
name = "{name}"
seed = 0

[data]
dataset = "digits"
test_per_class = 45

[sweep]
sources = ["real", "synthetic"]
real_images_per_class = [4, 8, 16]
synthetic_images_per_class = [4, 8, 16]

[generate]
guidance = [1.0]
steps = 20
batch_size = 8
classes_per_task = 5

[model]
width = [16]
depth = 1

[train]
batch_size = 32
min_steps = 20
max_steps = 40

[backend]
workers = {workers}
"""


@pytest.fixture
def small_study(tmp_path):
    def make(name="small", workers=1, **replace):
        text = SMALL_STUDY.format(name=name, workers=workers)
        for old, new in replace.items():
            text = text.replace(old, new)
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        return path
    return make


def run_module(module, *args, timeout=900, **kw):
    import subprocess
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=kw.get("cwd", ROOT))


def run_tool(script, *args, timeout=900):
    """A script under tools/, run as a user runs it."""
    import subprocess
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"}
    return subprocess.run([sys.executable, str(ROOT / "tools" / script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def read_generated(*folders) -> dict:
    """Every image (decoded) and metadata array of small generate stages, in
    (class, index) order: what a test inspects (the stages stream, never this)."""
    from synscale.data.shards import Rows
    rows = Rows(list(folders))
    out = {key: rows.meta(key) for key in ("labels", "indices", "seeds", "prompts")}
    out["images"] = np.stack([rows[i] for i in range(len(rows))])
    return out


def at_second_shard(action: str) -> str:
    """Python source that patches os.replace so that, when a process commits
    its second .npz shard (written whole under its temporary name, not yet
    renamed), it runs `action` (one line, with os, pathlib and time imported)
    instead: how tests stop or kill a stage in the middle of a write."""
    return (
        "import os, pathlib, time\n"
        "_replace, _seen = os.replace, []\n"
        "def _at_second_shard(src, dst, *args, **kwargs):\n"
        "    if str(dst).endswith('.npz'):\n"
        "        _seen.append(dst)\n"
        "        if len(_seen) == 2:\n"
        f"            {action}\n"
        "    return _replace(src, dst, *args, **kwargs)\n"
        "os.replace = _at_second_shard\n")


def class_folders(root, names, per_class, seed=0):
    """An image folder: one folder per class name, `per_class` JPEGs in each
    (<name>_<i>.JPEG). Class c's images lean to colour channel c % 3, so a
    model can learn them."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 120, (40, 48, 3))
            image[..., c % 3] += 120
            Image.fromarray(image.astype(np.uint8)).save(root / name / f"{name}_{i}.JPEG")
    return root


# Figures the tests measure (sizes, memory, seconds), printed together at the
# end of the run, so that `make test` shows them without -s. The suite runs in
# pytest-xdist workers (Makefile), so they go through a file the controller
# names: workers inherit its environment.
FIGURES_ENV = "SYNSCALE_TEST_FIGURES"


def pytest_configure(config):
    if getattr(config.option, "dist", "no") == "loadgroup" and \
            int(pytest.__version__.split(".")[0]) >= 9:
        # seen with pytest 9.2 and pytest-xdist 3.8: groups silently ignored
        raise pytest.UsageError(f"pytest {pytest.__version__} drops pytest-xdist's group "
                                "suffix: the Slurm tests would run on two workers at once; "
                                "install what pyproject.toml pins (pytest<9)")
    if FIGURES_ENV not in os.environ:  # the controller (or a run without xdist)
        import tempfile
        fd, path = tempfile.mkstemp(prefix="synscale-figures-", suffix=".txt")
        os.close(fd)
        os.environ[FIGURES_ENV] = path


def record_figure(line: str) -> None:
    with open(os.environ[FIGURES_ENV], "a") as f:
        f.write(line.replace("\n", " ") + "\n")


def pytest_terminal_summary(terminalreporter):
    path = Path(os.environ.get(FIGURES_ENV, ""))
    if not path.is_file() or hasattr(terminalreporter.config, "workerinput"):
        return
    lines = path.read_text().splitlines()
    path.unlink()
    if lines:
        terminalreporter.section("figures measured by the tests")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.hookimpl(trylast=True)  # after pytest-xdist has named each test's group
def pytest_collection_modifyitems(config, items):
    """The Slurm tests first: they run one after another in one xdist worker
    (xdist_group "slurm") and make the suite's longest chain, so that worker
    starts on them while the other takes everything else. In a worker, a
    grouped test whose id lacks its group is an error: the tests would share
    the one cluster from two workers at once (pytest 9 with xdist 3.8 did that
    silently)."""
    def group(item) -> str | None:
        marks = list(item.iter_markers("xdist_group"))
        return marks[0].args[0] if marks and marks[0].args else None

    if getattr(config.option, "loadgroup", False):
        lost = [i.nodeid for i in items if group(i) and not i.nodeid.endswith("@" + group(i))]
        if lost:
            raise pytest.UsageError(f"xdist_group is not honoured (pytest {pytest.__version__}): "
                                    f"{lost[0]} runs outside its group; pyproject.toml pins "
                                    "the pytest that keeps it")
    items.sort(key=lambda item: group(item) != "slurm")  # stable: file order otherwise
