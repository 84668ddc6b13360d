#!/usr/bin/env python
"""Submission and status cost of a large plan on a real Slurm.

    tools/bench_submit.py [--stages 10000] [--baseline-jobs 300] [--json]

Plans STAGES no-op stages (held, so nothing runs, then cancelled), submits
them through synscale's slurm backend (arrays split at MaxArraySize), and
times one status refresh (calls and seconds). Next to it, submits
BASELINE_JOBS of the same jobs one sbatch each through submitit (as a plain
loop of executor.submit would) and scales that rate to STAGES; `ratio` is
the baseline's time over synscale's for the same number of jobs. Needs a
running Slurm (slurm/local-cluster.sh start).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock


def _noop():
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stages", type=int, default=10000)
    p.add_argument("--baseline-jobs", type=int, default=300)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import submitit

    from synscale.backends import slurm, slurmctl
    from synscale.backends.profile import load_profile
    from synscale.plan import state
    from synscale.plan.graph import Plan, Stage
    from synscale.plan.layout import RunDir
    from synscale.status import collect
    from synscale.study.load import load_study

    root = Path(tempfile.mkdtemp(prefix="bench_submit_"))
    study_file = root / "bench.toml"
    study_file.write_text('[study]\nname = "bench"\n[sweep]\nsources = ["real"]\n'
                          'real_images_per_class = [4]\n[model]\nwidth = [16]\n')
    study = load_study(study_file)
    profile, problems = load_profile("local", str(study_file))
    if problems:
        raise SystemExit("\n".join(problems))
    plan = Plan("bench", [Stage(f"noop{i:06d}", "evaluate", {"i": i})
                          for i in range(args.stages)])
    run = RunDir(root / "bench")
    state.write_text(run.plan_file, plan.to_json())

    calls = {"n": 0, "sbatch": 0}
    real_run = slurmctl._run

    def counting(cmd):
        calls["n"] += 1
        return real_run(cmd)

    real_popen_run = submitit.slurm.slurm.SlurmExecutor._submit_command

    def count_sbatch(self, command):
        calls["sbatch"] += 1
        return real_popen_run(self, command)

    with mock.patch.object(slurmctl, "_run", counting), \
            mock.patch.object(submitit.slurm.slurm.SlurmExecutor, "_submit_command", count_sbatch):
        start = time.perf_counter()
        sub = slurm.submit_plan(plan, run, study, profile, hold=True)
        submit_s = time.perf_counter() - start
        sbatch_calls = calls["sbatch"]
        calls["n"] = 0
        start = time.perf_counter()
        info = collect(run)
        status_s = time.perf_counter() - start
        status_calls = calls["n"]
    ours = [a["job_id"] for a in sub.arrays] + ([sub.analysis] if sub.analysis else [])
    slurm.cancel(ours)  # held, with the analysis job after them: none would ever run

    # Baseline: one sbatch per job, submitit's plain executor.submit.
    ex = submitit.SlurmExecutor(folder=root / "baseline" / "%j")
    ex.update_parameters(time=5, additional_parameters={"hold": True}, partition=profile.partition)
    start = time.perf_counter()
    jobs = [ex.submit(_noop) for _ in range(args.baseline_jobs)]
    base_s = time.perf_counter() - start
    slurm.cancel([j.job_id for j in jobs])
    base_rate = args.baseline_jobs / base_s
    base_for_all = args.stages / base_rate

    result = {
        "stages": args.stages, "arrays": len(sub.arrays), "sbatch_calls": sbatch_calls,
        "max_array_size": slurm.max_array_size(), "submit_seconds": round(submit_s, 2),
        "stages_per_second": round(args.stages / submit_s, 1),
        "status_refresh_seconds": round(status_s, 3), "status_refresh_calls": status_calls,
        "status_pending": sum(k["pending"] for k in info["kinds"].values()),
        "baseline_jobs": args.baseline_jobs, "baseline_seconds": round(base_s, 2),
        "baseline_jobs_per_second": round(base_rate, 2),
        "baseline_seconds_for_all_stages": round(base_for_all, 1),
        "ratio": round(base_for_all / submit_s, 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>34}: {v}")
        print(f"(baseline measured on {args.baseline_jobs} jobs and scaled to {args.stages}; "
              "ratio = baseline time / synscale time for the same jobs)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
