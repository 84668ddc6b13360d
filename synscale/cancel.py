"""`python -m synscale.cancel RUN_DIR`: cancel what a study has queued or running.

Only the jobs this run submitted (slurm/submissions.json) are touched, in one
scancel call. Finished stages keep their outputs; a later launch resubmits
what was cancelled.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from synscale.plan.layout import RunDir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synscale.cancel", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    from synscale.backends import slurm

    run = RunDir.given(args.run_dir)
    if run is None:
        return 2
    try:
        queue = slurm.queue_states()
    except slurm.SlurmError as e:
        print(f"error: {e}; nothing was cancelled: try again once `scontrol ping` says UP",
              file=sys.stderr)
        return 4
    from synscale.backends import records as submissions
    records = submissions.load(run)
    # with what a killed launch submitted, and jobs of this run no record knows
    unknown = submissions.adopt(run, records, queue).unknown
    jobs = set(records["stages"].values()) | ({records["analysis"]} if records.get("analysis")
                                              else set())
    jobs |= {task for task in queue if task.split("_")[0] in unknown}
    live = sorted(j for j in jobs if j in queue)
    slurm.cancel(live)
    if args.json:
        print(json.dumps({"cancelled": live}))
    else:
        print(f"cancelled {len(live)} queued or running job(s) of {run.root}" if live else
              f"nothing of {run.root} is queued or running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
