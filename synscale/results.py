"""A run's results: gather -> fit -> report, all written under results/.
Above both analysis/ (which computes) and report/ (which lays out), so
neither imports the other.

results/
  metrics.csv       one row per (train stage, eval set)
  generation.csv    recognizability and diversity per generation config
  fits.json         every series fit and the synthetic-per-real multipliers
  summary.md        the same tables as the terminal, in markdown
  plots/scaling.png loss against images per class, log-log, with fits
  plots/samples.png the generated images behind the curves, beside real ones
                    (samples-<generator>.png when there are several generators)
  plots/curation.png what each quality filter ranks lowest and highest
"""
from __future__ import annotations

import csv
from pathlib import Path

from synscale.analysis.bootstrap import progress_bar
from synscale.analysis.curation import curation_deltas
from synscale.analysis.fit import DEFAULT_AXES, LAWS, _norm, fit_series, synthetic_equivalence
from synscale.analysis.gather import gather, generation_quality, write_csv
from synscale.analysis.holdout import holdout_checks
from synscale.analysis.holdout import to_json as holdout_json
from synscale.analysis.model_size import model_size_fits
from synscale.analysis.per_class import Criteria, classify, summarize
from synscale.plan import state
from synscale.plan.graph import Plan
from synscale.plan.layout import RunDir
from synscale.study.schema import AnalysisSection

FITS_SCHEMA = 3  # 3: the saturating law, the holdout check


def _settings(run: RunDir):
    """The study's [analysis] section and its step rule, from the study frozen
    in the run. One this version cannot load is an error that says so: its
    law, bootstrap and step rule are what the results must be fitted with,
    and defaults in their place would be results of another study."""
    from synscale.analysis.model_size import StepRule
    from synscale.study.load import StudyError, load_study
    try:
        study = load_study(run.study_file)
    except StudyError as e:
        raise StudyError([f"{run.study_file}: the study frozen in this run does not load with "
                          "this version of synscale, so its results cannot be fitted with the "
                          "settings it asks for; fix that copy (or launch into a new --root):",
                          *e.problems]) from None
    t = study.train
    return study.analysis, StepRule(t.epochs, t.batch_size, t.min_steps, t.max_steps), \
        study.study.seed


def _class_names(plan: Plan) -> list[str]:
    from synscale.prompts.classes import of_data
    from synscale.study.specs import DataSpec, parse
    evaluations = plan.of_kind("evaluate")
    return [c.name for c in of_data(parse(DataSpec, evaluations[0].spec["data"]))] \
        if evaluations else []


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


def _per_class(rows: list[dict], fits, names: list[str], criteria: Criteria) -> list[dict]:
    """Verdicts per series that has per-class metrics at three sizes or more."""
    out = []
    for f in fits:
        members = [r for r in rows if all(_norm(r.get(a)) == v for a, v in f.key.items())]
        if not names or len({r["images_per_class"] for r in members}) < 3 or \
                not all(r.get("per_class_top1") and r.get("per_class_loss") for r in members):
            continue
        verdicts = classify(members, names, criteria)
        out.append({"key": dict(f.key), **summarize(verdicts),
                    "per_class": [v.to_dict() for v in verdicts]})
    return out


def analyze_rows(rows: list[dict], results: Path, settings=None, rule=None, console=None,
                 quality: list[dict] = (), class_names: list[str] = (),
                 figures: list[Path] = ()) -> dict:
    """`figures`: pictures drawn before (sample grids), linked from summary.md."""
    from synscale.report.plots import plot_per_class, plot_scaling
    from synscale.report.tables import (
        print_curation_table,
        print_equivalence_tables,
        print_model_size_tables,
        print_per_class_table,
        print_series_table,
        summary_markdown,
    )

    a = settings or AnalysisSection()
    series = len({tuple(_norm(r.get(x)) for x in DEFAULT_AXES) for r in rows})
    with progress_bar(console, series * (len(LAWS) * a.bootstrap + 1)) as tick:
        fits = fit_series(rows, law=a.law, bootstrap=a.bootstrap, seed=a.seed, progress=tick)
        checks = holdout_checks(fits, a.bootstrap, a.seed, progress=tick)
        size_axes = [x for x in DEFAULT_AXES if x not in ("arch", "width") and
                     any(x in r for r in rows)]
        model_size = model_size_fits(rows, size_axes, rule, a.bootstrap, a.seed)
    equivalences = synthetic_equivalence(fits)
    criteria = Criteria(a.easy_top1, a.scaling_k)
    per_class = _per_class(rows, fits, list(class_names), criteria)
    curation = curation_deltas(rows)
    doc = {"schema": FITS_SCHEMA, "lead_law": a.law, "x": "images_per_class", "y": "loss",
           "bootstrap": {"resamples": a.bootstrap, "seed": a.seed},
           "series": [f.to_dict() for f in fits],
           "synthetic_per_real": [e.to_dict() for e in equivalences],
           "holdout": holdout_json(checks),
           "model_size": model_size, "curation": curation,
           "per_class": {"criteria": {"easy_top1": a.easy_top1, "scaling_k": a.scaling_k,
                                      "rule": criteria.describe()}, "series": per_class}}
    state.write_json(results / "fits.json", doc)
    md = summary_markdown(fits, equivalences, per_class, model_size, criteria, curation, checks)
    if quality:
        md += "\n## Generated images\n\n| generator | prompts | guidance t | recognizability | " \
              "diversity |\n|---|---|---|---|---|\n" + "".join(
                  f"| {q['generator']} | {q['prompts']} | {q['guidance']:g} | "
                  f"{q['recognizability']:.1%} | {q['diversity']:.3f} |\n" for q in quality)
    if figures:
        md += "\n## Samples\n\n" + "".join(f"![{f.stem}](plots/{f.name})\n\n" for f in figures)
    state.write_text(results / "summary.md", md)
    plots = [plot_scaling(fits, results / "plots" / "scaling.png")] if fits else []
    if per_class:
        plots.append(plot_per_class(per_class, criteria, results / "plots" / "per_class.png"))
    if console is not None:
        if quality:
            console.print(_quality_table(quality))
        print_series_table(console, fits, holdout=checks)
        print_equivalence_tables(console, equivalences)
        print_model_size_tables(console, model_size)
        print_per_class_table(console, per_class, criteria)
        print_curation_table(console, curation)
        for plot in [*plots, *figures]:
            console.print(f"plot: {plot}")
    return {"rows": len(rows), "series": len(fits),
            "fitted": sum(f.fit is not None for f in fits),
            "plot": str(plots[0]) if plots else None}


def analyze_run(run_root: Path, console=None, bootstrap: int | None = None,
                seed: int | None = None) -> dict:
    """Gather, fit and write results/, then record what they were computed from."""
    from synscale.analysis import inputs
    from synscale.plan import stored

    run = RunDir(Path(run_root))
    listed = stored.load_stages(run)
    evaluations = inputs.evaluations_done(run, zip(listed.ids, listed.kinds))
    out = _analyze(run, console, bootstrap, seed)
    inputs.record(run, evaluations)  # what was finished before gathering began
    return out


def _analyze(run: RunDir, console, bootstrap: int | None, seed: int | None) -> dict:
    from dataclasses import replace

    rows = gather(run.root)
    write_csv(rows, run.results / "metrics.csv")
    quality = generation_quality(run.root)
    _write_quality_csv(quality, run.results / "generation.csv")
    settings, rule, study_seed = _settings(run)
    plan = Plan.from_json(run.plan_file.read_text())
    figures = _sample_figures(run, plan, study_seed, console)
    if not rows:
        if console is not None:
            console.print("No finished evaluations yet: nothing to fit.")
            for figure in figures:
                console.print(f"plot: {figure}")
        state.write_json(run.results / "fits.json", {"schema": FITS_SCHEMA, "series": [],
                                                     "synthetic_per_real": []})
        return {"rows": 0}
    if bootstrap is not None:
        settings = replace(settings, bootstrap=bootstrap)
    if seed is not None:
        settings = replace(settings, seed=seed)
    return analyze_rows(rows, run.results, settings, rule, console, quality, _class_names(plan),
                        figures)


def _sample_figures(run: RunDir, plan: Plan, seed: int, console) -> list[Path]:
    """plots/samples.png (one per generator when there are several) and
    plots/curation.png, from the shards there are. A shard that cannot be
    read leaves its figure out with a note: the curves do not depend on it."""
    from synscale.analysis.samples import curation_samples, sample_grids
    from synscale.report.samples import plot_curation, plot_samples

    plots = run.results / "plots"
    out = []
    try:
        grids = sample_grids(run, plan, seed)
        for grid in grids:
            name = "samples.png" if len(grids) == 1 else \
                f"samples-{grid.groups[1].config['generator']}.png"
            out.append(plot_samples(grid, plots / name))
        groups, safety = curation_samples(run, plan)
        if groups or safety:
            out.append(plot_curation(groups, safety, plots / "curation.png"))
    except (OSError, ValueError, KeyError) as e:
        if console is not None:
            console.print(f"[yellow]samples: not drawn ({type(e).__name__}: {e})[/]")
    return out
