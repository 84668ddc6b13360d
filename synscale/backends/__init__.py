"""Backends run a plan's stages: `local` on this machine, `slurm` on a cluster.

Both hand each stage to `worker.execute`, so a stage behaves the same wherever
it runs."""
