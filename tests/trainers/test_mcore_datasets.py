"""megatron-core's dataset modules load without its package ``__init__``, and the package is
whole again the moment anything asks it for more (``trainers.mcore_datasets``)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version

PROBE = """
import json, sys
from trainers.mcore_datasets import datasets_package
datasets_package()
from megatron.core.datasets.gpt_dataset import GPTDataset
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
light = "megatron.core.tensor_parallel" in sys.modules
import megatron.core as mc
version = mc.__version__                     # not a submodule: runs the real __init__
from megatron.core import ModelParallelConfig, mpu, parallel_state
print(json.dumps({"stack_before": light, "version": version,
                  "stack_after": "megatron.core.tensor_parallel" in sys.modules,
                  "mpu": mpu is parallel_state, "config": ModelParallelConfig.__name__}))
"""


def test_datasets_skip_the_stack_and_the_package_completes_on_demand() -> None:
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", PROBE], capture_output=True,
                         text=True, check=True)
    got = json.loads(out.stdout.splitlines()[-1])
    assert got == {"stack_before": False, "version": version("megatron-core"), "stack_after": True,
                   "mpu": True, "config": "ModelParallelConfig"}
