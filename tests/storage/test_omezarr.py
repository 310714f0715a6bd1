"""The OME-Zarr (0.5) writer: metadata, the copied pyramid, atomic replacement."""

import json
import os

import numpy as np


from .pyramid_store import build_store as _store


def test_ome_zarr_metadata_and_copy(tmp_path):
    import zarr

    from gigapatch.storage.omezarr import write_ome_zarr

    store, img, shapes = _store(tmp_path)
    out = write_ome_zarr(store.path / "output", tmp_path / "img.ome.zarr")
    meta = json.loads((out / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["node_type"] == "group"
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert [a["type"] for a in ms["axes"]] == ["channel", "space", "space"]
    assert [d["path"] for d in ms["datasets"]] == [str(r) for r in range(len(shapes))]
    for r, d in enumerate(ms["datasets"]):
        assert d["coordinateTransformations"] == [
            {"type": "scale", "scale": [1.0, 2.0 ** r, 2.0 ** r]}]
        arr = zarr.open_array(str(out / str(r)), mode="r")
        assert arr.shape == (3,) + shapes[r]
        assert tuple(arr.metadata.dimension_names) == ("c", "y", "x")
    assert np.array_equal(zarr.open_array(str(out / "0"), mode="r")[...], img)
    # rewriting replaces it atomically
    write_ome_zarr(store.path / "output", out)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]
