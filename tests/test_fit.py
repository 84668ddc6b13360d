"""Power-law fits, synthetic-vs-real equivalence, and their tables and plot."""
import io
import math

import numpy as np
import pytest
from rich.console import Console

from synscale.analysis.fit import (
    DEFAULT_AXES,
    FitError,
    fit_power,
    fit_power_offset,
    fit_series,
    synthetic_equivalence,
)
from synscale.report.plots import plot_scaling
from synscale.report.tables import print_equivalence_tables, print_series_table, summary_markdown

SIZES = np.array([10, 20, 40, 80, 160, 320, 640], dtype=float)


@pytest.mark.parametrize("k", [0.1, 0.35, 0.7, 1.2])
def test_power_recovers_known_law(k):
    rng = np.random.default_rng(int(k * 100))
    y = 4.0 * SIZES ** -k * np.exp(rng.normal(0, 0.005, SIZES.size))
    fit = fit_power(SIZES, y)
    assert fit.law == "power" and fit.params["E"] == 0.0
    assert fit.params["k"] == pytest.approx(k, abs=0.02)
    assert fit.params["A"] == pytest.approx(4.0, rel=0.05)
    assert fit.n_points == SIZES.size and (fit.x_min, fit.x_max) == (10, 640)
    assert len(fit.residuals) == SIZES.size and fit.rmse < 0.01


@pytest.mark.parametrize("E,A,k", [(0.5, 5.0, 0.7), (0.2, 30.0, 0.4)])
def test_power_offset_recovers_known_law(E, A, k):
    x = np.geomspace(10, 100_000, 10)
    rng = np.random.default_rng(0)
    y = (E + A * x ** -k) * np.exp(rng.normal(0, 0.001, x.size))
    fit = fit_power_offset(x, y)
    assert fit.law == "power+offset"
    assert fit.params["E"] == pytest.approx(E, rel=0.05)
    assert fit.params["A"] == pytest.approx(A, rel=0.1)
    assert fit.params["k"] == pytest.approx(k, rel=0.05)
    assert 0 <= fit.params["E"] < y.min()


def test_power_offset_is_unit_free():
    # Total images instead of per class: only A should change.
    x = np.geomspace(1e3, 1e6, 8)
    fit = fit_power_offset(x, 0.3 + 200 * x ** -0.6)
    assert (fit.params["E"], fit.params["k"]) == pytest.approx((0.3, 0.6), rel=1e-3)
    assert fit.params["A"] == pytest.approx(200, rel=1e-2)


@pytest.mark.parametrize("fitter", [fit_power, fit_power_offset])
def test_inverse_undoes_predict(fitter):
    y = 0.4 + 3.0 * SIZES ** -0.5
    fit = fitter(SIZES, y)
    for x in (7.0, 55.5, 640.0, 5000.0):
        assert fit.inverse(fit.predict(x)) == pytest.approx(x, rel=1e-9)
    xs = np.array([12.0, 300.0])
    np.testing.assert_allclose(fit.inverse(fit.predict(xs)), xs, rtol=1e-9)


def test_inverse_below_floor_is_nan():
    fit = fit_power_offset(SIZES, 0.4 + 3.0 * SIZES ** -0.5)
    assert math.isnan(fit.inverse(0.39))
    assert math.isnan(fit.inverse(-1.0))


@pytest.mark.parametrize("x,y,message", [
    ([10, 20], [1.0, 0.8], "at least 3 distinct positive sizes, got 2"),
    ([10, 10, 20, 20], [1.0, 0.9, 0.8, 0.7], "at least 3 distinct positive sizes, got 2"),
    ([10], [1.0], "got 1 (10) from 1 point"),
    ([10, 20, 40, 80], [1.0, float("nan"), 0.6, 0.5], "loss is NaN or inf at point(s) 1 (size 20)"),
    ([10, 20, float("inf"), 80], [1.0, 0.8, 0.6, 0.5], "size is NaN or inf"),
    ([10, 20, 40], [0.7, 0.7, 0.7], "loss is constant (0.7)"),
    ([0, 10, 20, 40], [1.0, 0.9, 0.8, 0.7], "size must be > 0"),
    ([-5, 10, 20, 40], [1.0, 0.9, 0.8, 0.7], "got -5"),
    ([10, 20, 40], [1.0, 0.0, 0.8], "loss must be > 0"),
    ([10, 20, 40], [1.0, 0.9], "3 sizes but 2 losses"),
])
def test_degenerate_input_raises_fit_error(x, y, message):
    with pytest.raises(FitError) as err:
        fit_power(x, y)
    assert message in str(err.value)


def test_offset_law_needs_four_sizes():
    with pytest.raises(FitError, match="'power\\+offset' needs at least 4"):
        fit_power_offset([10, 20, 40], [1.0, 0.8, 0.7])


def test_fit_error_is_value_error_and_lists_every_problem():
    with pytest.raises(ValueError) as err:
        fit_power([0, 20, float("nan")], [1.0, -1.0, 0.5])
    msg = str(err.value)
    assert "size must be > 0" in msg and "size is NaN" in msg and "loss must be > 0" in msg


def _row(source, ipc, loss, arch="vit", generator=None, eval_set="in-domain", **kw):
    return {"train_id": f"{source}-{generator}-{arch}-{ipc}", "eval_set": eval_set,
            "source": source, "generator": generator, "prompts": kw.get("prompts"),
            "guidance": kw.get("guidance"), "arch": arch, "width": 64,
            "images_per_class": ipc, "images": ipc * 10, "loss": loss, "top1": 0.5}


def _real_loss(x):
    return 3.0 * np.asarray(x, dtype=float) ** -0.5


def test_fit_series_groups_by_axes_and_keeps_errors():
    rows = [_row("real", s, _real_loss(s)) for s in (10, 20, 40, 80)]
    rows += [_row("synthetic", s, _real_loss(s / 4), generator="sd") for s in (40, 80, 160)]
    rows += [_row("synthetic", s, 1.0, generator="broken") for s in (10, 20, 40)]
    fits = fit_series(rows)
    assert [f.key["generator"] for f in fits] == [None, "broken", "sd"]
    # the default axes the rows carry (these rows predate templates and synthetic_share)
    assert list(fits[0].key) == [a for a in DEFAULT_AXES if a in rows[0]]
    assert "templates" in DEFAULT_AXES and "templates" not in fits[0].key
    assert fits[0].fit.params["k"] == pytest.approx(0.5)
    assert fits[1].fit is None and "constant" in fits[1].error
    assert fits[2].x == (40, 80, 160)


def test_fit_series_reads_csv_strings():
    # metrics.csv gives strings, and "" where the in-memory rows had None.
    rows = [{k: ("" if v is None else str(v)) for k, v in _row("real", s, _real_loss(s)).items()}
            for s in (10, 20, 40)]
    rows.append(dict(rows[0], images_per_class="oops"))
    (f,) = fit_series(rows)
    assert f.key["generator"] is None and f.key["width"] == "64"
    assert f.fit is None and "size is NaN" in f.error


def test_fit_series_rejects_table_level_mistakes():
    rows = [_row("real", s, 1.0 / s) for s in (10, 20, 40)]
    with pytest.raises(ValueError, match="unknown law 'cubic'; allowed: power, power\\+offset"):
        fit_series(rows, law="cubic")
    with pytest.raises(ValueError, match="y='los' is not a column"):
        fit_series(rows, y="los")
    with pytest.raises(ValueError, match="row 0 lacks seed"):
        fit_series(rows, axes=["source", "seed"])
    assert fit_series([]) == []


def _equivalence_rows():
    real_sizes = (10, 20, 40, 80)
    rows = [_row("real", s, _real_loss(s)) for s in real_sizes]
    # Synthetic loss = real loss at a quarter the size: each synthetic image is worth 1/4.
    rows += [_row("synthetic", s, _real_loss(s / 4), generator="sd") for s in (40, 80, 160, 320)]
    # Same law, measured only up to 80: matching real 40 and 80 needs 160 and 320.
    rows += [_row("synthetic", s, _real_loss(s / 4), generator="short") for s in (10, 20, 40, 80)]
    # Floor at 0.4: real losses below it (3/sqrt(80) = 0.335) are unreachable.
    rows += [_row("synthetic", s, 0.4 + 3.0 * s ** -0.5, generator="floor") for s in (10, 20, 40, 80, 160)]
    # Another architecture: no real series to compare with.
    rows += [_row("synthetic", s, _real_loss(s / 4), generator="sd", arch="cnn") for s in (40, 80, 160)]
    return rows


def test_synthetic_equivalence_multiplier_and_extrapolation():
    fits = fit_series(_equivalence_rows(), law="power")
    fits_offset = {f.key["generator"]: f for f in fit_series(_equivalence_rows(), law="power+offset")}
    fits = [f for f in fits if f.key["generator"] != "floor"] + [fits_offset["floor"]]
    eq = synthetic_equivalence(fits)
    assert {e.synthetic["arch"] for e in eq} == {"vit"}
    by = {(e.synthetic["generator"], e.real_size): e for e in eq}
    assert len(by) == 3 * 4
    for s in (10, 20, 40, 80):
        e = by["sd", s]
        assert e.synthetic_size == pytest.approx(4 * s, rel=1e-6)
        assert e.multiplier == pytest.approx(4, rel=1e-6)
        assert not e.extrapolated and e.note == ""
        assert e.target_loss == pytest.approx(_real_loss(s), rel=1e-9)
    assert not by["short", 20].extrapolated
    assert by["short", 40].extrapolated and by["short", 40].multiplier == pytest.approx(4, rel=1e-6)
    assert "outside the measured synthetic sizes 10..80" in by["short", 40].note
    unreachable = by["floor", 80]
    assert math.isnan(unreachable.synthetic_size) and math.isnan(unreachable.multiplier)
    assert unreachable.extrapolated and "unreachable" in unreachable.note
    assert "floor E=0.4" in unreachable.note


def test_synthetic_equivalence_keeps_failed_synthetic_fits_visible():
    rows = [_row("real", s, _real_loss(s)) for s in (10, 20, 40)]
    rows += [_row("synthetic", s, 1.0, generator="broken") for s in (10, 20, 40)]
    (e, *_) = synthetic_equivalence(fit_series(rows))
    assert math.isnan(e.synthetic_size) and e.extrapolated
    assert "no fit" in e.note and "constant" in e.note


def _render(fn, *args):
    buf = io.StringIO()
    fn(Console(file=buf, width=200, color_system=None), *args)
    return buf.getvalue()


def test_tables_and_markdown_contain_the_numbers():
    fits = fit_series(_equivalence_rows())
    eq = synthetic_equivalence(fits)
    text = _render(print_series_table, fits)
    assert "0.500" in text  # the exponent
    assert f"{_real_loss(10):.4f}" in text  # a measured loss
    assert "generator=sd" in text and "arch=cnn" in text
    text = _render(print_equivalence_tables, eq)
    assert "160 (4.00x)" in text and "320 (4.00x)*" in text
    assert "extrapolated" in text
    md = summary_markdown(fits, eq)
    assert "| series | law | k | E | D0 | rmse (log) |" in md
    # a row per law, the lead law first
    assert "| power | 0.500" in md and "| power+offset | " in md and "| saturating | " in md
    assert "## Measured loss per images per class" in md
    assert "320 (4.00x)\\* |" in md and "160 (4.00x) |" in md  # "*" escaped for markdown
    assert "extrapolated" in md
    assert "Synthetic images per class" in md


def test_tables_show_failed_series_and_empty_comparison():
    rows = [_row("real", s, 1.0) for s in (10, 20, 40)]
    fits = fit_series(rows)
    assert "constant" in _render(print_series_table, fits)
    assert "nothing to compare" in _render(print_equivalence_tables, [])
    assert "nothing to compare" in summary_markdown(fits, [])


def test_plot_writes_png(tmp_path):
    fits = fit_series(_equivalence_rows())  # two panels: vit and cnn
    out = plot_scaling(fits, tmp_path / "plots" / "scaling.png")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5000
    assert [p.name for p in out.parent.iterdir()] == ["scaling.png"]  # no temporary left
    one = plot_scaling(fits[:1], tmp_path / "one.png")
    assert one.stat().st_size > 0
    with pytest.raises(ValueError, match="no series"):
        plot_scaling([], tmp_path / "none.png")
