"""FFCV files: how images travel from pack to train.

A .beton holds rows sorted by (class, index within class), and `index.json`
beside it records where each class starts. A training size of n images per
class is then the first n rows of every class, chosen by indices at load
time: one file serves every point of a scaling curve, and each smaller size
is a prefix of the next.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from synscale.plan import state

# what stops a pack's main thread (_Watch): a real-time signal, which no
# scheduler or user sends (Slurm's --signal and preemption use USR1/USR2/TERM)
STOP_SIGNAL = signal.SIGRTMIN + 1


@contextmanager
def threads_kept() -> Iterator[None]:
    """Keep torch's CPU thread count through FFCV calls. FFCV sets it to 1 when
    imported and to the loader's workers in every Loader() and every epoch's
    iter(): a CPU training would compute with `loader_workers` threads, not the
    cores its backend gave the stage, and its last bits would depend on a knob
    that is layout (README, "What is reproducible")."""
    import torch
    n = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _import_ffcv() -> None:
    with threads_kept():
        import ffcv  # noqa: F401


class _Rows:
    """The indexed-dataset protocol FFCV's writer reads: (image, label) or,
    for packs with captions, (image, label, row) so that a batch can look
    its captions up.

    It never raises: an exception in one of FFCV's writer processes kills
    that process and leaves the writer waiting for its rows forever. A file
    that does not decode, or any other error, is written as a line to
    `bad_log` and the row gets a placeholder; `_write` then fails the pack
    naming it (within a second where `fail_fast`)."""

    def __init__(self, items, labels: np.ndarray, with_row: bool, bad_log: Path):
        self.items, self.labels, self.with_row = items, labels, with_row
        self.bad_log = bad_log

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        try:
            item = self.items[i]
            if isinstance(item, (str, Path)):
                from synscale.data.decode import rgb
                item = rgb(item)
        except Exception as e:  # noqa: BLE001 - see the class: a raise here hangs the writer
            try:
                self._record(int(i), e)
            except Exception:  # noqa: BLE001 - still said: the line names no file
                self._append({"row": int(i), "path": f"row {int(i)}", "bad_image": False,
                              "why": f"{e.__class__.__name__} (its record failed)"})
            item = np.zeros((8, 8, 3), np.uint8)
        return (item, int(self.labels[i])) + ((i,) if self.with_row else ())

    def _record(self, i: int, e: Exception) -> None:
        import traceback

        from synscale.data.decode import BadImage
        line = {"row": i, "path": str(self.items[i]) if isinstance(self.items[i], (str, Path))
                else f"row {i}", "why": e.why if isinstance(e, BadImage) else
                f"{e.__class__.__name__}: {e}", "bad_image": isinstance(e, BadImage)}
        if not isinstance(e, BadImage):
            line["traceback"] = traceback.format_exc()[-4000:]
        self._append(line)

    def _append(self, line: dict) -> None:
        import json
        fd = os.open(self.bad_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:  # one write of one line: appends from several processes do not interleave
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)


def read_bad_log(path: Path) -> tuple[list[tuple[str, str]], list[dict]]:
    """([(path, why)] of undecodable files, [records of other errors]) a
    writer's processes wrote to `path` (nothing where it is missing)."""
    import json
    bad, errors = [], []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return bad, errors
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill: its writer is gone too
        if r.get("bad_image"):
            bad.append((r["path"], r["why"]))
        else:
            errors.append(r)
    return sorted(set(bad)), errors


class _Stopped(BaseException):
    """Raised in the main thread by _Watch's signal: the writer was stopped."""


class _Watch:
    """Stops FFCV's writer within a second of the first record in the bad
    log (any error; an undecodable file too where `fail_fast`): its worker
    processes are terminated and the stage's main thread gets a real signal
    whose handler raises _Stopped, which `_write` turns into the error the
    log names. A real signal, not _thread.interrupt_main: a worker killed
    while it held the lock of FFCV's shared row counter leaves the main
    thread blocked in sem_wait, which only a signal's EINTR ends (a CI run
    hung there). Elsewhere than in the main thread nothing is interrupted:
    the writer ends its pass, then fails."""

    def __init__(self, bad_log: Path, fail_fast: bool):
        import threading
        self.bad_log, self.fail_fast = bad_log, fail_fast
        self.lock, self.over, self.tripped = threading.Lock(), threading.Event(), False
        self.died = ""
        self.main = threading.current_thread() is threading.main_thread()
        self.thread = threading.Thread(target=self._poll, name="pack-bad-images", daemon=True)
        self.previous = None

    def __enter__(self):
        if self.main:
            self.previous = signal.signal(STOP_SIGNAL, _raise_stopped)
            self.thread.start()
        return self

    def _poll(self) -> None:
        import multiprocessing
        import threading

        seen = {}
        while not self.over.wait(0.2):
            bad, errors = read_bad_log(self.bad_log)
            for child in multiprocessing.active_children():
                seen.setdefault(child.pid, child)
            # a writer process that died (killed, out of memory): its rows never come
            dead = [c for c in seen.values() if c.exitcode not in (None, 0)]
            if dead:
                self.died = f"a writer process died (exit code {dead[0].exitcode})"
            if errors or (bad and self.fail_fast) or dead:
                with self.lock:
                    if self.over.is_set():
                        return
                    self.tripped = True
                    for child in multiprocessing.active_children():
                        child.terminate()
                    signal.pthread_kill(threading.main_thread().ident, STOP_SIGNAL)
                return

    def __exit__(self, *exc) -> None:
        try:
            with self.lock:  # a signal sent meanwhile raises here, once
                self.over.set()  # no signal after this
        finally:
            if self.main:
                self.thread.join()
                signal.signal(STOP_SIGNAL, self.previous)


def _raise_stopped(signum, frame):
    raise _Stopped()


def _write(folder: Path, fields: dict, items, labels: np.ndarray, captions, workers: int,
           index: dict, fail_fast: bool = True) -> dict:
    """data.beton, captions.json (a list of captions per row) and index.json,
    each atomically, index.json last: a pack is readable once it exists.
    Raises BadImages where a file did not decode (nothing is kept)."""
    _import_ffcv()
    from ffcv.fields import IntField
    from ffcv.writer import DatasetWriter

    from synscale.data.decode import BAD_LOG, BadImages

    counts = np.bincount(labels)
    if captions is not None:
        if len(captions) != len(labels):
            raise ValueError(f"{len(captions)} caption lists for {len(labels)} rows")
        fields["row"] = IntField()
    bad_log = Path(folder) / BAD_LOG
    bad_log.unlink(missing_ok=True)  # this pass's records only
    rows = _Rows(items, labels, captions is not None, bad_log)
    with state.atomic_path(Path(folder) / "data.beton") as tmp:
        writer = DatasetWriter(str(tmp), fields, num_workers=workers)
        watch = _Watch(bad_log, fail_fast)
        try:
            with watch:
                writer.from_indexed_dataset(rows)
        except _Stopped:
            _free_shared_memory(writer)
        bad, errors = read_bad_log(bad_log)
        if watch.died and not (bad or errors):
            raise RuntimeError(f"packing {folder}: {watch.died}; nothing was kept")
        if errors:
            e = errors[0]
            raise RuntimeError(f"packing {e['path']}: {e['why']} ({len(errors)} row(s) failed; "
                               f"the first one's traceback:\n{e.get('traceback', '')})")
        if bad:
            raise BadImages(bad, "the files this pack reads")
    bad_log.unlink(missing_ok=True)
    if captions is not None:
        state.write_json(Path(folder) / "captions.json", [list(c) for c in captions])
        index["captions"] = "captions.json"
    index = {"rows": int(len(labels)), **index, "class_counts": counts.tolist(),
             "class_offsets": np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()}
    state.write_json(Path(folder) / "index.json", index)
    return index


def _free_shared_memory(writer) -> None:
    """The writer's metadata block in /dev/shm, which an interrupted writer
    leaves (it unlinks it only at its end)."""
    sm = getattr(writer, "metadata_sm", None)
    if sm is not None:
        try:
            sm.close()
            sm.unlink()
        except (OSError, BufferError):
            pass


def write_beton(folder: Path, images: np.ndarray, labels: np.ndarray, workers: int = 1,
                captions=None, class_names=None) -> dict:
    """Float arrays (the digits) as rows, sorted by class (stable: each
    class keeps its index order), with their captions (one list per row)."""
    _import_ffcv()
    from ffcv.fields import IntField, NDArrayField

    order = np.argsort(labels, kind="stable")
    images, labels = np.ascontiguousarray(images[order], dtype=np.float32), labels[order]
    captions = None if captions is None else [captions[i] for i in order]
    fields = {"image": NDArrayField(shape=images.shape[1:], dtype=np.dtype("float32")),
              "label": IntField()}
    return _write(folder, fields, images, labels, captions, workers,
                  {"shape": list(images.shape[1:]), **_named(class_names)})


def write_rgb_beton(folder: Path, items, labels: np.ndarray, resolution: int,
                    workers: int = 1, captions=None, fail_fast: bool = True,
                    class_names=None) -> dict:
    """RGB images (uint8 HWC arrays or file paths) as JPEG rows, the longest
    side at most resolution / 0.875 so that training crops `resolution` from
    them; labels must already be sorted (class order, index order within)."""
    _import_ffcv()
    from ffcv.fields import IntField, RGBImageField

    fields = {"image": RGBImageField(write_mode="jpg", jpeg_quality=90,
                                     max_resolution=int(round(resolution / 0.875))),
              "label": IntField()}
    return _write(folder, fields, items, _sorted(labels), captions, workers,
                  {"kind": "rgb", "shape": [3, resolution, resolution], **_named(class_names)},
                  fail_fast)


def _named(class_names) -> dict:
    """The names of the label values, in order: what a trained model's
    outputs mean (models/portable.py)."""
    return {} if class_names is None else {"class_names": list(class_names)}


def _sorted(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if np.any(np.diff(labels) < 0):
        raise ValueError("rows must come sorted by class")
    return labels


def prefix_indices(index: dict, per_class: int) -> np.ndarray:
    """Rows of the first `per_class` images of every class."""
    short = [c for c, n in enumerate(index["class_counts"]) if n < per_class]
    if short:
        raise ValueError(f"{per_class} images per class asked, but classes {short[:10]} hold "
                         f"only {min(index['class_counts'])} in this pack")
    return np.concatenate([np.arange(o, o + per_class) for o in index["class_offsets"]])


def loader(folder: Path, indices: np.ndarray, batch_size: int, seed: int, workers: int = 1,
           train: bool = True, distributed: bool = False, normalize: bool = True,
           rows: bool = False):
    """An FFCV Loader over chosen rows: random order per epoch for training;
    `distributed` gives each torch.distributed rank its own share. Batches
    are (images, labels), and the row numbers third with `rows` (packs with
    captions)."""
    _import_ffcv()
    from ffcv.fields.decoders import IntDecoder, NDArrayDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import Squeeze, ToTensor

    index = state.read_json(Path(folder) / "index.json")
    image = _rgb_pipeline(index["shape"][1], train, normalize) if index.get("kind") == "rgb" else \
        [NDArrayDecoder(), ToTensor()]
    pipelines = {"image": image, "label": [IntDecoder(), ToTensor(), Squeeze(1)]}
    if rows and not index.get("captions"):
        raise ValueError(f"{folder}: this pack has no captions (packed for a classifier study)")
    if index.get("captions"):
        pipelines["row"] = [IntDecoder(), ToTensor(), Squeeze(1)] if rows else None
    with threads_kept():
        return Loader(str(Path(folder) / "data.beton"), batch_size=batch_size,
                      num_workers=workers, order=OrderOption.RANDOM if train else
                      OrderOption.SEQUENTIAL, indices=np.asarray(indices).tolist(), seed=seed,
                      drop_last=False, os_cache=True, distributed=distributed,
                      pipelines=pipelines)


def _rgb_pipeline(size: int, train: bool, normalize: bool = True) -> list:
    """Decode, crop and normalize on the loader's CPU workers: a random
    resized crop and flip for training, the evaluation crop otherwise.
    Without `normalize`, uint8 images (for RandAugment, which normalizes)."""
    from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder
    from ffcv.transforms import NormalizeImage, RandomHorizontalFlip, ToTensor, ToTorchImage
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    mean, std = np.array(IMAGENET_DEFAULT_MEAN) * 255, np.array(IMAGENET_DEFAULT_STD) * 255
    first = ([RandomResizedCropRGBImageDecoder((size, size)), RandomHorizontalFlip()] if train
             else [CenterCropRGBImageDecoder((size, size), ratio=0.875)])
    return first + ([NormalizeImage(mean, std, np.float32)] if normalize else []) + [
        ToTensor(), ToTorchImage(channels_last=False)]
