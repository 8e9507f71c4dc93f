"""METEOR and SPICE through pycocoevalcap's Java jars, as an optional path with a clear "unavailable".

Both metrics are Java programs (METEOR 1.5 with its paraphrase tables; SPICE with a scene-graph parser
on Stanford CoreNLP 3.6.0) and have no pure-Python equivalent worth the name, so we call pycocoevalcap.
The call runs in a child Python process with a timeout: pycocoevalcap's METEOR wrapper blocks forever
on a pipe when the JVM dies, and its SPICE downloads CoreNLP at run time when the jars are missing --
we check for those jars first and never download.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

_SPICE_CORENLP = "stanford-corenlp-3.6.0"


def _pycocoevalcap_dir() -> Path | None:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def unavailable_reason(name: str) -> str | None:
    """Why METEOR/SPICE cannot run here, or None when they can."""
    if name not in ("meteor", "spice"):
        raise ValueError(f"{name!r} is not a Java caption metric (meteor, spice)")
    package = _pycocoevalcap_dir()
    if shutil.which("java") is None or package is None:
        return "needs java + pycocoevalcap"
    if name == "spice":
        lib = package / "spice" / "lib"
        if not (lib / f"{_SPICE_CORENLP}.jar").exists() or not (lib / f"{_SPICE_CORENLP}-models.jar").exists():
            return f"needs {_SPICE_CORENLP}.jar and -models.jar in {lib} (pycocoevalcap would download them; we never do)"
    return None


def java_metric(name: str, candidates: Sequence[str], references: Sequence[Sequence[str]],
                timeout: float = 600.0) -> tuple[float, str | None]:
    """(corpus score, None) or (NaN, reason) for METEOR/SPICE on tokenised captions."""
    reason = unavailable_reason(name)
    if reason is not None:
        return math.nan, reason
    payload = json.dumps({"name": name, "cands": list(candidates), "refs": [list(r) for r in references]})
    try:
        done = subprocess.run([sys.executable, "-m", "vlp.metrics.caption_java"], input=payload, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return math.nan, f"pycocoevalcap {name} did not finish within {timeout:.0f} s"
    if done.returncode != 0:
        return math.nan, f"pycocoevalcap {name} failed: {done.stderr.strip().splitlines()[-1:] or 'no output'}"
    return float(json.loads(done.stdout.strip().splitlines()[-1])), None


def _child() -> None:
    """Runs in the child process: read {name, cands, refs} from stdin, print the corpus score."""
    request = json.load(sys.stdin)
    gts = {i: refs for i, refs in enumerate(request["refs"])}
    res = {i: [cand] for i, cand in enumerate(request["cands"])}
    if request["name"] == "meteor":
        from pycocoevalcap.meteor.meteor import Meteor

        score, _ = Meteor().compute_score(gts, res)
    else:
        from pycocoevalcap.spice.spice import Spice

        score, _ = Spice().compute_score(gts, res)
    print(json.dumps(float(score)))


if __name__ == "__main__":
    _child()
