"""What a running stage uses, whatever scheduled it: the harness that runs a
stage and writes its records (harness.py), the process group (distributed.py)
and checkpoint-and-requeue at a signal (preemption.py). Nothing here knows
Slurm's or the local pool's bookkeeping; backends/ only schedules."""
