"""What real image folders hold: files that decode only with care are
converted, files that do not decode at all fail the pack within a second
naming them (never a hang in FFCV's writer), or are left out with
[data] bad_images = "skip", the next file taking their place."""
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, class_folders
from synscale.data.decode import BadImage, rgb

WNIDS = ("n01440764", "n01443537", "n01484850")


def _save(path, im, fmt, **kw):
    im.save(path, format=fmt, **kw)
    return path


def test_images_that_decode_with_care_are_converted_as_a_viewer_shows_them(tmp_path):
    cmyk = _save(tmp_path / "cmyk.JPEG", Image.new("CMYK", (6, 4), (0, 255, 255, 0)), "JPEG",
                 quality=100)
    assert rgb(cmyk).shape == (4, 6, 3) and np.all(rgb(cmyk)[..., 0] > 200)  # red
    assert np.all(rgb(cmyk)[..., 1:] < 60)
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 0)
    transparent = _save(tmp_path / "palette.png", palette, "PNG", transparency=0)
    out = rgb(transparent)
    assert out[0, 0].tolist() == [255, 255, 255] and out[1, 1].tolist() == [0, 0, 255]
    deep = np.full((3, 5), 65535, np.uint16)
    deep[0, 0] = 0
    sixteen = _save(tmp_path / "deep.png", Image.fromarray(deep), "PNG")
    assert Image.open(sixteen).mode.startswith("I")
    assert rgb(sixteen)[1, 1].tolist() == [255] * 3 and rgb(sixteen)[0, 0].tolist() == [0] * 3
    gray = _save(tmp_path / "gray.JPEG", Image.new("L", (5, 5), 128), "JPEG")
    assert rgb(gray).shape == (5, 5, 3) and abs(int(rgb(gray)[2, 2, 0]) - 128) <= 2
    la = _save(tmp_path / "la.png", Image.new("LA", (3, 3), (0, 0)), "PNG")
    assert rgb(la)[0, 0].tolist() == [255] * 3  # transparent over white
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    turned = _save(tmp_path / "phone.JPEG", Image.new("RGB", (8, 2), (0, 200, 0)), "JPEG",
                   exif=exif)
    assert rgb(turned).shape == (8, 2, 3)
    png_named_jpeg = _save(tmp_path / "n0.JPEG", Image.new("RGB", (3, 3), (9, 9, 9)), "PNG")
    assert rgb(png_named_jpeg)[0, 0].tolist() == [9, 9, 9]


def test_files_that_do_not_decode_are_named(tmp_path):
    text = tmp_path / "aaa_bad.jpg"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="JPEG")
    cut = tmp_path / "cut.JPEG"
    cut.write_bytes(buf.getvalue()[:200])
    for path in (text, empty, cut):
        with pytest.raises(BadImage, match=str(path)):
            rgb(path)


# The pack stage alone, in its own process (the writer's interrupt is the
# main thread's), on three class folders; a per-row delay makes a whole
# pass take seconds, so that stopping early shows in the rows decoded.
PACK = """
import json, sys, time, logging
from pathlib import Path
from types import SimpleNamespace
from synscale.data import ffcv_io
from synscale.stages import pack
from synscale.study.specs import DataSpec, PackSpec
root, policy, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
decoded = out.parent / "decoded.txt"
plain = ffcv_io._Rows.__getitem__
def slow(self, i):
    row = plain(self, i)
    with open(decoded, "a") as f:
        f.write(f"{i}\\n")
    time.sleep(0.05)
    return row
ffcv_io._Rows.__getitem__ = slow
data = DataSpec("imagefolder", train_dir=str(root), classes=str(root.parent / "classes.txt"))
spec = PackSpec("real", data, resolution=16, per_class=int(sys.argv[4]), workers=2,
                bad_images=policy if policy == "skip" else None)
out.mkdir()
ctx = SimpleNamespace(spec=spec, dir=out, log=logging.getLogger("t"))
try:
    print(json.dumps(pack.run(ctx)))
except Exception as e:
    print(json.dumps({"error": str(e), "type": type(e).__name__}))
"""


def _pack(tmp_path, policy, per_class, rows_per_class=40):
    train = class_folders(tmp_path / "train", WNIDS, rows_per_class)
    (tmp_path / "classes.txt").write_text("\n".join(WNIDS) + "\n")
    (train / WNIDS[1] / f"{WNIDS[1]}_10.JPEG").write_text("not an image")
    out = tmp_path / "pack"
    r = subprocess.run([sys.executable, "-c", PACK, str(train), policy, str(out), str(per_class)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)  # a hang: fails
    assert r.returncode == 0, r.stderr[-3000:]
    decoded = (tmp_path / "decoded.txt").read_text().split()
    return json.loads(r.stdout.strip().splitlines()[-1]), out, len(decoded)


def test_an_undecodable_file_fails_the_pack_within_a_second_naming_it(tmp_path):
    result, out, decoded = _pack(tmp_path, "fail", per_class=40)
    assert result["type"] == "BadImages"
    assert f"{WNIDS[1]}_10.JPEG" in result["error"] and "bad_images = \"skip\"" in result["error"]
    # 120 rows at 0.05 s on two processes is 3 s a pass; it stopped well before the end
    assert decoded < 100, decoded
    assert not (out / "data.beton").exists() and not (out / "index.json").exists()
    assert not list(out.glob(".*.tmp"))


def test_skip_leaves_the_file_out_and_the_next_one_takes_its_place(tmp_path):
    result, out, decoded = _pack(tmp_path, "skip", per_class=12, rows_per_class=14)
    assert result.get("images_left_out") == 1, result
    index = json.loads((out / "index.json").read_text())
    assert index["class_counts"] == [12, 12, 12]
    left = json.loads((out / "left_out.json").read_text())
    assert [f["path"].rsplit("/", 1)[1] for f in left["files"]] == [f"{WNIDS[1]}_10.JPEG"]
    assert not (out / "bad_images.jsonl").exists()
    # too few decodable files left for a class: said, naming its folder
    result, out, _ = _pack(tmp_path / "short", "skip", per_class=14, rows_per_class=14)
    assert "13 images (1 left out as undecodable)" in result["error"] and WNIDS[1] in result["error"]


# The main thread blocked on a lock that a writer process held when the watch
# terminated it (FFCV's shared row counter): only a real signal wakes it.
BLOCKED = """
import json, multiprocessing as mp, sys, threading, time
from pathlib import Path
from synscale.data import ffcv_io
log = Path(sys.argv[1])
lock, held = mp.Lock(), mp.Event()
def hold():
    lock.acquire()
    held.set()
    time.sleep(60)
worker = mp.Process(target=hold)
worker.start()
held.wait()
record = {"row": 0, "path": "x.JPEG", "why": "not an image", "bad_image": True}
threading.Timer(0.5, lambda: log.write_text(json.dumps(record) + "\\n")).start()
started = time.monotonic()
try:
    with ffcv_io._Watch(log, fail_fast=True):
        lock.acquire(timeout=30)
    print("not stopped")
except ffcv_io._Stopped:
    worker.join(5)
    print(f"stopped {time.monotonic() - started:.2f} {worker.exitcode}")
"""


def test_a_main_thread_blocked_on_a_killed_workers_lock_is_stopped(tmp_path):
    r = subprocess.run([sys.executable, "-c", BLOCKED, str(tmp_path / "bad.jsonl")], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    word, seconds, exitcode = r.stdout.split()
    assert word == "stopped" and float(seconds) < 3 and int(exitcode) < 0, r.stdout
