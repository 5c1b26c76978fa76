"""The benchmark harness's own tests: its stage timer (exact, on a fake clock) and a smoke run of
``python -m benchmarks.run --smoke`` checking what it writes (not how fast anything is)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import _stages
from benchmarks._stages import StageTimer, instrument
from dcasenet_hub.models.fast import FP32_TOLERANCE

ROOT = Path(__file__).resolve().parent.parent


def test_stage_timer_charges_exclusive_time_and_restores_functions(monkeypatch):
    import dcasenet_hub.audio as fe

    clock = [100.0]  # a fake clock: exact, whatever the machine's load
    monkeypatch.setattr(_stages.time, "perf_counter", lambda: clock[0])

    def work(seconds: float) -> None:
        clock[0] += seconds

    timer = StageTimer()

    def inner() -> None:
        work(0.25)

    def outer() -> None:
        work(0.5)
        timed_inner()
        work(0.125)

    timed_inner = timer.wrap(inner, "features")
    timer.wrap(outer, "decode")()
    # the outer stage is charged only its own time, not the nested stage's
    assert timer.seconds["decode"] == 0.625 and timer.seconds["features"] == 0.25
    assert timer.calls["decode"] == 1 and timer.calls["features"] == 1
    monkeypatch.undo()

    original = fe.resample
    with instrument(StageTimer()):
        assert fe.resample is not original
    assert fe.resample is original


@pytest.mark.integration
def test_benchmark_smoke_runs_and_checks_outputs(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert "Model-only throughput" in proc.stdout and str(out) in proc.stdout
    variants = {r["variant"]: r for r in res["model"]}
    assert {"naive", "one pass", "fast"} <= set(variants)
    assert variants["fast"]["max_abs_diff_vs_naive"] <= FP32_TOLERANCE
    assert variants["fast"]["flops_batch1"] > 1e9  # v3, 2 s: about 4.8 GFLOP
    assert 2 * variants["fast"]["flops_batch1"] < variants["naive"]["flops_batch1"]  # three passes vs one
    assert res["e2e"]["outputs_written"] == res["e2e"]["files"] == 2
    assert set(res["e2e"]["stage_seconds"]) == {"load", "decode", "resample", "features", "network", "writes"}
    assert res["e2e"]["stage_seconds"]["network"] > 0 and res["e2e"]["stage_seconds"]["decode"] > 0
    # the end-to-end ratio is taken pair by pair (each run with the model-only run right after it)
    (pair,) = res["e2e"]["pairs"]
    assert res["e2e"]["e2e_over_model_only_fast"] == pair["ratio"] == pair["e2e"] / pair["fast"]
    assert res["startup"]["import dcasenet_hub"]["peak_rss_mib"] < 200  # torch not imported
    assert res["long"][0]["peak_rss_mib"] > res["startup"]["import dcasenet_hub"]["peak_rss_mib"]
    # the long-file memory is recorded per dtype and backend (the goal: < 1 GB in every one of them)
    assert {(r["dtype"], r["backend"]) for r in res["long"]} >= {("fp32", "torch"), ("bf16", "torch")}
    assert all(r["peak_rss_mib"] > 0 and isinstance(r["under_rss_goal"], bool) for r in res["long"])
    assert "| bf16 | torch |" in proc.stdout


def _top_level_names(path: Path) -> set[str]:
    """Names a module file defines or imports at its top level (read, not imported: test modules have fixtures)."""
    import ast

    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def test_every_benchmark_imports_names_that_exist():
    """The benchmark scripts run by hand, not in CI, and import from the package and from the test modules inside
    their functions: a renamed or moved name breaks them silently (``from conftest import responsive_model`` after
    the helpers moved to tests/helpers.py). Every ``from M import name`` of the package, the benchmarks or a module of
    tests/, at any depth, must name something M has."""
    import ast
    import importlib

    test_modules = {p.stem: p for p in (ROOT / "tests").glob("*.py")}
    checked = 0
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text(), filename=str(script))):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                continue
            if node.module in test_modules:
                have = _top_level_names(test_modules[node.module])
                missing = [a.name for a in node.names if a.name not in have]
            elif node.module.split(".")[0] in ("dcasenet_hub", "benchmarks"):
                module = importlib.import_module(node.module)
                missing = [a.name for a in node.names if not hasattr(module, a.name)
                           and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
            else:
                continue
            assert not missing, f"{script.name}:{node.lineno}: {node.module} has no {', '.join(missing)}"
            checked += len(node.names)
    assert checked > 20  # the scripts do import from the package: the check is not vacuous
