"""Chip profiles: every bundled one loads and matches published peaks; bad profiles give one clear ProfileError."""

from __future__ import annotations

import math
import re
import tempfile
import tomllib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from workbench.chip import ChipSpec, bundled_chips, load_chip
from workbench.data import data_dir
from workbench.errors import ProfileError
from workbench.precision import BITS_PER_WEIGHT

CHIPS = data_dir("chips")
TERA = 1e12
MiB = 2**20
GiB = 2**30

EXPECTED_BUNDLED = {
    "teaching-4x4", "groq-lpu", "groq-lpu-x576", "cerebras-wse3", "cerebras-cs3-x4",
    "tenstorrent-wormhole-n150", "tenstorrent-blackhole-p150", "tenstorrent-blackhole-p100a",
    "tenstorrent-wormhole-galaxy", "tenstorrent-wormhole-quietbox", "tenstorrent-blackhole-quietbox",
    "nvidia-h100-sxm", "nvidia-h100-x8", "nvidia-h100-x2", "nvidia-h200-sxm", "nvidia-h200-x8", "etched-sohu",
    "intel-crescent-island", "edge-npu", "amd-mi300x", "amd-mi300x-x8",
}


def test_every_bundled_profile_loads_and_names_itself():
    assert EXPECTED_BUNDLED <= set(bundled_chips())
    for name in bundled_chips():
        chip = load_chip(name)
        assert chip.name == name
        assert chip.path.endswith(f"{name}.toml")
        assert chip.peak_ops_per_s("f32") > 0 or chip.peak_ops_per_s("int8") > 0
        # every energy figure carries a derivation note, directly or for the whole section
        for key in ("pj_per_byte_sram_read", "pj_per_byte_hop", "static_w"):
            assert f"energy.{key}" in chip.source or "energy" in chip.source, (name, key)


# (chip, figure, precision or None, published value, source tag). Figures: peak ops/s, bytes, bytes/s.
PUBLISHED = [
    ("groq-lpu", "peak", "int8", 750 * TERA, "G7: 750 TOPS int8"),
    ("groq-lpu", "peak", "fp16", 188 * TERA, "G7: 188 TFLOPS fp16"),
    ("groq-lpu", "sram", None, 220 * MiB, "G2: 220 MiB"),
    ("groq-lpu", "sram_bw", None, 80e12, "G7, G8: 80 TB/s"),
    ("cerebras-wse3", "peak", "fp16", 125e15, "C1: 125 PFLOPS"),
    ("cerebras-wse3", "sram", None, 44e9, "C1, C2: 44 GB"),
    ("cerebras-wse3", "sram_bw", None, 21e15, "C2, C3: 21 PB/s"),
    ("cerebras-wse3", "cores", None, 900_000, "C1, C2: 900,000 cores"),
    ("tenstorrent-wormhole-n150", "peak", "fp8", 262 * TERA, "T2: 262 TFLOPS FP8"),
    ("tenstorrent-wormhole-n150", "peak", "fp16", 74 * TERA, "T2: 74 TFLOPS FP16"),
    ("tenstorrent-wormhole-n150", "peak", "int8", 148 * TERA, "T2: 148 TFLOPS BLOCKFP8 (int8 = bfp8 blocks)"),
    ("tenstorrent-wormhole-n150", "sram", None, 108 * MiB, "T2: 108 MB (1.5 MiB x 72)"),
    ("tenstorrent-wormhole-n150", "offchip", None, 12 * GiB, "T2: 12 GB GDDR6"),
    ("tenstorrent-wormhole-n150", "offchip_bw", None, 288e9, "T2: 288 GB/s"),
    ("tenstorrent-blackhole-p150", "peak", "fp8", 745 * TERA, "T4: 745 TFLOPS FP8"),
    ("tenstorrent-blackhole-p150", "peak", "fp16", 372 * TERA, "T4: 372 TFLOPS FP16"),
    ("tenstorrent-blackhole-p150", "peak", "int8", 372 * TERA, "T9: HiFi2 = half of LoFi fp8 (bfp8 blocks)"),
    ("tenstorrent-blackhole-p150", "sram", None, 210 * MiB, "T1: 210 MB"),
    ("tenstorrent-blackhole-p100a", "sram", None, 180 * MiB, "T1: 180 MB (120 Tensix)"),
    ("tenstorrent-blackhole-p100a", "offchip_bw", None, 448e9, "T1: 448 GB/s"),
    ("tenstorrent-blackhole-p150", "offchip", None, 32 * GiB, "T1: 32 GB GDDR6"),
    ("tenstorrent-blackhole-p150", "offchip_bw", None, 512e9, "T1: 512 GB/s"),
    ("nvidia-h100-sxm", "peak", "fp8", 1979 * TERA, "N1, N2: 1,979 TFLOPS FP8 dense"),
    ("nvidia-h100-sxm", "peak", "int8", 1979 * TERA, "N1: 3,958 INT8 sparse / 2"),
    ("nvidia-h100-sxm", "peak", "bf16", 989.4 * TERA, "N1, N2: 989.4 TFLOPS BF16 dense"),
    ("nvidia-h100-sxm", "sram", None, 132 * 228 * 1024, "N1: 228 KB smem x 132 SMs"),
    ("nvidia-h100-sxm", "offchip", None, 80 * GiB, "N1: 80 GB HBM3"),
    ("nvidia-h100-sxm", "offchip_bw", None, 3.35e12, "N1, N2: 3.35 TB/s"),
    ("nvidia-h200-sxm", "peak", "fp8", 1979 * TERA, "N4: same die as H100"),
    ("nvidia-h200-sxm", "offchip", None, 141 * GiB, "N4: 141 GB HBM3e"),
    ("nvidia-h200-sxm", "offchip_bw", None, 4.8e12, "N4: 4.8 TB/s"),
    ("amd-mi300x", "peak", "fp8", 2.6e15, "A2, A3: ~2.6 PF FP8 dense"),
    ("amd-mi300x", "peak", "fp16", 1.3e15, "A2, A3: ~1.3 PF FP16 dense"),
    ("amd-mi300x", "offchip", None, 192 * GiB, "A1, A2: 192 GB HBM3"),
    ("amd-mi300x", "offchip_bw", None, 5.3e12, "A1, A2: 5.3 TB/s"),
    ("etched-sohu", "offchip", None, 144 * GiB, "E2, E3: 144 GB HBM3E"),
    ("etched-sohu", "offchip_bw", None, 6.03e12, "E3: ~6.03 TB/s"),
    ("intel-crescent-island", "offchip", None, 160 * GiB, "X1, X2: 160 GB LPDDR5X"),
    ("edge-npu", "peak", "int8", 38 * TERA, "M1: 38 TOPS"),
    ("edge-npu", "offchip_bw", None, 120e9, "M1: LPDDR5X 120 GB/s"),
]


def _figure(chip: ChipSpec, figure: str, prec: str | None) -> float:
    return {
        "peak": lambda: chip.peak_ops_per_s(prec),
        "sram": lambda: chip.sram_bytes,
        "sram_bw": lambda: chip.sram_bytes_per_s,
        "cores": lambda: chip.physical_cores,
        "offchip": lambda: chip.offchip_bytes,
        "offchip_bw": lambda: chip.offchip_bytes_per_s,
    }[figure]()


@pytest.mark.parametrize("name,figure,prec,published,tag", PUBLISHED, ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in PUBLISHED])
def test_derived_figures_match_published_within_5_percent(name, figure, prec, published, tag):
    derived = _figure(load_chip(name), figure, prec)
    assert abs(derived / published - 1) <= 0.05, f"{name} {figure} {prec}: {derived:.4g} vs {published:.4g} ({tag})"


def test_systems_multiply_their_chip():
    for system, chip, chips in (("groq-lpu-x576", "groq-lpu", 576), ("nvidia-h100-x8", "nvidia-h100-sxm", 8),
                                ("tenstorrent-wormhole-galaxy", "tenstorrent-wormhole-n150", 32),
                                ("tenstorrent-wormhole-quietbox", "tenstorrent-wormhole-n150", 8),
                                ("tenstorrent-blackhole-quietbox", "tenstorrent-blackhole-p150", 4),
                                ("cerebras-cs3-x4", "cerebras-wse3", 4), ("amd-mi300x-x8", "amd-mi300x", 8),
                                ("nvidia-h100-x2", "nvidia-h100-sxm", 2)):
        s, c = load_chip(system), load_chip(chip)
        assert s.system.chips == chips and c.system.chips == 1
        assert s.tile == c.tile and s.energy == c.energy
        assert s.system_peak_ops_per_s("int8") == chips * c.peak_ops_per_s("int8")
        assert s.system_sram_bytes == chips * c.sram_bytes
        assert s.system_offchip_bytes_per_s == chips * c.offchip_bytes_per_s
        assert s.system.chip_link_gb_per_s > 0


def test_teaching_chip_holds_a_small_model_in_int8_but_not_f32():
    chip = load_chip("teaching-4x4")
    assert (chip.n_tiles, chip.sram_bytes, chip.clock_ghz) == (16, 4 * MiB, 1.0)
    for params in (2_000_000, 3_000_000):
        assert params * BITS_PER_WEIGHT["int8"] / 8 < chip.sram_bytes
        assert params * BITS_PER_WEIGHT["f32"] / 8 > chip.sram_bytes
    assert chip.peak_ops_per_s("int8") == 2 * 256 * 16 * 1e9


def test_fallback_follows_precision_chain():
    groq = load_chip("groq-lpu")
    assert groq.native_precision("int4") == "int8" and groq.macs_per_cycle("ternary") == 10240
    assert groq.native_precision("fp8") == "fp16" and groq.pj_per_mac("fp8") == groq.energy.pj_per_mac["fp16"]
    assert groq.macs_per_cycle_native("int4") == 0
    assert groq.native_precision("f32") is None and groq.macs_per_cycle("f32") == 0
    assert groq.peak_ops_per_s("f32") == 0


def test_ridge_uses_sram_when_there_is_no_offchip_memory():
    groq, h100 = load_chip("groq-lpu"), load_chip("nvidia-h100-sxm")
    assert not groq.has_offchip and groq.offchip_bytes_per_s == 0
    assert groq.ridge_ops_per_byte("int8") == pytest.approx(groq.peak_ops_per_s("int8") / groq.sram_bytes_per_s)
    assert h100.ridge_ops_per_byte("fp8") == pytest.approx(1979e12 / 3.35e12, rel=1e-3)


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _teaching_doc() -> dict:
    return tomllib.loads((CHIPS / "teaching-4x4.toml").read_text())


def _with(doc: dict, dotted: str, value) -> dict:
    node = doc
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DROP:
        del node[last]
    else:
        node[last] = value
    return doc


_DROP = object()


def test_noc_bisection_by_topology(tmp_path):
    base = _teaching_doc()
    links = {}
    for topology, rows, cols in (("mesh", 4, 4), ("torus", 4, 4), ("ring", 1, 8), ("mesh", 2, 8), ("torus", 2, 2)):
        doc = _with(_with(_with(_teaching_doc(), "mesh.topology", topology), "mesh.rows", rows), "mesh.cols", cols)
        chip = load_chip(_write(tmp_path, "t.toml", tomli_w.dumps(doc)))
        links[(topology, rows, cols)] = chip.noc_bisection_links
        assert chip.noc_bisection_bytes_per_s == chip.noc_bisection_links * 32 * 1e9
    assert links == {("mesh", 4, 4): 4, ("torus", 4, 4): 8, ("ring", 1, 8): 2, ("mesh", 2, 8): 2, ("torus", 2, 2): 2}
    assert base["mesh"]["rows"] == 4


BAD = [
    ("chip.clok_ghz", 1.0, "chip.clok_ghz", "did you mean 'clock_ghz'"),
    ("tile.macs_per_cycle.int9", 4, "tile.macs_per_cycle.int9", "did you mean 'int8'"),
    ("chip.clock_ghz", "fast", "chip.clock_ghz", "expected a number, found 'fast'"),
    ("chip.clock_ghz", True, "chip.clock_ghz", "expected a number, found true (a boolean)"),
    ("chip.clock_ghz", 0, "chip.clock_ghz", "expected a value in (0, 100]"),
    ("chip.clock_ghz", math.nan, "chip.clock_ghz", "expected a finite number"),
    ("memory.bandwidth_gb_per_s", math.inf, "memory.bandwidth_gb_per_s", "expected a finite number"),
    ("tile.sram_kib", -256, "tile.sram_kib", "found -256"),
    ("mesh.rows", 4.0, "mesh.rows", "expected an integer, found 4.0 (a float)"),
    ("mesh.rows", 10**8, "mesh.rows", "expected a value in [1, 1e+07]"),
    ("mesh.cols", 10**400, "mesh.cols", "found an integer of about 10^400"),
    ("chip.die_mm2", -(10**400), "chip.die_mm2", "expected a value in a sane range"),
    ("mesh.topology", "tours", "mesh.topology", "did you mean 'torus'"),
    ("tile.vector_lanes", _DROP, "tile.vector_lanes", "missing key"),
    ("energy.pj_per_mac_int4", _DROP, "energy.pj_per_mac_int4", "missing key"),
    ("memory.kind", "none", "memory.kind", "expected a memory type"),
    ("system", {"chips": 2_000_000, "topology": "ring", "chip_link_gb_per_s": 1.0}, "system.chips", "[1, 1e+06]"),
    ("system", {"chips": 4}, "system.topology", "expected 'single' exactly when chips = 1"),
    ("system", {"chips": 4, "topology": "ring"}, "system.chip_link_gb_per_s", "expected a bandwidth > 0"),
    ("noc", [1, 2], "noc", "expected a [noc] table, found an array"),
    ("source.tile.sram_kb", "x", "source.tile.sram_kb", "did you mean 'tile.sram_kib'"),
    ("realism", {"compute_efficiency": 1.5}, "realism.compute_efficiency", "(0, 1]"),
]


@pytest.mark.parametrize("dotted,value,key,needle", BAD, ids=[b[0] + "-" + str(i) for i, b in enumerate(BAD)])
def test_bad_values_name_file_key_expected_and_found(tmp_path, dotted, value, key, needle):
    path = _write(tmp_path, "bad.toml", tomli_w.dumps(_with(_teaching_doc(), dotted, value)))
    with pytest.raises(ProfileError) as err:
        load_chip(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert needle in message, message
    assert "\n" not in message


def test_too_many_tiles_in_total(tmp_path):
    doc = _with(_with(_teaching_doc(), "mesh.rows", 10_000), "mesh.cols", 10_000)
    with pytest.raises(ProfileError, match=r"mesh: expected at most 10000000 tiles, found rows\*cols = 100000000"):
        load_chip(_write(tmp_path, "big.toml", tomli_w.dumps(doc)))


@pytest.mark.parametrize("content,needle", [
    (b"[chip\nname = 1", "expected valid TOML"),
    (b"\xff\xfe[chip]", "expected UTF-8 text"),
    (b"a = " + b"[" * 5000 + b"]" * 5000, "nesting too deep"),
    (b"# " + b"x" * 400_000, "expected a profile of at most"),
    (b"", "expected a [chip] table, found none"),
    (b"a = 1" + b"0" * 5000, "expected valid TOML values"),
])
def test_unparseable_files(tmp_path, content, needle):
    path = tmp_path / "f.toml"
    path.write_bytes(content)
    with pytest.raises(ProfileError, match=re.escape(needle)) as err:
        load_chip(path)
    assert str(path) in str(err.value)


def test_missing_file_directory_and_unknown_name(tmp_path):
    with pytest.raises(ProfileError, match="no such file"):
        load_chip(tmp_path / "nope.toml")
    with pytest.raises(ProfileError, match="is a directory"):
        load_chip(tmp_path)
    with pytest.raises(ProfileError, match="did you mean 'groq-lpu'"):
        load_chip("groq-lpv")
    with pytest.raises(ProfileError):
        load_chip("nul\x00byte")


def test_extends_overrides_and_reports_the_right_file(tmp_path):
    h200 = load_chip("nvidia-h200-sxm")
    h100 = load_chip("nvidia-h100-sxm")
    assert h200.tile == h100.tile and h200.memory.capacity_gib == 141 and h200.memory.latency_ns == 600
    assert h200.source["tile.macs_per_cycle.fp8"] == h100.source["tile.macs_per_cycle.fp8"]
    child = _write(tmp_path, "child.toml", f'extends = "{CHIPS / "teaching-4x4.toml"}"\n[chip]\nname = "c"\nclok_ghz = 2\n')
    with pytest.raises(ProfileError, match=rf"^{child}: chip.clok_ghz: .*did you mean 'clock_ghz'"):
        load_chip(child)
    _write(tmp_path, "parent.toml", "[chip]\nname = 'p'\n")
    relative = _write(tmp_path, "rel.toml", 'extends = "parent.toml"\n')
    with pytest.raises(ProfileError, match=r"rel.toml: chip.vendor: .*missing key"):
        load_chip(relative)  # a missing key is reported against the file the user loaded
    _write(tmp_path, "parent.toml", "[chip]\nname = 'p'\nvendor = 7\n")
    with pytest.raises(ProfileError, match=r"parent.toml: chip.vendor: expected a string, found 7"):
        load_chip(relative)  # a bad value is reported against the file that holds it


def test_extends_cycles_and_missing_parents(tmp_path):
    _write(tmp_path, "a.toml", 'extends = "b.toml"\n')
    _write(tmp_path, "b.toml", 'extends = "a.toml"\n')
    with pytest.raises(ProfileError, match=r"extends: expected a chain without cycles, found a.toml -> b.toml -> a.toml"):
        load_chip(tmp_path / "a.toml")
    _write(tmp_path, "self.toml", 'extends = "self.toml"\n')
    with pytest.raises(ProfileError, match="cycles"):
        load_chip(tmp_path / "self.toml")
    _write(tmp_path, "orphan.toml", 'extends = "no-such-chip"\n')
    with pytest.raises(ProfileError, match=r"orphan.toml: extends: expected a chip profile to extend"):
        load_chip(tmp_path / "orphan.toml")
    _write(tmp_path, "num.toml", "extends = 3\n")
    with pytest.raises(ProfileError, match="extends: expected a bundled chip name or a path, found 3"):
        load_chip(tmp_path / "num.toml")


def test_spec_is_frozen_and_hashable():
    chip = load_chip("teaching-4x4")
    assert hash(chip) == hash(load_chip("teaching-4x4"))
    with pytest.raises(AttributeError):
        chip.clock_ghz = 2.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        chip.tile.macs_per_cycle["int8"] = 1  # type: ignore[index]
    assert chip.to_dict()["tile"]["macs_per_cycle"]["int8"] == 256


# -- property test: any mutation of a valid profile loads or raises ProfileError, nothing else --------

_values = st.one_of(
    st.integers(-(10**15), 10**15), st.integers(-(10**400), 10**400), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
    st.lists(st.integers(0, 9), max_size=3), st.dictionaries(st.sampled_from(["a", "rows", "int8"]), st.integers(), max_size=2),
)


def _paths(doc: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in doc.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out.extend(_paths(value, (*prefix, key)))
    return out


def _node(doc: dict, path: tuple) -> dict:
    for key in path:
        doc = doc[key]
    return doc


@given(data=st.data(), base=st.sampled_from(["teaching-4x4", "nvidia-h200-sxm", "groq-lpu-x576"]))
def test_mutated_profiles_load_or_raise_profile_error(data, base):
    doc = tomllib.loads((CHIPS / f"{base}.toml").read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent, key = _node(doc, path[:-1]), path[-1]
        action = data.draw(st.sampled_from(["drop", "set", "unknown", "rename", "scale"]))
        if action == "drop":
            del parent[key]
        elif action == "set":
            parent[key] = data.draw(_values)
        elif action == "unknown":
            target = parent[key] if isinstance(parent[key], dict) else parent
            target[data.draw(st.sampled_from(["clok_ghz", "srams", "int9", "x"]))] = data.draw(_values)
        elif action == "rename":
            parent[data.draw(st.sampled_from(["tiles", "Chip", "memroy", "energy", "extends"]))] = parent.pop(key)
        elif isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            factor = data.draw(st.sampled_from([-1, 0, 10**9, 1e300]))
            try:
                parent[key] = parent[key] * factor
            except OverflowError:  # a 400-digit integer times 1e300
                parent[key] = math.inf
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutant.toml"
        path.write_text(tomli_w.dumps(doc), encoding="utf-8")
        try:
            chip = load_chip(path)
        except ProfileError as exc:
            assert "\n" not in str(exc) and str(exc)
        else:
            assert isinstance(chip, ChipSpec)
            chip.derived()
