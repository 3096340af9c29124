"""Every shipped session replays byte for byte the same, and matches its golden summary in tests/golden/.

Each session is replayed twice in fresh interpreters, with 1 and 2 numba threads: the ``--json`` outputs
must be identical bytes. A summary of the run (tokens, text, counters at each mark and per segment, the
model file's sha256) is compared with tests/golden/<session>.json. Regenerate the goldens only on purpose:

    ASICBENCH_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.atomic import atomic_write_text
from workbench.data import resolve
from workbench.errors import WorkbenchError
from workbench.model.load import MODEL_SUFFIXES
from workbench.session import load_session

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
SESSIONS = sorted((ROOT / "sessions").glob("*.toml"))
REGEN = os.environ.get("ASICBENCH_REGEN_GOLDEN") == "1"
REGEN_HINT = "ASICBENCH_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py"
FLOAT_REL = 1e-9  # floats are sums of the same integer counts times pJ constants; allow only the last bits


def _model_files(session: Path) -> list[Path]:
    """The model files a session loads (its model and every ``model`` step); skip when one is absent."""
    spec = load_session(session)
    names = [spec.options.model] + [st.value for st in spec.steps if st.name == "model"]
    files = []
    for name in dict.fromkeys(names):
        try:
            files.append(resolve("models", name, MODEL_SUFFIXES, base=spec.base))
        except WorkbenchError as exc:
            pytest.skip(f"{session.name} needs a model that is absent ({exc})")
    return files


def _replay_json(session: Path, threads: str) -> bytes:
    res = subprocess.run([sys.executable, "-c", "from workbench.cli import main; main()", "replay", str(session),
                          "--json"], capture_output=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": threads})
    assert res.returncode in (0, 1), res.stderr.decode(errors="replace")  # 1 = an expectation failed: still a result
    return res.stdout


def summary(doc: dict, models: list[Path]) -> dict:
    """What a golden keeps of a replay's --json: tokens, text, counters at each mark and per segment."""
    return {
        "session": doc["session"],
        "models": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in models},
        "ok": doc["ok"],
        "final": {"tokens": doc["final"]["tokens"], "text": doc["final"]["text"], "pos": doc["final"]["pos"],
                  "counters": doc["final"]["counters"]},
        "marks": doc["marks"],
        "segments": [{"chip": s["chip"], "mapping": s["mapping"], "tokens": s["tokens"], "text": s["text"],
                      "counters": s["counters"]} for s in doc["segments"]],
    }


def _diff(expected, found, where: str = "") -> list[str]:
    """Paths where two summaries differ: exact for ints, strings and structure; relative 1e-9 for floats."""
    if isinstance(expected, dict) and isinstance(found, dict):
        out = [f"{where}.{k}: missing" for k in expected if k not in found]
        out += [f"{where}.{k}: unexpected" for k in found if k not in expected]
        for k in expected.keys() & found.keys():
            out += _diff(expected[k], found[k], f"{where}.{k}")
        return out
    if isinstance(expected, list) and isinstance(found, list):
        if len(expected) != len(found):
            return [f"{where}: {len(expected)} items expected, {len(found)} found"]
        return [d for i, (a, b) in enumerate(zip(expected, found)) for d in _diff(a, b, f"{where}[{i}]")]
    if isinstance(expected, float) or isinstance(found, float):
        if isinstance(expected, (int, float)) and isinstance(found, (int, float)) and not isinstance(found, bool) \
                and math.isclose(expected, found, rel_tol=FLOAT_REL, abs_tol=1e-300):
            return []
    elif expected == found and type(expected) is type(found):
        return []
    return [f"{where}: expected {expected!r}, found {found!r}"[:300]]


def test_sessions_are_found():
    assert len(SESSIONS) >= 5, SESSIONS


@pytest.mark.parametrize("session", SESSIONS, ids=[p.stem for p in SESSIONS])
def test_session_replays_identically_and_matches_golden(session):
    models = _model_files(session)
    first = _replay_json(session, "1")
    second = _replay_json(session, "2")
    assert first, "replay printed no JSON"
    assert first == second, "two replays (1 and 2 numba threads) gave different --json bytes"
    found = summary(json.loads(first), models)
    path = GOLDEN / f"{session.stem}.json"
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        atomic_write_text(path, json.dumps(found, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        return
    if not path.is_file():
        pytest.fail(f"no golden for {session.name}: create it with {REGEN_HINT}")
    expected = json.loads(path.read_text(encoding="utf-8"))
    if expected.get("models") != found["models"]:
        pytest.fail(f"{session.name}: the model file(s) changed since the golden was made "
                    f"({expected.get('models')} -> {found['models']}); check the new output, then {REGEN_HINT}")
    differences = _diff(expected, found)
    assert not differences, f"{session.name} differs from its golden ({len(differences)}):\n" + "\n".join(differences[:20])


def test_diff_catches_a_changed_token_and_a_drifted_float():
    base = {"tokens": [[1, 2, 3]], "energy_pj": 10.0, "text": "a"}
    assert _diff(base, base) == []
    assert _diff(base, {**base, "energy_pj": 10.0 * (1 + 1e-12)}) == []
    assert _diff(base, {**base, "tokens": [[1, 2, 4]]}) == [".tokens[0][2]: expected 3, found 4"]
    assert _diff(base, {**base, "energy_pj": 10.001})
    assert _diff(base, {**base, "text": "b"})
    assert _diff(base, {"tokens": [[1, 2, 3]], "energy_pj": 10.0})
