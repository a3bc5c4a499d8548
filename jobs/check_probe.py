"""The compute-node half of ``flame check``: run by Megatron's own interpreter
(``trainer.python``) at the start of the check job, on the node, with the job's environment,
before the Megatron run. Standard library only (flame is not installed in Megatron's
environment); it never fails the job: each check is a line of probe.json, ok or not and why.

Checks: the imports ``pretrain_gpt.py`` needs at start-up (torch, megatron.core,
megatron.training, which imports six through its BERT tokenizer and pydantic through
megatron.rl, core_v0.16.1 training.py:62-67; TransformerEngine for --transformer-impl
transformer_engine, core_v0.16.1's range >=2.9,<2.12 from pyproject.toml's dev extra), the
dataset helpers (rank 0 runs ``make`` at every start, initialize.py:187-192, whose Makefile
runs python3 -m pybind11, python3-config and a C++ compiler from PATH), the GPUs, the corpus's
.bin/.idx files, the data cache's and the checkpoint directory's write access (and its write
rate), and the tokenizer as the job loads it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


def _check(name, fn):
    try:
        ok, detail = fn()
    except Exception as err:  # noqa: BLE001 - every failure is a finding, never a crash
        ok, detail = False, f"{type(err).__name__}: {err}"
    return {"check": name, "ok": bool(ok), "detail": str(detail)}


def imports(megatron: str):
    """torch, megatron.core and megatron.training (pretrain_gpt.py's start-up imports)."""
    sys.path.insert(0, megatron)
    found = []
    for module in ("torch", "megatron.core", "megatron.training"):
        mod = importlib.import_module(module)
        found.append(f"{module} {getattr(mod, '__version__', '')}".strip())
    return True, ", ".join(found)


def transformer_engine():
    """TransformerEngine, in core_v0.16.1's tested range."""
    mod = importlib.import_module("transformer_engine")
    version = getattr(mod, "__version__", "?")
    parts = [int(p) for p in version.split(".")[:2] if p.isdigit()]
    inside = len(parts) == 2 and (2, 9) <= tuple(parts) < (2, 12)
    return True, f"{version}" + ("" if inside else " (core_v0.16.1 pins >=2.9,<2.12)")


def helpers(megatron: str):
    """The dataset helpers: built already, or buildable (pybind11 and a compiler)."""
    folder = os.path.join(megatron, "megatron/core/datasets")
    if any(f.startswith("helpers_cpp") for f in os.listdir(folder)):
        built = "built"
    else:
        built = "not built"
    cxx = os.environ.get("CXX", "g++")
    pybind = subprocess.run([sys.executable, "-m", "pybind11", "--includes"],
                            capture_output=True, text=True)
    config = shutil.which("python3-config")
    ok = pybind.returncode == 0 and shutil.which(cxx) is not None and config is not None
    return ok or built == "built", (f"{built}; pybind11 {'yes' if pybind.returncode == 0 else 'no'}"
                                    f", {cxx} {'yes' if shutil.which(cxx) else 'no'}"
                                    f", python3-config {config or 'no'}")


def gpus(wanted: int):
    """As many CUDA devices as ranks on the node."""
    if wanted == 0:
        return True, "not requested (cluster.request_gpus=false)"
    import torch
    count = torch.cuda.device_count()
    names = sorted({torch.cuda.get_device_name(i) for i in range(count)})
    return count >= wanted, f"{count} visible ({', '.join(names) or 'none'}), {wanted} wanted"


def data(prefixes: list[str]):
    """Each --data-path prefix's .bin and .idx, readable."""
    if not prefixes:
        return True, "mock data"
    missing = [p + ext for p in prefixes for ext in (".bin", ".idx")
               if not os.access(p + ext, os.R_OK)]
    size = sum(os.path.getsize(p + ".bin") for p in prefixes if os.path.exists(p + ".bin"))
    return not missing, (f"missing or unreadable: {', '.join(missing[:3])}" if missing else
                         f"{len(prefixes)} prefixes, {size / 1e9:.3g} GB of tokens")


def writable(folder: str, mb: int):
    """Create ``folder`` and write ``mb`` MB there (fsynced): access and rate."""
    os.makedirs(folder, exist_ok=True)
    block = os.urandom(1 << 20)
    fd, path = tempfile.mkstemp(dir=folder, prefix=".flame-check-")
    began = time.monotonic()
    try:
        with os.fdopen(fd, "wb") as out:
            for _ in range(mb):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
    finally:
        os.unlink(path)
    rate = mb / 1024 / max(time.monotonic() - began, 1e-6)
    return True, f"{folder}: wrote {mb} MB at {rate:.2f} GB/s"


def tokenizer(model: str):
    """The tokenizer as Megatron's HuggingFaceTokenizer loads it (transformers.AutoTokenizer)."""
    if not model:
        return True, "none (mock data or another tokenizer type)"
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    return True, (f"{model}: {len(tok)} ids, {tok('flame check')['input_ids'][:3]}"
                  + (" (offline, from HF_HUB_CACHE)" if offline else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--megatron", required=True)
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--data-path", nargs="*", default=[])
    p.add_argument("--data-cache", default="")
    p.add_argument("--checkpoints", required=True)
    p.add_argument("--write-mb", type=int, default=1024)
    p.add_argument("--tokenizer", default="")
    p.add_argument("--hub-cache", default="")
    a = p.parse_args(argv)
    if a.hub_cache:  # as launch.sh sets them
        os.environ["HF_HUB_CACHE"] = a.hub_cache
        folder = "models--" + a.tokenizer.replace("/", "--")
        if os.path.isdir(os.path.join(a.hub_cache, folder)):
            os.environ["HF_HUB_OFFLINE"] = "1"
    prefixes = [w for w in a.data_path if not _is_number(w)]
    results = [
        _check("imports", lambda: imports(a.megatron)),
        _check("transformer_engine", transformer_engine),
        _check("dataset helpers", lambda: helpers(a.megatron)),
        _check("GPUs", lambda: gpus(a.gpus)),
        _check("data", lambda: data(prefixes)),
        _check("data cache", lambda: writable(a.data_cache, 1) if a.data_cache else
               (True, "none (mock data)")),
        _check("checkpoint write", lambda: writable(a.checkpoints, a.write_mb)),
        _check("tokenizer", lambda: tokenizer(a.tokenizer)),
    ]
    record = {"host": os.uname().nodename, "python": sys.executable, "checks": results,
              "time": time.time()}
    tmp = a.out + ".tmp"
    with open(tmp, "w") as out:
        json.dump(record, out, indent=1)
    os.replace(tmp, a.out)
    return 0


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
