"""Peak memory of a Mask R-CNN benchmark variant's inference and training step.

CPU: a fresh child process per variant (``python -m gn_detection.benchmark.memory``)
builds the model, runs one inference and then one training step, and reads the
kernel's peak resident set size (VmHWM, as getrusage's ru_maxrss) after each: the
inference peak is exact, the training peak is the whole child's (the larger step).
"before" is the resident size just before the inference (interpreter, libraries,
model, batch). In one process the peak would be the largest of every variant's.

CUDA: in this process, torch.cuda.max_memory_allocated over each step after a reset
of the peak statistics; "before" is the memory allocated when the step starts.
"""

import json
import os
import subprocess
import sys

import torch

from gn_detection.benchmark import host

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_peak_in_child(settings: dict) -> dict:
    """{"before", "infer_peak", "train_peak"} in bytes for settings["variant"], measured
    by a child process with settings["allocator"] (its own allocator setting only:
    the environment's glibc overrides are removed)."""
    env = host.environment_without_allocator_overrides()
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    done = subprocess.run([sys.executable, "-m", "gn_detection.benchmark.memory", json.dumps(settings)], env=env,
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("MEMORY ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"memory child of {settings['variant']} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1][len("MEMORY "):])


def cuda_peaks(runner) -> dict:
    """{"before", "infer_peak", "train_peak"} in bytes of one Runner on a CUDA device."""
    result = {}
    for mode, step in (("infer", runner.inference), ("train", runner.train_step)):
        torch.cuda.synchronize(runner.device)
        torch.cuda.reset_peak_memory_stats(runner.device)
        result.setdefault("before", torch.cuda.memory_allocated(runner.device))
        step()
        result[f"{mode}_peak"] = torch.cuda.max_memory_allocated(runner.device)
    return result


def _child(settings: dict) -> dict:
    from gn_detection.benchmark.model import Runner, build_variants, prepare
    from gn_detection.data.synthetic import random_batch

    host.apply_allocator(settings["allocator"])
    torch.set_num_threads(settings["threads"])
    models = build_variants([settings["variant"]], "cpu", settings["rois"], settings["seed"])
    batch = random_batch(settings["images"], settings["height"], settings["width"], settings["instances"],
                         seed=settings["seed"])
    prepare(models, batch)
    runner = Runner(models[settings["variant"]], batch, settings["seed"])
    before = host.process_status_bytes("VmRSS")
    runner.inference()
    infer_peak = host.process_status_bytes("VmHWM")
    runner.train_step()
    return {"before": before, "infer_peak": infer_peak, "train_peak": host.process_status_bytes("VmHWM")}


if __name__ == "__main__":
    print("MEMORY " + json.dumps(_child(json.loads(sys.argv[1]))), flush=True)
