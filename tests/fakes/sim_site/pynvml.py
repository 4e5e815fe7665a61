"""`import pynvml` in a subprocess of a test: the simulated host whose driver state is the JSON file named by
LLEM_GPU_SIM_STATE (tests/fakes/gpu_sim.py `host(..., state_file=...)`). Put tests/fakes/sim_site first on PYTHONPATH."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/fakes: gpu_sim

import gpu_sim  # noqa: E402

sys.modules["pynvml"] = gpu_sim.from_state(os.environ["LLEM_GPU_SIM_STATE"])
