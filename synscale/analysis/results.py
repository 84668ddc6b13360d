"""A run's results: gather -> fit -> report, all written under results/.

results/
  metrics.csv       one row per (train stage, eval set)
  generation.csv    recognizability and diversity per generation config
  fits.json         every series fit and the synthetic-per-real multipliers
  summary.md        the same tables as the terminal, in markdown
  plots/scaling.png loss against images per class, log-log, with fits
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from synscale.analysis.fit import fit_series, synthetic_equivalence
from synscale.analysis.gather import gather, generation_quality, write_csv
from synscale.plan import state
from synscale.plan.layout import RunDir

FITS_SCHEMA = 1


def _lead_law(run: RunDir) -> str:
    from synscale.study.load import load_study
    try:
        return load_study(run.study_file).analysis.law
    except Exception:  # a study frozen by an older version still gathers
        return "power"


def _quality_table(quality: list[dict]):
    from rich.table import Table

    table = Table(title="generated images: recognizability by a real-data classifier, diversity")
    for col in ("generator", "prompts", "guidance t", "steps", "recognizability", "diversity"):
        table.add_column(col, justify="left" if col in ("generator", "prompts") else "right")
    for q in quality:
        table.add_row(q["generator"], q["prompts"], f"{q['guidance']:g}", str(q["steps"]),
                      f"{q['recognizability']:.1%}", f"{q['diversity']:.3f}")
    if quality:
        table.caption = (f"real test images: {quality[0]['real_test_accuracy']:.1%} recognized; "
                         f"real pool diversity {quality[0]['real_pool_diversity']:.3f}")
    return table


def _write_quality_csv(quality: list[dict], path: Path) -> None:
    with state.atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, ["generator", "prompts", "guidance", "steps",
                                   "recognizability", "diversity"], extrasaction="ignore")
            w.writeheader()
            w.writerows(quality)


def analyze_rows(rows: list[dict], results: Path, law: str = "power", console=None,
                 quality: list[dict] = ()) -> dict:
    from synscale.report.plots import plot_scaling
    from synscale.report.tables import (print_equivalence_tables, print_series_table,
                                        summary_markdown)

    fits = fit_series(rows, law=law)
    equivalences = synthetic_equivalence(fits)
    doc = {"schema": FITS_SCHEMA, "law": law, "x": "images_per_class", "y": "loss",
           "series": [f.to_dict() for f in fits],
           "synthetic_per_real": [e.to_dict() for e in equivalences]}
    state.write_json(results / "fits.json", doc)
    md = summary_markdown(fits, equivalences)
    if quality:
        md += "\n## Generated images\n\n| generator | prompts | guidance t | recognizability | " \
              "diversity |\n|---|---|---|---|---|\n" + "".join(
                  f"| {q['generator']} | {q['prompts']} | {q['guidance']:g} | "
                  f"{q['recognizability']:.1%} | {q['diversity']:.3f} |\n" for q in quality)
    state.write_text(results / "summary.md", md)
    plot = plot_scaling(fits, results / "plots" / "scaling.png") if fits else None
    if console is not None:
        if quality:
            console.print(_quality_table(quality))
        print_series_table(console, fits)
        print_equivalence_tables(console, equivalences)
        if plot:
            console.print(f"plot: {plot}")
    return {"rows": len(rows), "series": len(fits),
            "fitted": sum(f.fit is not None for f in fits), "plot": str(plot) if plot else None}


def analyze_run(run_root: Path, console=None) -> dict:
    run = RunDir(Path(run_root))
    rows = gather(run.root)
    write_csv(rows, run.results / "metrics.csv")
    quality = generation_quality(run.root)
    _write_quality_csv(quality, run.results / "generation.csv")
    if not rows:
        if console is not None:
            console.print("No finished evaluations yet: nothing to fit.")
        state.write_json(run.results / "fits.json", {"schema": FITS_SCHEMA, "series": [],
                                                     "synthetic_per_real": []})
        return {"rows": 0}
    return analyze_rows(rows, run.results, _lead_law(run), console, quality)
