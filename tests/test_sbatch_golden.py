"""The sbatch script a training array gets, pinned in a golden file (as
submitit pins its own): resources from the study, the site profile's
partition, account and setup lines, the dependency, the %N cap, the hold
and the comment that maps it back to the launch's records.

Set SYNSCALE_UPDATE_GOLDEN=1 to rewrite the file after an intended change."""
import os
from pathlib import Path

from synscale.backends.profile import Profile
from synscale.backends.slurm import _executor
from synscale.plan.layout import RunDir
from synscale.study.load import load_study

GOLDEN = Path(__file__).parent / "golden" / "train_array.sbatch"


def test_training_array_script_matches_golden(small_study, tmp_path):
    study = load_study(small_study("golden", **{
        "[backend]": "[resources.train]\nnodes = 2\ntasks_per_node = 1\ncpus = 2\n"
                     "mem_gb = 6\ntime_min = 90\nmax_parallel = 3\n\n[backend]"}))
    profile = Profile(partition="gpu", account="synth", qos="normal", constraint="a100",
                      max_nodes=4, max_mem_gb=64, max_time_min=600,
                      setup=["module load cuda/12.4", "source ~/venv/bin/activate"])
    run = RunDir(tmp_path / "run")
    # the code folder named, not copied: its hash would change with every edit
    ex = _executor(run, study, profile, "train", study.resources["train"],
                   run.root / "code" / "HASH", "synscale:TOKEN:INTENT")
    ex.update_parameters(dependency="afterok:101:102")
    text = ex._make_submission_file_text("python -u -m submitit.core._submit", "uid")
    text = text.replace(str(run.root), "RUN")
    if os.environ.get("SYNSCALE_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=2",
                 "#SBATCH --mem=6144M", "#SBATCH --time=90", "#SBATCH --partition=gpu",
                 "#SBATCH --account=synth", "#SBATCH --dependency=afterok:101:102",
                 "module load cuda/12.4",
                 # held until the launch has recorded it (backends/records.py)
                 "#SBATCH --hold", "#SBATCH --comment=synscale:TOKEN:INTENT"):
        assert line in text
