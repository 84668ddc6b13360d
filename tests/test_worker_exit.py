"""A finished Slurm task leaves without the interpreter's teardown, where a
C++ thread still joinable used to abort it after its work was done (Slurm
then called the task FAILED); a task that did not finish exits as before."""
import subprocess
import sys

import pytest

from conftest import ROOT

# A global whose finalizer aborts: what the communication libraries' threads
# did at teardown. The log line must reach its file whatever happens.
SCRIPT = """
import logging, os, sys
from synscale.backends import worker
class Teardown:
    def __del__(self):
        os.abort()
held = Teardown()
log = logging.getLogger("t")
log.addHandler(logging.FileHandler(sys.argv[1]))
log.warning("stage done")
worker._leave_without_teardown()
worker._finished[0] = sys.argv[2] != "unfinished"
if sys.argv[2] == "raises":
    raise RuntimeError("submitit could not save the result")
"""


# (-6: SIGABRT, the teardown ran as it always did)
@pytest.mark.parametrize("how, code", [("finished", 0), ("raises", -6), ("unfinished", -6)])
def test_a_finished_task_skips_the_teardown_and_only_it(tmp_path, how, code):
    log = tmp_path / "log.txt"
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(log), how], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == code, r.stderr
    assert log.read_text() == "stage done\n"
    assert ("could not save the result" in r.stderr) == (how == "raises")
