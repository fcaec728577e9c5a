"""MkDocs hook: publish bench/results/suite.png as assets/suite.png.

The chart is written by bench/bench_suite.py beside its tables; serving it
from there keeps the site in step with the last run, with no copy in docs/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

CHART = Path(__file__).resolve().parents[2] / "bench" / "results" / "suite.png"


def on_files(files: Files, config: Any) -> Files:
    if CHART.is_file():
        files.append(File.generated(config, "assets/suite.png", abs_src_path=str(CHART)))
    return files
