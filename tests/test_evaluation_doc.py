"""docs/evaluation.md runs as written: its code blocks, in order, in an empty folder.

The machine running the tests is offline, so ``predict`` gets ``--model`` pointing at the authors'-format reference
checkpoint (the page's commands use the default ``dcasenet-v3``); everything else is the page's text.
"""

from __future__ import annotations

import contextlib
import re
import runpy
import shlex
import sys
from pathlib import Path

from dcasenet_hub.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "evaluation.md"


def _blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(bash|python)\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_evaluation_page_runs_as_written(tmp_path, monkeypatch, authors_checkpoint, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks()
    assert [kind for kind, _ in blocks].count("bash") == 2 and len(blocks) >= 5
    namespace: dict = {}
    for kind, code in blocks:
        if kind == "python":
            exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102  (the page's own code, as written)
            continue
        for line in code.splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            if words[0] == "python":
                with monkeypatch.context() as m:
                    m.setattr(sys, "argv", [str(ROOT / words[1]), *words[2:]])
                    runpy.run_path(str(ROOT / words[1]), run_name="__main__")
            else:
                assert words[0] == "dcasenet-hub", line
                args = words[1:] + (["--model", str(authors_checkpoint), "-q"] if words[1] == "predict" else [])
                with contextlib.suppress(SystemExit):
                    assert main(args) == 0, line
    out = capsys.readouterr().out
    assert "segment-based (1 s): F1" in out and "accuracy" in out and "mAP" in out
    assert "door knock, truck" in out and "--map YOURS=MODEL" in out  # the unknown-label message, printed
    assert (tmp_path / "pred" / "events_report.png").stat().st_size > 10_000
    assert (tmp_path / "pred" / "scenes_report.png").is_file()
    assert not (tmp_path / "pred" / "tags_report.png").exists()  # --no-plot
    report = namespace["report"]
    assert report.labels == ["knock"] and "recordings/alarm_beeps.flac" in report.files["no_annotation"]
    events = __import__("json").loads((tmp_path / "pred" / "events_report.json").read_text())
    assert events["files"]["scored"] == 6 and set(events["metrics"]["psds"]) == {"scenario1", "scenario2"}
