"""numba's on-disk cache is dropped when the core's sources change (numba itself only checks each file's own
timestamp, so a cached executor would keep running old kernels)."""

from __future__ import annotations

from pathlib import Path

from workbench import jitcache


def _package(tmp_path: Path) -> Path:
    pkg = tmp_path / "workbench"
    for rel in ("machine/kernels.py", "machine/executor.py", "cost.py", "tui/app.py", "cli/run.py"):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(f"# {rel}\n")
    return pkg


def _cache_files(pkg: Path) -> list[Path]:
    files = [pkg / "machine/__pycache__/executor.run-213.py311.nbi", pkg / "machine/__pycache__/executor.run-213.py311.1.nbc"]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"compiled")
    return files


def test_digest_follows_the_core_not_the_faces(tmp_path):
    pkg = _package(tmp_path)
    d0 = jitcache.sources_digest(pkg)
    (pkg / "tui/app.py").write_text("# edited\n")
    (pkg / "cli/run.py").write_text("# edited\n")
    assert jitcache.sources_digest(pkg) == d0
    (pkg / "machine/kernels.py").write_text("# a kernel changed\n")
    assert jitcache.sources_digest(pkg) != d0


def test_a_changed_digest_drops_the_cache_once(tmp_path):
    pkg = _package(tmp_path)
    files = _cache_files(pkg)
    assert jitcache.refresh(pkg, "a" * 64) == 2
    assert not any(f.exists() for f in files)
    assert (pkg / jitcache.STAMP).read_text().strip() == "a" * 64
    files = _cache_files(pkg)                       # compiled again under the same sources: kept
    assert jitcache.refresh(pkg, "a" * 64) == 0
    assert all(f.exists() for f in files)
    assert jitcache.refresh(pkg, "b" * 64) == 2     # sources changed again


def test_a_shared_cache_dir_loses_only_this_package(tmp_path):
    shared = tmp_path / "numba-cache"
    ours = shared / "work" / "workbench" / "machine" / "executor.run-1.py311.nbi"
    theirs = shared / "other" / "lib" / "mod.f-1.py311.nbi"
    for f in (ours, theirs):
        f.parent.mkdir(parents=True)
        f.write_bytes(b"x")
    assert jitcache.refresh(shared, "c" * 64) == 1
    assert not ours.exists() and theirs.exists()
