"""Render docs/report-g2.png: the report of a G2 fit (d=20, m=6, b = (0, 0, 1, -1, sqrt 3, -0.5), n=1e6, seed 0).

Usage::

    python benchmarks/g2_report.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import stream_relu as sr
from grid import _case
from stream_relu.report import render_report

OUT = Path(__file__).resolve().parents[1] / "docs" / "report-g2.png"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="stream-relu-g2-"))
    truth, n, noise, hidden = _case("G2", 0)
    store = str(workdir / "g2.zarr")
    sr.simulate_store(store, truth=truth, n_samples=n, noise=noise, seed=0, overwrite=True)
    result = sr.fit(store, n_hidden=hidden)
    result.model.save(workdir / "g2.json")
    render_report(result.model, OUT, truth=truth)
    print(f"wrote {OUT}; {sr.evaluate(result.model, truth)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
