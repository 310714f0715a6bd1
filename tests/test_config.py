"""The typed config: presets load, every key is documented, bad keys and values are refused."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from gigapatch.config import PRESET_DIR, Config, config_hash, load_config
from gigapatch.errors import GigapatchError


def _fields(obj):
    for f in dataclasses.fields(obj):
        for g in dataclasses.fields(getattr(obj, f.name)):
            yield f.name, g.name


def test_default_yaml_documents_every_key_with_its_default():
    text = (PRESET_DIR / "default.yaml").read_text()
    data = yaml.safe_load(text)
    default = Config()
    for section, key in _fields(default):
        assert key in data[section], f"{section}.{key} missing from default.yaml"
        line = re.search(rf"^\s+{key}:.*$", text, re.M).group(0)
        assert "#" in line, f"{section}.{key} has no comment in default.yaml"
    # the file's values are the dataclass defaults
    assert load_config() == default.validate()


@pytest.mark.parametrize("name", sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
def test_every_bundled_preset_loads(name):
    assert isinstance(load_config(name), Config)


def test_quality_preset_is_the_papers_exact_setting():
    q = load_config("quality")
    assert (q.sampler.patch_size, q.sampler.rho, q.sampler.steps, q.sampler.eta) == (15, 0.2, 10, 0.0)
    assert q.denoiser.backend == "exact" and q.denoiser.dtype == "float32"


def test_overrides_are_parsed_as_yaml_and_validated():
    c = load_config(overrides=["sampler.steps=20", "sampler.eta=1", "sampler.rho=.inf",
                               "output.dpi=300"])
    assert c.sampler.steps == 20 and c.sampler.eta == 1.0 and c.output.dpi == 300.0
    assert c.sampler.rho == float("inf")


@pytest.mark.parametrize("item, words", [
    ("sampler.nope=1", ["unknown config key sampler.nope", "patch_size"]),
    ("nope.steps=1", ["unknown config section 'nope'"]),
    ("sampler.steps=abc", ["sampler.steps", "expected int"]),
    ("sampler.steps=2.5", ["sampler.steps", "expected int"]),
    ("sampler.eta=2", ["sampler.eta", "[0, 1]"]),
    ("sampler.patch_size=4", ["sampler.patch_size", "odd"]),
    ("denoiser.backend=magic", ["denoiser.backend", "'exact'"]),
    ("tiling.tile=100", ["tiling.tile", "multiple of 64"]),
    ("steps=3", ["section.key"]),
])
def test_bad_keys_and_values_name_the_key(item, words):
    with pytest.raises(GigapatchError) as exc:
        load_config(overrides=[item])
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_bad_files_are_refused_with_the_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampler: [1, 2\n")
    with pytest.raises(GigapatchError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(GigapatchError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(GigapatchError, match="mapping"):
        load_config(listing)


def test_partial_file_keeps_other_defaults(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("sampler:\n  steps: 25\n  eta: 1\n")
    c = load_config(f)
    assert c.sampler.steps == 25 and c.sampler.patch_size == 15
    assert c.denoiser == Config().denoiser


def test_hash_changes_with_image_settings_only():
    a = load_config()
    assert config_hash(a) == config_hash(load_config())
    assert config_hash(a) != config_hash(load_config(overrides=["sampler.steps=11"]))
    assert config_hash(a) == config_hash(load_config(overrides=["output.bit_depth=16"]))
