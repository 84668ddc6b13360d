"""From the gathered metrics table to scaling-law fits.

`fit` fits loss against data size per series (a power law, with or without an
irreducible floor) and turns two fitted curves into a synthetic-vs-real
equivalence: how many synthetic images buy the loss of a given real size.
Only numpy and scipy are imported here, so the fit tools start fast on a
login node.
"""
