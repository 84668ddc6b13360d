"""Plot titles never overlap: long series labels wrap within their panel
(checked on the drawn figure's text extents, not on the strings)."""
import types

from synscale.report.plots import per_class_figure


def _long_series(n: int) -> list[dict]:
    out = []
    for i in range(n):
        key = {"eval_set": "imagenet-val", "source": "synthetic",
               "generator": ["stable-diffusion", "imagen"][i % 2],
               "prompts": ["classnames+hypernyms+places", "clip-templates-80", "word2sen"][i % 3],
               "guidance": [1.0, 2.0, 4.0, 8.0][i % 4], "arch": "vit_large_patch16_224",
               "width": [256, 512][i % 2], "templates": "clip-templates-80"}
        classes = [{"top1_at_smallest": 0.1 * c, "k": 0.2 + 0.05 * c,
                    "category": "scaling"} for c in range(10)]
        out.append({"key": key, "per_class": classes, "counts": {"easy": 0, "scaling": 10,
                                                                "poor": 0}})
    return out


def test_per_class_panel_titles_stay_within_their_panels():
    fig = per_class_figure(_long_series(6), types.SimpleNamespace(easy_top1=0.9, scaling_k=0.3))
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    boxes = [ax.title.get_window_extent(renderer) for ax in axes]
    assert sum("\n" in ax.get_title() for ax in axes) >= 4  # most need more than one line
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    width = fig.bbox.width
    assert all(0 <= b.x0 and b.x1 <= width for b in boxes)
    top = fig._suptitle.get_window_extent(renderer)
    assert 0 <= top.x0 and top.x1 <= width and not any(top.overlaps(b) for b in boxes)
