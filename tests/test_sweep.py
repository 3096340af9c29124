"""Sweeps: sweep-file validation, grid expansion, resume, order independence, the Pareto front, Dask, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workbench.errors import WorkbenchError
from workbench.precision import BITS_PER_WEIGHT
from workbench.sweep import (
    SweepInterrupted,
    front_rows,
    load_sweep,
    pareto_front,
    run_sweep,
    sidecar_path,
)
from workbench.sweep.store import read_results

ROOT = Path(__file__).resolve().parents[1]


def standin(chip, config, *, precision, batch, prompt_len, gen_len, chips, mapping):
    """A test-only roofline: weights streamed once per step, MACs at peak. Not the projection engine."""
    n = chips or chip.system.chips
    weight_bytes = config.n_params() * BITS_PER_WEIGHT[precision] / 8
    bandwidth = (chip.offchip_bytes_per_s or chip.sram_bytes_per_s) * n
    t_memory = weight_bytes / bandwidth
    t_compute = 2.0 * config.n_params() * batch / chip.system_peak_ops_per_s(precision) if n == chip.system.chips \
        else 2.0 * config.n_params() * batch / (chip.peak_ops_per_s(precision) * n)
    step_s = max(t_memory, t_compute)
    watts = chip.energy.static_w * n + weight_bytes * chip.energy.pj_per_byte_dram * 1e-12 / step_s
    return {"chip": chip.name, "model": config.name, "precision": precision, "batch": batch, "chips": n,
            "mapping": "tensor" if mapping == "auto" else mapping, "seconds_per_token": step_s,
            "tokens_per_s_per_user": 1.0 / step_s, "tokens_per_s": batch / step_s, "joules_per_token": watts * step_s / batch,
            "watts": watts, "ttft_s": step_s * prompt_len / batch, "bound": "memory" if t_memory > t_compute else "compute",
            "fits": weight_bytes <= (chip.offchip_bytes + chip.sram_bytes) * n,
            "phases_s": {"compute": t_compute, "offchip_memory": t_memory}, "notes": ("stand-in", "roofline")}


def failing_standin(chip, config, **options):
    if options["batch"] == 8:
        raise WorkbenchError("batch 8 does not fit", key="batch")
    return standin(chip, config, **options)


class Counted:
    """A picklable stand-in that counts calls in this process (jobs=1 runs inline)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, chip, config, **options):
        self.calls += 1
        return standin(chip, config, **options)


SMALL = """
base_chip = "tenstorrent-blackhole-p150"
models = ["llama-3.1-8b", "llama-3.1-70b"]
[options]
gen_len = 64
[axes]
"tile.sram_kib" = [512, 1536]
memory.bandwidth_gb_per_s = [256, 1024]
system = [{ chips = 1, topology = "single" }, { chips = 4, topology = "ring", chip_link_gb_per_s = 400 }]
precision = ["int8", "int4"]
batch = [1, 8]
"""


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- parsing and validation -----------------------------------------------------------------------


def test_grid_expansion_and_chip_variants(tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL))
    assert sweep.n_points == 2 * 2 * 2 * 2 * 2 * 2
    assert len(sweep.variants) == 8  # chip axes only: 2 x 2 x 2
    seen = set()
    for pid in range(sweep.n_points):
        _, chip, options, cells = sweep.point(pid)
        key = (cells["model"], chip.tile.sram_kib, chip.memory.bandwidth_gb_per_s, chip.system.chips,
               options["precision"], options["batch"])
        seen.add(key)
        assert cells["tile.sram_kib"] == chip.tile.sram_kib
        assert cells["system.chips"] == chip.system.chips
        assert options["gen_len"] == 64 and options["prompt_len"] == 128 and options["mapping"] == "auto"
    assert len(seen) == sweep.n_points  # every combination exactly once
    # last axis fastest, models outermost
    assert sweep.point(0)[2]["batch"] == 1 and sweep.point(1)[2]["batch"] == 8
    assert sweep.point(sweep.n_points // 2)[3]["model"] == "llama-3.1-70b"
    # untouched keys keep the base profile's values
    assert all(v.mesh.rows == 10 and v.clock_ghz == 1.35 for v in sweep.variants)
    with pytest.raises(IndexError):
        sweep.point(sweep.n_points)


def test_bare_dotted_and_nested_chip_keys_agree(tmp_path):
    a = load_sweep(write(tmp_path, 'base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[chip]\n"noc.hop_latency_cycles" = 3\n'
                                   '[axes]\n"tile.sram_kib" = [64, 128]\n', "a.toml"))
    b = load_sweep(write(tmp_path, 'base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[chip.noc]\nhop_latency_cycles = 3\n'
                                   '[axes.tile]\nsram_kib = [64, 128]\n', "b.toml"))
    assert [v.to_dict() | {"path": ""} for v in a.variants] == [v.to_dict() | {"path": ""} for v in b.variants]
    assert a.variants[0].noc.hop_latency_cycles == 3
    assert a.fingerprint == b.fingerprint


def test_clock_is_sweepable_and_fingerprint_follows_the_file(tmp_path):
    text = 'base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes]\n"chip.clock_ghz" = [0.5, 1.0]\n'
    sweep = load_sweep(write(tmp_path, text))
    assert [v.clock_ghz for v in sweep.variants] == [0.5, 1.0]
    other = load_sweep(write(tmp_path, text.replace("1.0]", "2.0]"), "other.toml"))
    assert other.fingerprint != sweep.fingerprint


BAD = [
    ('models = ["llama-3.1-8b"]\n', "base_chip", "missing key"),
    ('base_chip = "tenstorrent-blackhole-p15"\nmodels = ["llama-3.1-8b"]\n', "base_chip", "did you mean 'tenstorrent-blackhole-p150'"),
    ('base_chip = "teaching-4x4"\n', "models", "missing key"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8c"]\n', "models[0]", "llama-3.1-8b"),
    ('base_chip = "teaching-4x4"\nmodels = []\n', "models", "non-empty"),
    ('base_chip = "teaching-4x4"\nmodel = ["llama-3.1-8b"]\n', "model", "did you mean 'models'"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes]\nprecison = ["int8"]\n', "axes.precison", "did you mean 'precision'"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes]\nprecision = ["int9"]\n', "axes.precision[0]", "did you mean 'int8'"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes]\nbatch = [1, 0]\n', "axes.batch[1]", "found 0"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes]\nbatch = [1, 1]\n', "axes.batch", "distinct"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes]\nbatch = []\n', "axes.batch", "non-empty"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes]\nbatch = 4\n', "axes.batch", "array"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes]\n"tile.sram_kb" = [64]\n', "axes.tile.sram_kb", "did you mean 'sram_kib'"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes]\n"tile.sram_kib" = [64, -1]\n', "axes.tile.sram_kib", "tile.sram_kib=-1"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes]\n"tlie.sram_kib" = [64]\n', "axes.tlie.sram_kib", "did you mean 'tile'"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes]\n"system.chips" = [1, 4]\n', "axes.system.chips", "topology"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[options]\nbatch = 2\n[axes]\nbatch = [1]\n', "axes.batch", "both"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[options]\nbath = 2\n', "options.bath", "did you mean 'batch'"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes]\nbatch = [1, 2]\n"mesh.rows" = [2, 3]\n"mesh.cols" = [2, 3]\n'
     'prompt_len = [' + ", ".join(str(i) for i in range(1, 10001)) + "]\n" + 'gen_len = [' + ", ".join(str(i) for i in range(1, 101)) + "]\n",
     "axes", "at most 1,000,000 grid points"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes]\nsystem = [4]\n', "axes.system", "tables"),
    ('base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes\n', None, "syntax error"),
]


@pytest.mark.parametrize("text,key,needle", BAD, ids=[f"{i}-{key}" for i, (_, key, _) in enumerate(BAD)])
def test_bad_sweep_files_give_one_line(tmp_path, text, key, needle):
    path = write(tmp_path, text)
    with pytest.raises(WorkbenchError) as info:
        load_sweep(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert needle in message
    if key is not None:
        assert info.value.key == key


def test_not_a_sweep_file(tmp_path):
    with pytest.raises(WorkbenchError, match="directory"):
        load_sweep(tmp_path)
    with pytest.raises(WorkbenchError, match="cannot read"):
        load_sweep(tmp_path / "absent.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(WorkbenchError, match="UTF-8"):
        load_sweep(tmp_path / "bin.toml")


@given(st.binary(max_size=300))
def test_mutated_sweep_files_never_traceback(data):
    import tempfile

    base = SMALL.encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.toml"
        cut = len(data) % (len(base) + 1)
        path.write_bytes(base[:cut] + data + base[cut:])
        try:
            load_sweep(path)
        except WorkbenchError as exc:
            assert "\n" not in str(exc)


# -- running --------------------------------------------------------------------------------------


def test_run_writes_sorted_rows_and_errors_per_point(tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL))
    out = tmp_path / "r.csv"
    summary = run_sweep(sweep, out, jobs=1, evaluate=failing_standin)
    rows = read_results(out)
    assert [int(r["point_id"]) for r in rows] == list(range(sweep.n_points))
    assert summary.evaluated == sweep.n_points and summary.resumed == 0
    assert summary.errors == sweep.n_points // 2 == sum(1 for r in rows if r["error"])
    bad = [r for r in rows if r["error"]]
    assert all(r["batch"] == "8" and "batch 8 does not fit" in r["error"] and r["tokens_per_s"] == "" for r in bad)
    good = rows[0]
    assert good["chips_used"] == "1" and good["mapping_used"] == "tensor" and good["phases_s.compute"]
    assert good["notes"] == "stand-in; roofline" and "chip" not in good and "precision_used" not in good
    # the header: inputs, then results in the preferred order, then the rest, then error
    header = out.read_text().splitlines()[0].split(",")
    assert header[:3] == ["point_id", "model", "tile.sram_kib"] and header[-1] == "error"
    assert header.index("fits") < header.index("tokens_per_s_per_user") < header.index("phases_s.compute")
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["done"] == [[0, sweep.n_points]] and meta["fingerprint"] == sweep.fingerprint


def test_jobs_one_and_two_write_identical_files(tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL))
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    run_sweep(sweep, one, jobs=1, evaluate=standin)
    run_sweep(sweep, two, jobs=2, evaluate=standin, chunk_points=3)
    assert one.read_bytes() == two.read_bytes()
    assert sidecar_path(one).read_text() == sidecar_path(two).read_text()


def test_interrupted_sweep_resumes_where_it_stopped(tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL))
    full = tmp_path / "full.csv"
    run_sweep(sweep, full, jobs=1, evaluate=standin)

    out = tmp_path / "r.csv"
    calls = []

    def stop_after_some(done, total):
        calls.append(done)
        if done >= 20:
            raise KeyboardInterrupt

    with pytest.raises(SweepInterrupted) as info:
        run_sweep(sweep, out, jobs=1, evaluate=standin, progress=stop_after_some, chunk_points=5)
    written = info.value.done
    assert 20 <= written < sweep.n_points
    assert len(read_results(out)) == written
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind

    counted = Counted()
    summary = run_sweep(sweep, out, jobs=1, evaluate=counted)
    assert counted.calls == sweep.n_points - written
    assert summary.resumed == written and summary.evaluated == sweep.n_points - written
    assert out.read_bytes() == full.read_bytes()
    # a finished sweep rerun is a no-op
    again = Counted()
    assert run_sweep(sweep, out, jobs=1, evaluate=again).evaluated == 0 and again.calls == 0


def test_resume_refuses_another_sweeps_results(tmp_path):
    out = tmp_path / "r.csv"
    run_sweep(load_sweep(write(tmp_path, SMALL)), out, jobs=1, evaluate=standin)
    other = load_sweep(write(tmp_path, SMALL.replace("gen_len = 64", "gen_len = 65"), "other.toml"))
    with pytest.raises(WorkbenchError, match="another sweep"):
        run_sweep(other, out, jobs=1, evaluate=standin)
    summary = run_sweep(other, out, jobs=1, evaluate=standin, restart=True)
    assert summary.resumed == 0 and read_results(out)[0]["gen_len"] == "65"
    sidecar_path(out).write_text("{not json")
    with pytest.raises(WorkbenchError, match="--restart"):
        run_sweep(other, out, jobs=1, evaluate=standin)


def test_bad_jobs(tmp_path):
    with pytest.raises(WorkbenchError, match="--jobs"):
        run_sweep(load_sweep(write(tmp_path, SMALL)), tmp_path / "r.csv", jobs=0, evaluate=standin)


# -- Pareto ---------------------------------------------------------------------------------------


def brute_front(xs, ys):
    def dominated(i):
        return any(xs[j] >= xs[i] and ys[j] <= ys[i] and (xs[j] > xs[i] or ys[j] < ys[i]) for j in range(len(xs)))

    return {i for i in range(len(xs)) if not dominated(i)}


def test_pareto_front_on_a_known_set():
    xs = [1.0, 2.0, 3.0, 2.0, 3.0, 0.5, 3.0]
    ys = [1.0, 2.0, 5.0, 1.5, 4.0, 0.5, 4.0]
    # (3,4) twice (kept both), (2,1.5), (1,1), (0.5,0.5); (2,2) and (3,5) are dominated
    assert pareto_front(xs, ys) == [4, 6, 3, 0, 5]


@given(st.lists(st.tuples(st.integers(1, 8), st.integers(1, 8)), max_size=40))
def test_pareto_front_matches_brute_force(points):
    xs = [float(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    front = pareto_front(xs, ys)
    assert set(front) == brute_front(xs, ys) and len(front) == len(set(front))
    assert [xs[i] for i in front] == sorted((xs[i] for i in front), reverse=True)


def test_front_rows_skips_errors_and_misfits_and_groups_by_model():
    rows = [
        {"model": "a", "tokens_per_s_per_user": "10", "joules_per_token": "1", "fits": "true", "error": ""},
        {"model": "a", "tokens_per_s_per_user": "100", "joules_per_token": "0.1", "fits": "false", "error": ""},
        {"model": "a", "tokens_per_s_per_user": "100", "joules_per_token": "0.1", "fits": "true", "error": "boom"},
        {"model": "a", "tokens_per_s_per_user": "5", "joules_per_token": "2", "fits": "true", "error": ""},
        {"model": "b", "tokens_per_s_per_user": "5", "joules_per_token": "2", "fits": "true", "error": ""},
        {"model": "b", "tokens_per_s_per_user": "nan", "joules_per_token": "2", "fits": "true", "error": ""},
    ]
    fronts = front_rows(rows)
    assert [r["tokens_per_s_per_user"] for r in fronts["a"]] == ["10"]
    assert [r["tokens_per_s_per_user"] for r in fronts["b"]] == ["5"]


# -- Dask -----------------------------------------------------------------------------------------


def test_dask_local_cluster_matches_local_run(tmp_path):
    distributed = pytest.importorskip("distributed")
    sweep = load_sweep(write(tmp_path, SMALL))
    local, remote = tmp_path / "local.csv", tmp_path / "dask.csv"
    run_sweep(sweep, local, jobs=1, evaluate=standin)
    with distributed.LocalCluster(n_workers=2, processes=False, threads_per_worker=1, dashboard_address=None) as cluster:
        summary = run_sweep(sweep, remote, scheduler=cluster.scheduler_address, evaluate=standin, chunk_points=4)
    assert summary.evaluated == sweep.n_points
    assert remote.read_bytes() == local.read_bytes()


def test_unreachable_scheduler_is_one_line(tmp_path):
    pytest.importorskip("distributed")
    with pytest.raises(WorkbenchError, match="scheduler"):
        run_sweep(load_sweep(write(tmp_path, SMALL)), tmp_path / "r.csv", scheduler="tcp://127.0.0.1:9",
                  evaluate=standin, scheduler_timeout_s=2)


# -- the command line -----------------------------------------------------------------------------


def cli(*args, timeout=240, **kw):
    code = "import sys; from workbench.cli import app, sweep_cmd; sweep_cmd.register(app); sys.argv = ['asicbench', *sys.argv[1:]]; app()"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-c", code, "sweep", *map(str, args)], capture_output=True, text=True, check=False,
                          timeout=timeout, env=env, **kw)


def test_cli_bad_sweep_file_is_one_line_exit_2(tmp_path):
    path = write(tmp_path, 'base_chip = "teaching-4x4"\nmodels = ["llama-3.1-8b"]\n[axes]\nprecison = ["int8"]\n')
    result = cli(path, "-o", tmp_path / "r.csv")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "axes.precison" in lines[0] and "did you mean 'precision'" in lines[0]
    assert not (tmp_path / "r.csv").exists()
    missing = cli(tmp_path / "absent.toml")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_core_does_not_import_the_ui():
    code = "import sys, workbench.sweep; print(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'textual')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_parquet_beside_the_csv_when_pyarrow_is_there(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    sweep = load_sweep(write(tmp_path, SMALL))
    out = tmp_path / "r.csv"
    summary = run_sweep(sweep, out, jobs=1, evaluate=failing_standin)
    assert summary.parquet == tmp_path / "r.parquet"
    table = pq.read_table(summary.parquet)
    rows = read_results(out)
    assert table.num_rows == len(rows) and table.column_names == list(rows[0])
    assert table.column("point_id").to_pylist() == list(range(sweep.n_points))
    assert table.column("fits").type == "bool"
    got = table.column("tokens_per_s_per_user").to_pylist()
    assert got == [float(r["tokens_per_s_per_user"]) if r["tokens_per_s_per_user"] else None for r in rows]


def test_cells_are_plain_and_round_trip():
    import numpy as np

    from workbench.sweep.store import cell

    assert cell(np.float64(0.1)) == "0.1" and cell(np.int64(7)) == "7" and cell(np.bool_(True)) == "true"
    assert cell(None) == "" and cell(float("inf")) == "inf" and cell(False) == "false"
    for x in (1e-300, 0.1 + 0.2, 123456.789e10):
        assert float(cell(x)) == x


# -- with the real projection engine --------------------------------------------------------------

REAL = """
base_chip = "tenstorrent-blackhole-p150"
models = ["llama-3.1-8b"]
[axes]
"memory.bandwidth_gb_per_s" = [256, 1024]
system = [{ chips = 1, topology = "single" }, { chips = 4, topology = "ring", chip_link_gb_per_s = 400 }]
precision = ["int8", "int4"]
batch = [1, 8]
"""


@pytest.fixture(scope="module")
def project():
    try:
        from workbench.projection import project
    except ImportError:
        pytest.skip("workbench.projection is not there yet")
    return project


def test_real_sweep_end_to_end_matches_single_projections(tmp_path, project):
    path = write(tmp_path, REAL)
    out = tmp_path / "r.csv"
    result = cli(path, "-o", out, "--jobs", "2", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    sweep = load_sweep(path)
    assert summary["points"] == summary["evaluated"] == sweep.n_points == 16 and summary["errors"] == 0
    rows = read_results(out)
    assert [int(r["point_id"]) for r in rows] == list(range(16))
    # each row is exactly what project() says for that point
    from workbench.sweep.store import cell

    for pid in (0, 7, 15):
        m, chip, options, _ = sweep.point(pid)
        p = project(chip, sweep.models[m][1], **options)
        row = rows[pid]
        assert row["tokens_per_s_per_user"] == cell(p.tokens_per_s_per_user)
        assert row["joules_per_token"] == cell(p.joules_per_token)
        assert row["chips_used"] == cell(p.chips) and row["bound"] == p.bound
    # more bandwidth never makes a memory-bound single-chip point slower
    slow, fast = rows[0], rows[8]
    assert slow["memory.bandwidth_gb_per_s"] == "256" and fast["memory.bandwidth_gb_per_s"] == "1024"
    assert float(fast["tokens_per_s_per_user"]) >= float(slow["tokens_per_s_per_user"])
    front = summary["pareto"]["llama-3.1-8b"]
    assert front and all(r["error"] == "" for r in front)
    # the same sweep in this process, one job, writes the same bytes
    inline = tmp_path / "inline.csv"
    run_sweep(sweep, inline, jobs=1)
    assert inline.read_bytes() == out.read_bytes()
    # and on a Dask LocalCluster (the real engine imported on the workers)
    distributed = pytest.importorskip("distributed")
    remote = tmp_path / "dask.csv"
    with distributed.LocalCluster(n_workers=2, processes=False, threads_per_worker=1, dashboard_address=None) as cluster:
        run_sweep(sweep, remote, scheduler=cluster.scheduler_address)
    assert remote.read_bytes() == out.read_bytes()
    # and the plot and table render
    shown = cli(path, "-o", out)
    assert shown.returncode == 0 and "Pareto front" in shown.stdout and "16 from an earlier run" in shown.stdout


def test_ctrl_c_writes_what_finished_and_a_rerun_resumes(tmp_path, project):
    # hundreds of points: the first finished chunk is on disk at once, and the interrupt lands before the end
    text = REAL.replace("batch = [1, 8]", "batch = [1, 2, 4, 8, 16, 32, 64]\nprompt_len = [128, 512, 2048]").replace(
        '"memory.bandwidth_gb_per_s" = [256, 1024]', '"memory.bandwidth_gb_per_s" = [256, 384, 512, 768, 1024]')
    path = write(tmp_path, text)
    n = load_sweep(path).n_points
    out = tmp_path / "r.csv"
    code = "import sys; from workbench.cli import app, sweep_cmd; sweep_cmd.register(app); sys.argv = ['asicbench', *sys.argv[1:]]; app()"
    proc = subprocess.Popen([sys.executable, "-c", code, "sweep", str(path), "-o", str(out), "--jobs", "2", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120

    def some_done() -> bool:
        try:
            return bool(json.loads(sidecar_path(out).read_text())["done"])
        except (OSError, ValueError):
            return False

    while not some_done() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    partial = read_results(out)
    done = len(partial)
    assert 0 < done < n
    assert not list(tmp_path.glob(".*.tmp"))
    again = cli(path, "-o", out, "--jobs", "2", "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["resumed"] == done and summary["evaluated"] == n - done
    rows = read_results(out)
    assert [int(r["point_id"]) for r in rows] == list(range(n))
    assert all(rows[int(r["point_id"])] == r for r in partial)  # finished rows kept as they were


def test_output_path_problems_fail_before_any_work(tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL))
    counted = Counted()
    with pytest.raises(WorkbenchError, match="does not exist"):
        run_sweep(sweep, tmp_path / "no" / "r.csv", jobs=1, evaluate=counted)
    with pytest.raises(WorkbenchError, match="directory"):
        run_sweep(sweep, tmp_path, jobs=1, evaluate=counted)
    with pytest.raises(WorkbenchError, match=".parquet"):
        run_sweep(sweep, tmp_path / "r.parquet", jobs=1, evaluate=counted)
    assert counted.calls == 0


def test_chunks_follow_measured_cost():
    from workbench.sweep.run import CHUNK_TARGET_S, _Chunker

    chunker = _Chunker(list(range(10_000)), None)
    first = chunker.next()
    assert len(first) == 2
    chunker.record(2, 0.2)  # 0.1 s per point
    assert len(chunker.next()) == int(CHUNK_TARGET_S / 0.1)
    fixed = _Chunker(list(range(10)), 4)
    assert [len(c) for c in iter(fixed.next, None)] == [4, 4, 2]
