"""The run store: a Zarr v3 group holding everything a tiled run needs to resume.

The format, the lock and the resume rules are documented in docs/run-store.md.

Layout of ``RUN_DIR/`` (a Zarr v3 group; attributes under ``gigapatch``)::

    zarr.json            attributes.gigapatch = {format, run_key, config, config_hash, seed,
                         output size, level sizes, chunk side, ...}
    reference            (C, h, w) the reference: its uint8 / uint16 samples when they give the
                         model-space float32 bit for bit (8-bit: 1 byte per sample), else
                         float32 in model space [-1, 1]
    levels/L             (C, H_L, W_L) float32, level L of the sample in model space (raw
                         sampler output, not clamped), chunks (C, tile, tile); every level
                         but the finest (that one goes straight to ``output/0``)
    done/L               (ny_L, nx_L) uint8, 1 = the task owning that tile has finished;
                         chunks (1, 1), so every task owns its marker's chunk
    output/r             (C, h_r, w_r) uint8|uint16, the quantised output pyramid (r = 0 is
                         full size, each next level a 2x box reduction); chunks (C, tile,
                         tile); the ``output`` group carries OME-Zarr 0.5 metadata
    output_done/r        (ny_r, nx_r) uint8, done markers of the output pyramid chunks
    lock                 JSON {pid, host, started} while a run is active (not Zarr)

Arrays are channel-first (C, H, W): that is torch's layout and OME-Zarr's for (c, y, x).
Every writing task owns whole chunks (chunk = tile core, no sharding), so no two tasks ever
write the same chunk; Zarr's local chunk writes are atomic (temp file + rename), so a
chunk that exists is complete. ``write_empty_chunks=True`` everywhere: a blank tile is still
written. A tile counts as done only once its marker is set, after its data.

Every array is stored losslessly compressed (Blosc-zstd, byte-shuffled) with a CRC32C
checksum of each chunk (Zarr v3 ``crc32c`` codec); done markers carry the checksum only.
A chunk that is missing, torn or overwritten (a zeroed chunk of the right size too) fails
its checksum when read and raises :class:`CorruptChunkError`, never gives values:
:meth:`RunStore.invalidate` then clears the marker of the task that owns it, so the same
command recomputes it. Data chunks are fsynced (files and folders) before their marker is
written, and markers are fsynced too: a machine crash cannot leave a marker without data.

This module knows nothing of configs or samplers: the pipeline passes plain values.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from ..errors import GigapatchError
from ..tiling import Box
from .atomic import atomic_write_text

__all__ = ["RunStore", "RunLock", "CorruptChunkError", "pid_alive", "STORE_FORMAT",
           "reduce2_box", "store_codecs"]

#: bumped when the layout changes incompatibly (2: checksummed, compressed chunks; the
#: finest level kept only as the quantised output)
STORE_FORMAT = 2

_ARRAY_CONFIG = {"write_empty_chunks": True}

#: what reading a chunk that fails its checksum (or cannot be decoded) raises inside Zarr
_DECODE_ERRORS = (ValueError, RuntimeError, TypeError, EOFError)


def store_codecs(kind: str) -> tuple:
    """The bytes-to-bytes codecs of a run-store array.

    ``"data"``: Blosc-zstd (level 3, byte shuffle: float32 samples and uint16 outputs
    compress far better shuffled), then a CRC32C of the compressed chunk. ``"marker"``: the
    checksum only (a 1-byte chunk does not compress). The checksum is the outer codec, so it
    is checked first on read: a torn or zeroed chunk never reaches the decompressor.
    """
    if kind == "marker":
        return (Crc32cCodec(),)
    return (BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"), Crc32cCodec())


class CorruptChunkError(GigapatchError):
    """Chunks of a run-store array that are missing or fail their checksum.

    Attributes
    ----------
    name : str
        The array, e.g. ``"levels/1"`` or ``"output/0"``.
    chunks : list of (iy, ix)
        The bad chunks (chunk grid indices in y and x).
    """

    def __init__(self, name: str, chunks: Sequence[tuple[int, int]], run_dir: str = ""):
        super().__init__(name, [tuple(map(int, c)) for c in chunks], str(run_dir))
        self.name = name
        self.chunks = [tuple(map(int, c)) for c in chunks]
        self.run_dir = str(run_dir)

    def __str__(self) -> str:
        where = f"{self.run_dir}/{self.name}" if self.run_dir else self.name
        shown = ", ".join(f"({y}, {x})" for y, x in self.chunks[:4])
        more = f" and {len(self.chunks) - 4} more" if len(self.chunks) > 4 else ""
        return (f"run store chunk {shown}{more} of {where} is missing or fails its checksum; "
                f"run the same command again to recompute it (or delete the run dir)")


def _fsync_path(path: Path) -> None:
    """fsync a file or a folder (POSIX: a folder's fsync makes its renames durable)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - a filesystem without directory fsync
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock on a run dir: ``RUN_DIR/lock`` holds ``{pid, host, started}``.

    A second run on the same dir refuses while the owner lives. A lock left by a dead
    process on the same host (kill -9, power loss) is taken over. Locks from other hosts
    are never taken over automatically (their pid cannot be checked from here).
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / "lock"
        self.held = False

    def _mine(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._read()
                if owner is None:  # half-written by a process that died while locking
                    self._take_over()
                    return self
                host, pid = owner.get("host"), int(owner.get("pid", -1))
                if host == socket.gethostname() and not pid_alive(pid):
                    self._take_over()
                    return self
                started = time.strftime("%Y-%m-%d %H:%M:%S",
                                        time.localtime(owner.get("started", 0)))
                raise GigapatchError(
                    f"run dir {self.path.parent} is in use by another run (pid {pid} on "
                    f"{host}, since {started}); wait for it to finish or pass another "
                    f"--run-dir (delete {self.path} only if that process is gone)") from None
            with os.fdopen(fd, "w") as f:
                json.dump(self._mine(), f)
            self.held = True
            return self
        raise GigapatchError(f"cannot lock run dir {self.path.parent}")  # pragma: no cover

    def _read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) and "pid" in data else None
        except FileNotFoundError:
            return {"pid": -1, "host": None}
        except (OSError, ValueError):
            return None

    def _take_over(self) -> None:
        atomic_write_text(self.path, json.dumps(self._mine()))
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        owner = self._read()
        if owner is not None and owner.get("pid") == os.getpid() \
                and owner.get("host") == socket.gethostname():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def reduce2_box(block: np.ndarray) -> np.ndarray:
    """2x box reduction of a (C, h, w) integer block; odd edges average with themselves.

    Output ``(C, ceil(h / 2), ceil(w / 2))``, same dtype, rounded half to even.
    """
    c, h, w = block.shape
    a = block.astype(np.float32)
    if h % 2:
        a = np.concatenate([a, a[:, -1:]], axis=1)
    if w % 2:
        a = np.concatenate([a, a[:, :, -1:]], axis=2)
    a = a.reshape(c, a.shape[1] // 2, 2, a.shape[2] // 2, 2).mean(axis=(2, 4))
    return np.rint(a).astype(block.dtype)


class RunStore:
    """A run dir opened for reading and writing (see the module docstring).

    Open it with :meth:`create_or_open` (the driver) or :meth:`open` (a worker).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.group = zarr.open_group(str(self.path), mode="r+")
        self._arrays: dict[str, Any] = {}

    # ---------------------------------------------------------------- creation
    @classmethod
    def create_or_open(cls, path: str | os.PathLike, *, run_key: str, meta: dict[str, Any],
                       reference: np.ndarray, level_shapes: Sequence[tuple[int, int]],
                       grid_shapes: Sequence[tuple[int, int]], output_shapes:
                       Sequence[tuple[int, int]], chunk: int, out_dtype: str) -> "RunStore":
        """Create the run store, or open an existing one made for the same ``run_key``.

        Parameters
        ----------
        run_key : str
            Hash of everything that changes the stored data; a store made with another key
            is refused with a one-line message.
        meta : dict
            JSON-able description stored in the attributes (config, seed, sizes...).
        reference : ndarray (C, h, w)
            float32 in model space, or the integer samples (uint8 / uint16) it came from
            (``model_space.exact_samples``; read back through ``samples_to_model``).
        level_shapes : (H_L, W_L) per level, coarsest first
        grid_shapes : (ny_L, nx_L) tasks per level (1x1 for a level sampled globally)
        output_shapes : (h_r, w_r) per output pyramid level, full size first
        chunk : int
            Chunk side of every level and output array (the tile core side).
        out_dtype : {"uint8", "uint16"}
        """
        p = Path(path)
        zj = p / "zarr.json"
        if zj.exists():
            store = cls(p)
            got = store.attrs.get("run_key")
            if store.attrs.get("format") != STORE_FORMAT or got != run_key:
                made = store.attrs.get("summary", "an unknown config")
                raise GigapatchError(
                    f"run dir {p} was made by a different run ({made}); its tiles cannot be "
                    f"reused: delete {p} to start fresh or pass another --run-dir")
            return store
        if p.exists() and any(q.name != "lock" for q in p.iterdir()):
            raise GigapatchError(f"run dir {p} exists and is not a gigapatch run store; "
                                 f"delete it or pass another --run-dir")
        c = int(reference.shape[0])
        data, marker = store_codecs("data"), store_codecs("marker")
        finest = len(level_shapes) - 1
        g = zarr.open_group(str(p), mode="a")
        if reference.dtype not in (np.float32, np.uint8, np.uint16):
            raise ValueError(f"reference dtype {reference.dtype}: float32, uint8 or uint16")
        g.create_array("reference", data=np.ascontiguousarray(reference),
                       chunks=reference.shape, compressors=data, config=_ARRAY_CONFIG,
                       dimension_names=("c", "y", "x"))
        for lv, ((h, w), (ny, nx)) in enumerate(zip(level_shapes, grid_shapes)):
            if lv < finest:  # the finest level goes straight to output/0, quantised
                g.create_array(f"levels/{lv}", shape=(c, h, w), dtype="float32",
                               chunks=(c, min(chunk, h), min(chunk, w)), fill_value=0.0,
                               compressors=data, config=_ARRAY_CONFIG,
                               dimension_names=("c", "y", "x"))
            g.create_array(f"done/{lv}", shape=(ny, nx), dtype="uint8", chunks=(1, 1),
                           fill_value=0, compressors=marker, config=_ARRAY_CONFIG)
        for r, (h, w) in enumerate(output_shapes):
            g.create_array(f"output/{r}", shape=(c, h, w), dtype=out_dtype,
                           chunks=(c, min(chunk, h), min(chunk, w)), fill_value=0,
                           compressors=data, config=_ARRAY_CONFIG,
                           dimension_names=("c", "y", "x"))
            g.create_array(f"output_done/{r}",
                           shape=(-(-h // chunk), -(-w // chunk)), dtype="uint8",
                           chunks=(1, 1), fill_value=0, compressors=marker,
                           config=_ARRAY_CONFIG)
        from .omezarr import ome_multiscales_attrs

        zarr.open_group(str(p / "output"), mode="r+").attrs.update(
            ome_multiscales_attrs(output_shapes, name=p.name))
        # the key goes last: a store whose creation was interrupted has no key and is
        # refused with the "different run" message (delete it and start again)
        g.attrs["gigapatch"] = {**meta, "format": STORE_FORMAT, "run_key": run_key,
                                "layout": "(C, H, W) float32 model space [-1, 1]"}
        return cls(p)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunStore":
        return cls(path)

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs.get("gigapatch", {}))

    # ---------------------------------------------------------------- arrays
    def array(self, name: str):
        """A Zarr array of the store, opened once per ``RunStore`` (opening reads its metadata).

        The cache lives on the instance, not in the process: a run dir deleted and made again
        with other sizes in the same process is never seen through stale metadata.
        """
        arr = self._arrays.get(name)
        if arr is None:
            arr = self._arrays.setdefault(
                name, zarr.open_array(str(self.path / name), mode="r+", config=_ARRAY_CONFIG))
        return arr

    def reference(self) -> np.ndarray:
        return self.read("reference", None)

    def _chunk_file(self, name: str, iy: int, ix: int) -> Path:
        arr = self.array(name)
        idx = (0, iy, ix) if arr.ndim == 3 else (iy, ix)
        return self.path / name / arr.metadata.encode_chunk_key(idx)

    def _chunks_in(self, name: str, box: Box | None) -> list[tuple[int, int]]:
        arr = self.array(name)
        (h, w), (cy, cx) = arr.shape[-2:], arr.chunks[-2:]
        box = box or Box(0, 0, h, w)
        return [(iy, ix) for iy in range(box.y0 // cy, -(-box.y1 // cy))
                for ix in range(box.x0 // cx, -(-box.x1 // cx))]

    def chunk_ok(self, name: str, iy: int, ix: int) -> bool:
        """Whether chunk (iy, ix) of ``name`` exists and passes its checksum."""
        arr = self.array(name)
        if not self._chunk_file(name, iy, ix).is_file():
            return False
        try:
            arr.get_block_selection((0, iy, ix) if arr.ndim == 3 else (iy, ix))
        except _DECODE_ERRORS:
            return False
        return True

    def read(self, name: str, box: Box | None) -> np.ndarray:
        """``array[:, box]`` (the whole array for ``box=None``) as a (C, h, w) ndarray.

        Raises
        ------
        CorruptChunkError
            When a chunk under ``box`` is missing or fails its checksum: every chunk a
            task reads was written (and marked) before, so a missing one is a lost one,
            never the fill value.
        """
        arr = self.array(name)
        chunks = self._chunks_in(name, box)
        missing = [c for c in chunks if not self._chunk_file(name, *c).is_file()]
        if missing:
            raise CorruptChunkError(name, missing, self.path)
        ys, xs = box.slices() if box is not None else (slice(None), slice(None))
        try:
            return np.asarray(arr[:, ys, xs])
        except _DECODE_ERRORS:
            bad = [c for c in chunks if not self.chunk_ok(name, *c)]
            raise CorruptChunkError(name, bad or chunks, self.path) from None

    def write(self, name: str, box: Box, data: np.ndarray) -> None:
        """Write ``data`` (C, h, w) at ``box``; the box must cover whole chunks.

        The chunk files and their folders are fsynced before this returns, so a marker set
        afterwards never outlives its data in a machine crash.
        """
        arr = self.array(name)
        cy, cx = arr.chunks[1], arr.chunks[2]
        _, h, w = arr.shape
        if box.y0 % cy or box.x0 % cx or (box.y1 % cy and box.y1 != h) \
                or (box.x1 % cx and box.x1 != w):
            raise ValueError(f"{name}: box {box.as_tuple()} does not cover whole chunks "
                             f"({cy}x{cx}); two tasks could write the same chunk")
        ys, xs = box.slices()
        arr[:, ys, xs] = data
        self._flush(name, self._chunks_in(name, box))

    def _flush(self, name: str, chunks: Sequence[tuple[int, int]]) -> None:
        folders = set()
        for c in chunks:
            f = self._chunk_file(name, *c)
            _fsync_path(f)
            folders.add(f.parent)
        for d in folders:
            _fsync_path(d)

    # ---------------------------------------------------------------- done markers
    def done_mask(self, name: str) -> np.ndarray:
        """Done markers of ``done/L`` or ``output_done/r`` as a bool (ny, nx) array.

        A marker chunk that fails its checksum counts as not done. Only the marker files
        that exist are read (a listing of the array's folder, not one lookup per tile: a
        run of 10^5 tiles plans in well under a second), and a file whose bytes equal a
        marker already decoded as set counts as set without decoding it again.
        """
        arr = self.array(name)
        files = self._marker_files(name)
        if files is not None:
            mask = np.zeros(arr.shape, bool)
            set_bytes = None
            for iy, ix, path in files:
                try:
                    raw = path.read_bytes()
                except OSError:
                    continue
                if set_bytes is not None and raw == set_bytes:
                    mask[iy, ix] = True
                    continue
                try:
                    mask[iy, ix] = bool(arr[iy, ix])
                except _DECODE_ERRORS:
                    continue
                if mask[iy, ix] and set_bytes is None:
                    set_bytes = raw
            return mask
        try:
            return np.asarray(arr[...]) > 0
        except _DECODE_ERRORS:
            mask = np.zeros(arr.shape, bool)
            for iy in range(arr.shape[0]):
                for ix in range(arr.shape[1]):
                    try:
                        mask[iy, ix] = bool(arr[iy, ix])
                    except _DECODE_ERRORS:
                        pass
            return mask

    def _marker_files(self, name: str) -> list[tuple[int, int, Path]] | None:
        """``(iy, ix, file)`` of every chunk file of the 2-d marker array ``name``, from a
        listing of its folder; None when its chunk keys are not ``c/IY/IX``."""
        arr = self.array(name)
        if arr.metadata.encode_chunk_key((3, 5)) != "c/3/5":
            return None
        out = []
        ny, nx = arr.shape
        root = self.path / name / "c"
        try:
            rows = list(os.scandir(root))
        except FileNotFoundError:
            return []
        for row in rows:
            if not (row.name.isdigit() and int(row.name) < ny and row.is_dir()):
                continue
            for f in os.scandir(row.path):
                if f.name.isdigit() and int(f.name) < nx and f.is_file():
                    out.append((int(row.name), int(f.name), Path(f.path)))
        return out

    def is_done(self, name: str, iy: int, ix: int) -> bool:
        try:
            return bool(self.array(name)[iy, ix])
        except _DECODE_ERRORS:
            return False

    def mark_done(self, name: str, iy: int, ix: int) -> None:
        """Set a marker (call it after the task's :meth:`write` calls returned)."""
        self.array(name)[iy, ix] = 1
        self._flush(name, [(iy, ix)])

    def clear_done(self, name: str, iy: int, ix: int) -> None:
        self.array(name)[iy, ix] = 0
        self._flush(name, [(iy, ix)])

    def owner(self, name: str, iy: int, ix: int) -> tuple[str, int, int] | None:
        """The done marker ``(marker array, my, mx)`` of the task that writes chunk (iy, ix)
        of ``name``; None for the reference (written once, when the store is made)."""
        if name.startswith("levels/"):
            marker = "done/" + name.split("/", 1)[1]
        elif name == "output/0":
            n = len(list(zarr.open_group(str(self.path / "done"), mode="r").array_keys()))
            marker = f"done/{n - 1}"
        elif name.startswith("output/"):
            marker = "output_done/" + name.split("/", 1)[1]
        else:
            return None
        shape = self.array(marker).shape
        return (marker, 0, 0) if shape == (1, 1) else (marker, iy, ix)

    def invalidate(self, err: CorruptChunkError) -> list[tuple[str, int, int]]:
        """Clear the markers of the tasks owning ``err``'s chunks, so they run again.

        Raises
        ------
        GigapatchError
            For the reference (only a fresh run dir can restore it).
        """
        cleared = []
        for c in err.chunks:
            own = self.owner(err.name, *c)
            if own is None:
                raise GigapatchError(
                    f"run store {self.path}: the stored reference is missing or fails its "
                    f"checksum; delete {self.path} and run again") from None
            if own not in cleared:
                self.clear_done(*own)
                cleared.append(own)
        return cleared

    # ---------------------------------------------------------------- output pyramid
    def reduce_output_chunk(self, r: int, iy: int, ix: int) -> None:
        """Compute chunk (iy, ix) of ``output/r`` by 2x box reduction of ``output/{r-1}``."""
        dst = self.array(f"output/{r}")
        src = self.array(f"output/{r - 1}")
        cy, cx = dst.chunks[1], dst.chunks[2]
        _, h, w = dst.shape
        _, sh, sw = src.shape
        core = Box(iy * cy, ix * cx, min((iy + 1) * cy, h), min((ix + 1) * cx, w))
        block = self.read(f"output/{r - 1}", Box(2 * core.y0, 2 * core.x0,
                                                 min(2 * core.y1, sh), min(2 * core.x1, sw)))
        self.write(f"output/{r}", core, reduce2_box(block))

    def output_bands(self, r: int, band: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Row bands ``(y0, (C, band, W))`` of ``output/r``, one chunk row at a time."""
        arr = self.array(f"output/{r}")
        _, h, _ = arr.shape
        band = band or arr.chunks[1]
        for y0 in range(0, h, band):
            yield y0, self.read(f"output/{r}", Box(y0, 0, min(h, y0 + band), arr.shape[2]))

    def output_shapes(self) -> list[tuple[int, int]]:
        n = len([k for k in zarr.open_group(str(self.path / "output"), mode="r").array_keys()])
        return [tuple(self.array(f"output/{r}").shape[1:]) for r in range(n)]

