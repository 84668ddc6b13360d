"""What a study's fits look like to a person: terminal tables, markdown, plots.

`tables` renders series fits and the synthetic-vs-real equivalence as rich
tables and as the markdown of results/summary.md (one set of cells feeds
both, so they never disagree); `plots` draws the scaling curves to a PNG.
matplotlib is imported inside the plot function only.
"""
