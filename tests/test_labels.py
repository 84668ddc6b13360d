"""Series labels in tables and --suggest: rows show what tells series apart,
the title what they share; an axis a real series lacks goes to the title,
one whose absence means something (no curation rule) stays on the rows,
and no two rows or quantities read alike."""
from synscale.analysis.next_runs import _labels
from synscale.report.grid import series_labels, shared_label

REAL = {"eval_set": "digits-test", "source": "real", "generator": None, "guidance": None,
        "curation": None, "width": 32}


def _syn(guidance, width=32, curation=None):
    return {**REAL, "source": "synthetic", "generator": "embedded-ddpm", "guidance": guidance,
            "curation": curation, "width": width}


def test_axes_a_real_series_lacks_go_to_the_title():
    keys = [REAL, _syn(0.0), _syn(4.0, width=64)]
    assert series_labels(keys) == ["source=real, width=32", "source=synthetic, guidance=0.0, "
                                   "width=32", "source=synthetic, guidance=4.0, width=64"]
    assert shared_label(keys) == "eval_set=digits-test, generator=embedded-ddpm"


def test_a_curation_rule_some_synthetic_series_lack_stays_on_the_rows():
    keys = [REAL, _syn(2.0), _syn(4.0, curation="clip>0.3")]
    labels = series_labels(keys)
    assert labels[2] == "source=synthetic, guidance=4.0, curation=clip>0.3"
    assert "curation" not in labels[1] and "curation" not in shared_label(keys)


def test_rows_never_read_alike():
    keys = [{"source": "real", "templates": None}, {"source": "real", "templates": "t7"}]
    assert len(set(series_labels(keys))) == 2
    plain, curated = _syn(1.0), _syn(1.0, curation="clip>0.3")
    assert _labels([plain, curated]) == ["synthetic curation=None", "synthetic curation=clip>0.3"]
    assert _labels([REAL, _syn(1.0), _syn(4.0)]) == ["real", "synthetic guidance=1.0",
                                                     "synthetic guidance=4.0"]


def test_a_title_reads_the_same_whichever_series_came_first():
    # keys whose axes are listed in different orders (series built from
    # different stages): the title and labels must not follow which came first
    a = {"source": "synthetic", "generator": "ddpm", "guidance": 2.0, "width": 16}
    b = {"width": 16, "source": "synthetic", "guidance": 4.0, "generator": "ddpm"}
    assert shared_label([a, b]) == shared_label([b, a])
    assert series_labels([a, b]) == series_labels([b, a])[::-1]
