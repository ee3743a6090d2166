#!/usr/bin/env python
"""Speed and memory of R50-FPN Mask R-CNN with our GN, detectron2's GN and BN*, on the CPU.

    python tools/benchmark_model.py [--quick] [--images 2] [--height 384] [--width 512] [--threads 2]
                                    [--reps 3] [--warmup-rounds 6] [--profile-steps 3] [--rois 512]
                                    [--allocator tuned|default] [--memory-allocator tuned|default] [--json FILE]

Three models, built and timed side by side in one process on the same batch:

  (a) gn_ours   configs/table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml: GN everywhere (ResNet, FPN,
                4conv1fc box head, mask head) with gn_detection's op (MODEL.GN.IMPL "custom") and
                the ReLU fused into GN (MODEL.GN.FUSE_RELU True).
  (b) gn_d2     detectron2's own Misc/mask_rcnn_R_50_FPN_3x_gn.yaml (from
                detectron2.model_zoo.get_config_file; no weights are downloaded): the same model
                with torch.nn.GroupNorm and separate ReLUs. (a) loads (b)'s weights, so both
                make the same proposals and sample the same RoIs.
  (c) bn_frozen configs/table5_fpn_heads/mask_rcnn_R_50_FPN_bn_frozen_4conv1fc.yaml: BN*
                (FrozenBatchNorm2d) ResNet, FPN without norm, the same 4conv1fc box head and
                4-conv mask head without norm (the GN-free twin of (a) and (b)).

All weights are random (seeded); all three use the same pixel mean/std, RPN settings, RoI
budget and test settings (listed in the output). Timed per variant:

  train step  model.zero_grad(); losses = model(batch) inside EventStorage; sum(losses).backward();
              SGD(momentum 0.9, weight decay 1e-4, lr 0).step() -- lr 0 keeps the weights, so
              every repetition makes the same proposals and samples the same RoIs (the RNG is
              reseeded before every step and every inference).
  inference   model.eval() under torch.no_grad() on the same images. Random weights score every
              class near 1/81, under SCORE_THRESH_TEST (0.05): no detection, no mask head. So every
              variant's class-0 logit bias is set to 10, and every image keeps
              DETECTIONS_PER_IMAGE (100) detections, as with a trained model.

The BN* model's FrozenBatchNorm2d statistics are set from one no-grad backbone pass over the
batch (identity statistics, the random-init default, let a random ResNet's activations grow
block after block: losses in the hundreds, degenerate proposals, few RoIs, far less work).

Allocator (--allocator): "tuned" (the default, as in tools/benchmark_gn.py) calls
mallopt(M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1) at start, so freed memory is reused and the
ops, not the kernel's page faults, are timed; "default" leaves glibc as a plain process has
it: every allocation over 32 MB is a fresh mmap whose pages fault on first touch, in every
step, inside whichever op writes them first.

Warm-up rounds (a training step and an inference per variant) repeat until a whole round
makes under 4 MiB of page faults (at most --warmup-rounds): until then the heap is still
growing to the step's peak, and the first touch of every new page (the kernel zeroing it)
lands in whichever op allocated it, at 3-6 GB/s. With the default allocator the faults never
stop, so the warm-up ends as soon as a round makes no fewer of them than the round before.
Repetitions are then interleaved (the variant order rotates and reverses from one repetition
to the next); medians over repetitions and the median of the per-repetition ratios are
reported. Then --profile-steps more training
steps (and inferences) per variant run under torch.profiler, interleaved, after one
unrecorded profiled step each (the profiler's own allocations grow the heap again); each
step's ops are grouped by name into convolution, GN, ReLU, BN* and the rest, counting each op
once (an op nested in another of the same group is not counted again), and each group's
median over the profiled steps is reported as a share of the median profiled wall time,
with the page faults made during the profiled steps.

The profile also runs (a) with elementwise stand-ins for its GN ops ("gn_floor", profiled
only): each GN forward becomes relu(x) or a copy of x, each GN backward add(x, dy), the
bytes the op moves on the same tensors in the same cache state, at the speed of PyTorch's
own elementwise ops (the outputs of a recorded real step are put in place outside the timed
ranges, so the proposals, RoIs and all other work stay (a)'s). Its share ratio against (b)
is the best any GN kernel that moves those bytes at elementwise speed would reach: what the
normalization+activation target asks of a GN kernel on this machine. A last table splits
the GN and ReLU time of (a), (b) and the stand-ins by tensor shape.
FrozenBatchNorm2d has no op of its own in training (it runs x * scale + bias, or
aten::batch_norm where no gradient is needed): its forward is labelled by a record_function
range and its backward ops are matched to the forward ops by autograd sequence number.

Peak memory: each variant runs again in a fresh child process of this script (--variant),
with --memory-allocator (default: the same as --allocator), which builds the model, runs one
inference and then one training step and reads the kernel's peak resident set size (VmHWM, the same as
getrusage's ru_maxrss) after each. The inference peak is exact; the training peak is the
peak of the whole child (the training step is the larger one). "above model" subtracts the
resident size just before the first inference (interpreter, libraries, model, batch).
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import torch

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
sys.path.insert(0, REPO)
import benchmark_gn as gnbench  # noqa: E402  (allocator tuning, CPU name and load reporting)

from detectron2 import model_zoo  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import FrozenBatchNorm2d  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import BitMasks, Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

import gn_detection  # noqa: E402
from gn_detection import GroupNorm  # noqa: E402

VARIANTS = {
    "gn_ours": {
        "label": "(a) our GN (custom op, fused ReLU)",
        "source": "configs/table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml",
        "opts": ["MODEL.GN.IMPL", "custom", "MODEL.GN.FUSE_RELU", True],
    },
    "gn_d2": {
        "label": "(b) detectron2 GN (nn.GroupNorm)",
        "source": "detectron2 model zoo: Misc/mask_rcnn_R_50_FPN_3x_gn.yaml",
        "opts": [],
    },
    "bn_frozen": {
        "label": "(c) BN* (FrozenBatchNorm2d)",
        "source": "configs/table5_fpn_heads/mask_rcnn_R_50_FPN_bn_frozen_4conv1fc.yaml",
        "opts": [],
    },
}
# Built in this order: gn_ours copies gn_d2's weights.
BUILD_ORDER = ["gn_d2", "gn_ours", "bn_frozen"]
# Detectron's BGR pixel mean (configs/Base-GN-RCNN-FPN.yaml), for all three.
PIXEL_MEAN = [102.9801, 115.9465, 122.7717]
PIXEL_STD = [1.0, 1.0, 1.0]

# Op groups of the profile. An event counts for its group unless an enclosing event
# already counts for the same group, or is a stand-in range (its ops stand for a GN op).
FROZEN_BN_RANGE = "benchmark::FrozenBatchNorm2d"
FLOOR_FORWARD_RANGE = "benchmark::gn_floor_forward"
FLOOR_BACKWARD_RANGE = "benchmark::gn_floor_backward"
GROUPS = {
    "gn_ours": ("gn_detection::group_norm_forward", "gn_detection::group_norm_backward"),
    "gn_floor": (FLOOR_FORWARD_RANGE, FLOOR_BACKWARD_RANGE),
    "gn_torch": ("aten::native_group_norm", "aten::native_group_norm_backward"),
    "relu": ("aten::relu", "aten::relu_", "aten::threshold_backward"),
    "bn": ("aten::batch_norm", "aten::native_batch_norm_backward", FROZEN_BN_RANGE),
    "conv": ("aten::convolution", "aten::convolution_backward"),
    "roi_align": ("torchvision::roi_align", "torchvision::_roi_align_backward"),
    "linear": ("aten::linear", "aten::addmm", "aten::mm"),
}
BACKWARD_NAMES = {"gn_detection::group_norm_backward", "aten::native_group_norm_backward",
                  "aten::threshold_backward", "aten::native_batch_norm_backward", "aten::convolution_backward",
                  "torchvision::_roi_align_backward", FLOOR_BACKWARD_RANGE}
NORM_ACT_GROUPS = ("gn_ours", "gn_floor", "gn_torch", "relu", "bn")
QUIET_LOAD = 0.1  # cores kept busy by other processes during a sample, to call it quiet
SETTLED_FAULT_BYTES = 4 << 20  # page faults of a warm-up round under which the heap has stopped growing


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 timed step and inference per variant after warm-up, 128 RoIs/img unless --rois")
    parser.add_argument("--images", type=int, default=2, help="images per batch (default 2)")
    parser.add_argument("--height", type=int, default=384, help="image height (default 384)")
    parser.add_argument("--width", type=int, default=512, help="image width (default 512)")
    parser.add_argument("--instances", type=int, default=6, help="ground-truth instances per image (default 6)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 3, quick 1)")
    parser.add_argument("--warmup-rounds", type=int, default=6,
                        help="at most this many warm-up rounds, until one makes no page faults (default 6)")
    parser.add_argument("--profile-steps", type=int, default=None,
                        help="profiled train steps and inferences per variant (default 3, quick 1)")
    parser.add_argument("--rois", type=int, default=None,
                        help="MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE (default 512 = detectron2's, quick 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-idle", type=float, default=30.0, metavar="SECONDS",
                        help="before each timed sample, wait up to this long for other processes to use "
                             "< 0.3 cores (default 30; 0 = never wait)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of "
                        + ", ".join(VARIANTS))
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler step")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--allocator", choices=["tuned", "default"], default="tuned",
                        help="glibc malloc setting of this process (default tuned; see above)")
    parser.add_argument("--memory-allocator", choices=["tuned", "default"], default=None,
                        help="allocator of the peak-memory children (default: the same as --allocator)")
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)  # memory child
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.rois is None:
        args.rois = 128 if args.quick else 512
    if args.profile_steps is None:
        args.profile_steps = 1 if args.quick else 3
    if args.memory_allocator is None:
        args.memory_allocator = args.allocator
    if args.reps < 1 or args.warmup_rounds < 1 or args.profile_steps < 1:
        parser.error("--reps, --warmup-rounds and --profile-steps must be at least 1")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if "gn_ours" in args.variants and "gn_d2" not in args.variants:
        args.variants.append("gn_d2")  # (a) takes (b)'s weights
    args.variants = [v for v in VARIANTS if v in args.variants]
    return args


# ----------------------------------------------------------------------------- configs and models


def common_settings(args):
    """Overrides applied to every variant, as (key, value) pairs."""
    return [
        ("MODEL.DEVICE", "cpu"),
        ("MODEL.WEIGHTS", ""),
        ("MODEL.PIXEL_MEAN", PIXEL_MEAN),
        ("MODEL.PIXEL_STD", PIXEL_STD),
        ("MODEL.RPN.PRE_NMS_TOPK_TRAIN", 2000),
        ("MODEL.RPN.POST_NMS_TOPK_TRAIN", 1000),
        ("MODEL.RPN.PRE_NMS_TOPK_TEST", 1000),
        ("MODEL.RPN.POST_NMS_TOPK_TEST", 1000),
        ("MODEL.RPN.BATCH_SIZE_PER_IMAGE", 256),
        ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", args.rois),
        ("MODEL.ROI_HEADS.POSITIVE_FRACTION", 0.25),
        ("MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", True),
        ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.05),
        ("MODEL.ROI_HEADS.NMS_THRESH_TEST", 0.5),
        ("TEST.DETECTIONS_PER_IMAGE", 100),
    ]


def variant_config(name, args):
    variant = VARIANTS[name]
    if name == "gn_d2":
        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file("Misc/mask_rcnn_R_50_FPN_3x_gn.yaml"))
    else:
        cfg = gn_detection.add_gn_config(get_cfg())
        cfg.merge_from_file(os.path.join(REPO, variant["source"]))
    cfg.merge_from_list(list(variant["opts"]))
    for key, value in common_settings(args):
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = getattr(node, part)
        setattr(node, leaf, value)
    cfg.freeze()
    return cfg


def describe_config(cfg):
    m = cfg.MODEL
    text = (f"backbone {m.BACKBONE.NAME} (RESNETS.NORM {m.RESNETS.NORM!r}, STRIDE_IN_1X1 {m.RESNETS.STRIDE_IN_1X1}, "
            f"FREEZE_AT {m.BACKBONE.FREEZE_AT}), FPN.NORM {m.FPN.NORM!r}; box head {m.ROI_BOX_HEAD.NAME} "
            f"{m.ROI_BOX_HEAD.NUM_CONV}conv{m.ROI_BOX_HEAD.NUM_FC}fc NORM {m.ROI_BOX_HEAD.NORM!r}; "
            f"mask head {m.ROI_MASK_HEAD.NAME} NORM {m.ROI_MASK_HEAD.NORM!r}")
    if "GN" in m:
        text += f"; MODEL.GN.IMPL {m.GN.IMPL!r}, FUSE_RELU {m.GN.FUSE_RELU}"
    return text


def count_norms(model):
    ours = [m for m in model.modules() if isinstance(m, GroupNorm)]
    return {
        "gn_detection.GroupNorm": len(ours),
        "  of which with fused ReLU": sum(m.activation == "relu" for m in ours),
        "torch.nn.GroupNorm (not ours)": sum(isinstance(m, torch.nn.GroupNorm) and not isinstance(m, GroupNorm)
                                             for m in model.modules()),
        "FrozenBatchNorm2d": sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules()),
    }


def build_variants(names, args):
    """{name: model}; gn_ours gets gn_d2's weights (every key must match)."""
    models = {}
    for name in BUILD_ORDER:
        if name not in names:
            continue
        torch.manual_seed(args.seed)
        model = build_model(variant_config(name, args))
        if name == "gn_ours":
            result = model.load_state_dict(models["gn_d2"].state_dict())
            if result.missing_keys or result.unexpected_keys:
                raise SystemExit(f"gn_ours cannot load gn_d2's weights: {result}")
        models[name] = model
    return {name: models[name] for name in names}


def calibrate_frozen_bn(model, batch):
    """Sets every FrozenBatchNorm2d's statistics to those of its input on `batch`
    (one no-grad backbone pass, layer by layer), as a pretrained BN* model's would
    roughly be. With its initial identity statistics a random BN* ResNet's
    activations grow block after block (losses in the hundreds, degenerate
    proposals, few RoIs), which would make it do less work than the GN models."""
    def set_statistics(module, inputs):
        x = inputs[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)).clamp_min(1e-4) - module.eps)

    modules = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    handles = [m.register_forward_pre_hook(set_statistics) for m in modules]
    try:
        with torch.no_grad():
            model.backbone(model.preprocess_image(batch).tensor)
    finally:
        for handle in handles:
            handle.remove()
    return len(modules)


def confident_class_scores(model):
    """Sets the box predictor's class-0 logit bias to 10, so that every proposal
    scores about 1 for class 0 and inference keeps TEST.DETECTIONS_PER_IMAGE
    detections per image after NMS, as a trained model would (random weights score
    every class near 1/81, under SCORE_THRESH_TEST 0.05: no detections, no mask
    head). Training work is unchanged."""
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.zero_()
        model.roi_heads.box_predictor.cls_score.bias[0] = 10.0


def prepare_models(models, batch):
    """The same adjustments for every variant (see the two functions above)."""
    calibrated = {}
    for name, model in models.items():
        calibrated[name] = calibrate_frozen_bn(model, batch)
        confident_class_scores(model)
    return calibrated


def make_batch(args):
    """`images` random BGR images (uint8, CHW) with box-shaped instance masks."""
    generator = torch.Generator().manual_seed(args.seed)
    height, width = args.height, args.width
    batch = []
    for _ in range(args.images):
        image = torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)
        count = args.instances
        corners = torch.rand(count, 2, generator=generator) * torch.tensor([width * 0.7, height * 0.7])
        sizes = 16 + torch.rand(count, 2, generator=generator) * torch.tensor([width * 0.3, height * 0.3])
        boxes = torch.cat([corners, torch.minimum(corners + sizes, torch.tensor([width, height]) - 1.0)], dim=1)
        masks = torch.zeros(count, height, width, dtype=torch.bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
            masks[k, y0:y1, x0:x1] = True
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(boxes)
        instances.gt_classes = torch.randint(0, 80, (count,), generator=generator)
        instances.gt_masks = BitMasks(masks)
        batch.append({"image": image, "instances": instances, "height": height, "width": width})
    return batch


# ----------------------------------------------------------------------------- steps


class Runner:
    """Training step and inference of one model on one batch, with fixed seeds."""

    def __init__(self, model, batch, seed):
        self.model = model
        self.batch = batch
        self.test_batch = [{k: v for k, v in item.items() if k != "instances"} for item in batch]
        self.seed = seed
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=0.0, momentum=0.9, weight_decay=1e-4)
        self.last_losses = None
        self.last_storage = {}
        self.last_detections = None

    def train_step(self):
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        torch.manual_seed(self.seed)
        with EventStorage() as storage:
            losses = self.model(self.batch)
            total = sum(losses.values())
            total.backward()
            self.optimizer.step()
        self.last_losses = {k: float(v) for k, v in losses.items()}
        self.last_storage = {k: v[0] for k, v in storage.latest().items()}

    def inference(self):
        self.model.eval()
        torch.manual_seed(self.seed)
        with torch.no_grad():
            outputs = self.model(self.test_batch)
        self.last_detections = [len(o["instances"]) for o in outputs]


class ElementwiseFloor(torch.autograd.Function):
    """Stands in for one GN op of (a) (see FloorRunner). Forward: relu(x), or a copy of x,
    which reads x and writes an output as the op does; the op's recorded output is then
    copied into it, outside the timed range. Backward: add(x, grad), which reads x and the
    gradient and writes the input's gradient as the op's backward does (the affine
    parameters' gradients are zeros: per-channel sums that move no tensor-sized bytes)."""

    @staticmethod
    def forward(ctx, x, weight, bias, relu, recorded):
        ctx.save_for_backward(x, weight, bias)
        with torch.profiler.record_function(FLOOR_FORWARD_RANGE):
            output = torch.relu(x) if relu else x.clone()
        return output.copy_(recorded)

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias = ctx.saved_tensors
        with torch.profiler.record_function(FLOOR_BACKWARD_RANGE):
            grad_input = torch.add(x, grad)
        zeros = lambda p: None if p is None else torch.zeros_like(p)  # noqa: E731
        return grad_input, zeros(weight), zeros(bias), None, None


class FloorRunner(Runner):
    """(a), profiled with each of its GN ops replaced by ElementwiseFloor: the bytes every
    GN op moves, at the speed of PyTorch's own elementwise ops, on the tensors of the same
    step in the same cache state. The first step of each mode runs the real op and records
    every GN output; later steps put those outputs in place, so proposals, RoIs and all the
    other work are (a)'s own. Used by the profile only."""

    def __init__(self, model, batch, seed):
        super().__init__(model, batch, seed)
        self.norms = [m for m in model.modules() if isinstance(m, GroupNorm)]
        self.recorded = {}

    @contextlib.contextmanager
    def recording(self, mode):
        outputs = self.recorded.setdefault(mode, [])
        hooks = [m.register_forward_hook(lambda module, inputs, output: outputs.append(output.detach().clone()))
                 for m in self.norms]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    @contextlib.contextmanager
    def standing_in(self, mode):
        outputs = iter(self.recorded[mode])

        def stand_in(module):
            def forward(x):
                recorded = next(outputs, None)
                if recorded is None or recorded.shape != x.shape:
                    raise RuntimeError(f"gn_floor: the {mode} step's GN calls differ from the recorded step's")
                return ElementwiseFloor.apply(x, module.weight, module.bias, module.activation == "relu", recorded)
            return forward

        for module in self.norms:
            module.forward = stand_in(module)
        try:
            yield
        finally:
            for module in self.norms:
                del module.forward
        if next(outputs, None) is not None:
            raise RuntimeError(f"gn_floor: the {mode} step made fewer GN calls than the recorded step")

    def floor(self, mode):
        return self.standing_in(mode) if mode in self.recorded else self.recording(mode)

    def train_step(self):
        with self.floor("train"):
            super().train_step()

    def inference(self):
        with self.floor("infer"):
            super().inference()


def wait_until_quiet(max_wait, threshold=0.3):
    """Waits (up to `max_wait` seconds) until other processes keep fewer than
    `threshold` cores busy over a 1 s window; returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < max_wait:
        before = gnbench.cpu_snapshot()
        time.sleep(1.0)
        if gnbench.other_load(before, gnbench.cpu_snapshot()) < threshold:
            break
    return time.monotonic() - start


def warm_up(runners, max_rounds, faults_persist=False):
    """Rounds of one training step and one inference per variant until a round makes
    under SETTLED_FAULT_BYTES of page faults, or, when `faults_persist` (glibc's default
    allocator maps large outputs afresh in every step), no fewer than the round before;
    at most max_rounds. Returns the faults of each round."""
    rounds = []
    for _ in range(max_rounds):
        faults = {}
        for name, runner in runners.items():
            before = gnbench.page_fault_bytes()
            runner.train_step()
            runner.inference()
            faults[name] = gnbench.page_fault_bytes() - before
        rounds.append(faults)
        print(f"  warm-up round {len(rounds)}: page faults "
              + ", ".join(f"{name} {value / 2**20:.0f} MiB" for name, value in faults.items()), flush=True)
        total = sum(faults.values())
        if total < SETTLED_FAULT_BYTES or (faults_persist and len(rounds) > 1
                                           and total >= sum(rounds[-2].values())):
            break
    return rounds


def time_interleaved(runners, reps, max_wait=0.0):
    """{name: {"train": [s...], "infer": [s...], "load": [cores...]}}, after warm_up.
    Before every sample, waits up to `max_wait` s for the machine to be quiet."""
    names = list(runners)
    samples = {name: {"train": [], "infer": [], "load": []} for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        order = names[shift:] + names[:shift]
        order = order[::-1] if rep % 2 else order
        for name in order:
            waited = wait_until_quiet(max_wait) if max_wait > 0 else 0.0
            samples[name].setdefault("waited", []).append(waited)
            before = gnbench.cpu_snapshot()
            start = time.perf_counter()
            runners[name].train_step()
            middle = time.perf_counter()
            runners[name].inference()
            end = time.perf_counter()
            samples[name]["train"].append(middle - start)
            samples[name]["infer"].append(end - middle)
            samples[name]["load"].append(gnbench.other_load(before, gnbench.cpu_snapshot()))
            print(f"  rep {rep + 1}/{reps} {name:<10} train {middle - start:7.2f} s  infer {end - middle:6.2f} s  "
                  f"other load {samples[name]['load'][-1]:.2f} cores (waited {waited:.0f} s)", flush=True)
    return samples


# ----------------------------------------------------------------------------- profile


@contextlib.contextmanager
def labelled_frozen_bn(model):
    """Wraps every FrozenBatchNorm2d's forward in a record_function range."""
    modules = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]

    def wrap(forward):
        def labelled(x):
            with torch.profiler.record_function(FROZEN_BN_RANGE):
                return forward(x)
        return labelled

    for module in modules:
        module.forward = wrap(module.forward)
    try:
        yield
    finally:
        for module in modules:
            del module.forward


def group_of(name):
    for group, names in GROUPS.items():
        if name in names:
            return group
    return None


def shape_of(event):
    """The first input's shape of an op, or of the first op inside a stand-in range."""
    if event.input_shapes:
        return tuple(event.input_shapes[0])
    if event.name in GROUPS["gn_floor"]:
        return next((tuple(c.input_shapes[0]) for c in event.cpu_children if c.input_shapes), None)
    return None


def classify_profile(events):
    """({group: {"fwd": us, "bwd": us, "calls": n}}, {(group, part, shape): [us, calls]}) from a
    profiler's events recorded with their input shapes; the second dict covers NORM_ACT_GROUPS."""
    events = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    # Backward nodes of FrozenBatchNorm2d's forward ops (x * scale + bias), by sequence number.
    bn_sequence = set()
    for event in events:
        if event.sequence_nr is not None and event.sequence_nr >= 0 and not event.name.startswith("autograd::"):
            parent = event.cpu_parent
            while parent is not None:
                if parent.name == FROZEN_BN_RANGE:
                    bn_sequence.add(event.sequence_nr)
                    break
                parent = parent.cpu_parent
    result = {group: {"fwd": 0.0, "bwd": 0.0, "calls": 0} for group in GROUPS}
    by_shape = {}
    for event in events:
        group = group_of(event.name)
        backward = event.name in BACKWARD_NAMES
        if group is None and event.name.startswith("autograd::engine::evaluate_function: ") \
                and event.sequence_nr in bn_sequence and "Backward" in event.name:
            group, backward = "bn", True
        if group is None:
            continue
        parent = event.cpu_parent
        nested = False
        while parent is not None:
            parent_group = group_of(parent.name)
            if parent_group is None and parent.name.startswith("autograd::engine::evaluate_function: ") \
                    and parent.sequence_nr in bn_sequence:
                parent_group = "bn"
            if parent_group in (group, "gn_floor"):
                nested = True
                break
            parent = parent.cpu_parent
        if nested:
            continue
        part = "bwd" if backward else "fwd"
        result[group][part] += event.cpu_time_total
        result[group]["calls"] += 1
        shape = shape_of(event)
        if group in NORM_ACT_GROUPS and shape:
            entry = by_shape.setdefault((group, part, shape), [0.0, 0])
            entry[0] += event.cpu_time_total
            entry[1] += 1
    return result, by_shape


def profile_variant(runner, model, mode):
    """{"wall": s, "groups": op groups, "by_shape": norm+act ops by shape (classify_profile),
    "faults": bytes, "load": cores} of one profiled train step or inference."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with labelled_frozen_bn(model), torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        before = gnbench.cpu_snapshot()
        faults = gnbench.page_fault_bytes()
        start = time.perf_counter()
        runner.train_step() if mode == "train" else runner.inference()
        wall = time.perf_counter() - start
        faults = gnbench.page_fault_bytes() - faults
        load = gnbench.other_load(before, gnbench.cpu_snapshot())
    groups, by_shape = classify_profile(prof.events())
    return {"wall": wall, "groups": groups, "by_shape": by_shape, "faults": faults, "load": load}


def profile_interleaved(runners, models, steps, max_wait):
    """{name: {mode: median_profile(...)}}: one unrecorded profiled train step and inference
    per variant, then `steps` recorded ones, interleaved."""
    names = list(runners)
    runs = {name: {"train": [], "infer": []} for name in names}
    for step in range(steps + 1):
        for name in (names if step % 2 else names[::-1]):
            for mode in ("train", "infer"):
                if max_wait > 0:
                    wait_until_quiet(max_wait)
                run = profile_variant(runners[name], models[name], mode)
                if step == 0:
                    continue
                runs[name][mode].append(run)
                print(f"  profiled {name:<10} {mode:<5} {run['wall']:6.2f} s  page faults "
                      f"{run['faults'] / 2**20:5.0f} MiB  other load {run['load']:.2f} cores", flush=True)
    return {name: {mode: median_profile(runs[name][mode]) for mode in runs[name]} for name in names}


def median_profile(runs):
    """The profile_variant runs of one variant and mode merged into one of the same form: the
    median wall time, groups and by-shape times (calls: the most of any run), and the page
    faults and load of every run as lists."""
    groups = {group: {part: statistics.median(run["groups"][group][part] for run in runs)
                      for part in ("fwd", "bwd", "calls")} for group in GROUPS}
    keys = set().union(*(run["by_shape"] for run in runs))
    by_shape = {key: [statistics.median(run["by_shape"].get(key, [0.0, 0])[0] for run in runs),
                      max(run["by_shape"].get(key, [0.0, 0])[1] for run in runs)] for key in keys}
    return {"wall": statistics.median(run["wall"] for run in runs), "groups": groups, "by_shape": by_shape,
            "faults": [run["faults"] for run in runs], "load": [run["load"] for run in runs]}


# ----------------------------------------------------------------------------- memory


def read_status(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    return 0


def memory_child(args):
    """Child process: peak resident memory of one variant (bytes), printed as JSON."""
    gnbench.apply_allocator(args.allocator)
    torch.set_num_threads(args.threads)
    names = ["gn_d2", "gn_ours"] if args.variant == "gn_ours" else [args.variant]
    models = build_variants(names, args)
    batch = make_batch(args)
    prepare_models(models, batch)
    model = models.pop(args.variant)
    models.clear()
    runner = Runner(model, batch, args.seed)
    rss_before = read_status("VmRSS")
    hwm_before = read_status("VmHWM")
    runner.inference()
    hwm_infer = read_status("VmHWM")
    runner.train_step()
    hwm_train = read_status("VmHWM")
    print("MEMORY " + json.dumps({"variant": args.variant, "rss_before": rss_before, "hwm_before": hwm_before,
                                  "hwm_infer": hwm_infer, "hwm_train": hwm_train}), flush=True)
    return 0


def measure_memory(args):
    results = {}
    env = {k: v for k, v in os.environ.items() if k not in gnbench.MALLOC_ENV}
    for name in args.variants:
        command = [sys.executable, os.path.abspath(__file__), "--variant", name, "--allocator", args.memory_allocator,
                   "--threads", str(args.threads), "--images", str(args.images), "--height", str(args.height),
                   "--width", str(args.width), "--instances", str(args.instances), "--rois", str(args.rois),
                   "--seed", str(args.seed)]
        print(f"  memory child {name} ...", flush=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("MEMORY ")]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"memory child {name} failed:\n{done.stdout}\n{done.stderr}")
        results[name] = json.loads(lines[-1][len("MEMORY "):])
    return results


# ----------------------------------------------------------------------------- report


def median_ratio(numerator, denominator):
    return statistics.median(n / d for n, d in zip(numerator, denominator))


def share_table(profiles, mode, names):
    """Prints the op-group shares of the profiled step; returns {name: {group: share}}."""
    shares = {}
    header = f"{'op group':<34}" + "".join(f"{n:>22}" for n in names)
    print(header)
    print("-" * len(header))
    rows = [(group, part) for group in ("gn_ours", "gn_floor", "gn_torch", "relu", "bn", "conv", "roi_align")
            for part in ("fwd", "bwd")] + [("linear", "fwd")]
    labels = {"gn_ours": "GN ours (gn_detection::*)", "gn_floor": "GN stand-ins (elementwise)",
              "gn_torch": "GN aten native_group_norm*",
              "relu": "ReLU (relu/relu_/threshold_bwd)", "bn": "BN* (mul+add, batch_norm)",
              "conv": "convolution", "roi_align": "roi_align", "linear": "linear/addmm/mm (+bwd)"}
    for name in names:
        wall, groups = profiles[name][mode]["wall"], profiles[name][mode]["groups"]
        us = wall * 1e6
        shares[name] = {f"{g}_{p}": groups[g][p] / us for g in groups for p in ("fwd", "bwd")}
        shares[name]["norm_act"] = sum(groups[g][p] for g in NORM_ACT_GROUPS for p in ("fwd", "bwd")) / us
        shares[name]["other"] = 1 - sum(groups[g][p] for g in groups for p in ("fwd", "bwd")) / us
        shares[name]["profiled_wall_s"] = wall
    for group, part in rows:
        if mode == "infer" and part == "bwd":
            continue
        values = [profiles[n][mode]["groups"][group][part] for n in names]
        if not any(values):
            continue
        line = f"{labels[group] + ' ' + part:<34}"
        for name, value in zip(names, values):
            line += f"{value / 1e6:>10.3f} s {value / 1e6 / profiles[name][mode]['wall']:>8.1%} "
        print(line)
    line = f"{'= normalization + activation':<34}"
    for name in names:
        s = shares[name]["norm_act"]
        line += f"{s * profiles[name][mode]['wall']:>10.3f} s {s:>8.1%} "
    print(line)
    line = f"{'other ops and Python':<34}"
    for name in names:
        s = shares[name]["other"]
        line += f"{s * profiles[name][mode]['wall']:>10.3f} s {s:>8.1%} "
    print(line)
    print(f"{'profiled wall time':<34}" + "".join(f"{profiles[n][mode]['wall']:>10.3f} s {'':>9}" for n in names))
    for key, label, scale, fmt in (("faults", "page faults (MiB)", 2**-20, ".0f"),
                                   ("load", "other load (cores)", 1, ".2f")):
        print(f"{label + ', each step':<34}" + "".join(
            f"{' '.join(format(v * scale, fmt) for v in profiles[n][mode][key]):>22}" for n in names))
    return shares


def profile_json(profile, shares):
    """A median_profile and its shares as JSON values."""
    return {"wall_s": profile["wall"], "groups_us": profile["groups"], "shares": shares,
            "faults": profile["faults"], "load": profile["load"],
            "by_shape": [{"group": group, "part": part, "shape": list(shape), "us": us, "calls": calls}
                         for (group, part, shape), (us, calls) in sorted(profile["by_shape"].items())]}


def norm_act_by_shape(profiles, shares):
    """Prints the profiled train step's GN and ReLU time per tensor shape for (a), (b) and (a)
    with elementwise stand-ins (FloorRunner); returns the share ratio of the stand-ins' step
    (from share_table's `shares`): what the normalization+activation target asks of any GN
    kernel, next to what it asks of ours."""
    names = [name for name in ("gn_d2", "gn_ours", "gn_floor") if name in profiles]
    tables = {name: profiles[name]["train"]["by_shape"] for name in names}
    columns = [("gn_d2", "gn_torch", "(b) GN"), ("gn_d2", "relu", "(b) ReLU"), ("gn_ours", "gn_ours", "(a) GN"),
               ("gn_ours", "relu", "(a) ReLU"), ("gn_floor", "gn_floor", "stand-in")]
    columns = [c for c in columns if c[0] in tables]
    rows = {}
    for name, table in tables.items():
        for (group, part, shape), (us, calls) in table.items():
            rows.setdefault(shape, {})[(name, group, part)] = (us, calls)
    print("\nProfiled train step by tensor shape: ms per step (calls)")
    print(f"{'shape':<22}" + "".join(f"{label + ' ' + part:>17}" for _, _, label in columns for part in ("fwd", "bwd")))
    total = lambda shape: sum(us for us, _ in rows[shape].values())  # noqa: E731
    for shape in sorted(rows, key=total, reverse=True):
        line = f"{'x'.join(map(str, shape)):<22}"
        for name, group, _ in columns:
            for part in ("fwd", "bwd"):
                us, calls = rows[shape].get((name, group, part), (0.0, 0))
                line += f"{us / 1e3:>12.2f} ({calls:>2})" if calls else f"{'-':>17}"
        print(line)
    if "gn_floor" not in profiles:
        return None
    ms = lambda name, key: shares[name][key] * shares[name]["profiled_wall_s"] * 1e3  # noqa: E731
    ratio = shares["gn_floor"]["norm_act"] / shares["gn_d2"]["norm_act"]
    floor_fwd, floor_bwd = ms("gn_floor", "gn_floor_fwd"), ms("gn_floor", "gn_floor_bwd")
    print(f"Stand-ins: (a) with each GN op replaced, in steps of its own, by elementwise ops that move the bytes "
          f"the op moves on the same tensors (forward: relu or copy of x; backward: add(x, dy)). Our GN ops take "
          f"{ms('gn_ours', 'gn_ours_fwd') + ms('gn_ours', 'gn_ours_bwd'):.1f} ms, the stand-ins "
          f"{floor_fwd + floor_bwd:.1f} ms (forward {floor_fwd:.1f}, backward {floor_bwd:.1f}). With the stand-ins, "
          f"norm+act takes {ms('gn_floor', 'norm_act'):.1f} ms against (b)'s {ms('gn_d2', 'norm_act'):.1f} ms: a "
          f"share ratio of {ratio:.2f}, the best a GN op at elementwise speed would reach here (target 0.5)")
    return ratio


def check_targets(samples, shares):
    targets = []
    if "gn_ours" in samples and "gn_d2" in samples and shares:
        a, b = shares["gn_ours"]["norm_act"], shares["gn_d2"]["norm_act"]
        floor = f"; with elementwise stand-ins {shares['gn_floor']['norm_act'] / b:.2f}" if "gn_floor" in shares else ""
        targets.append({"target": "(a) norm+act share of the train step <= 0.5 x (b)'s",
                        "measured": f"{a:.1%} vs {b:.1%} (ratio {a / b:.2f}{floor})", "passed": a <= 0.5 * b})
    if "gn_ours" in samples and "gn_d2" in samples:
        ratios = [x / y for x, y in zip(samples["gn_ours"]["train"], samples["gn_d2"]["train"])]
        ratio = statistics.median(ratios)
        slower = sum(r > 1 for r in ratios)
        targets.append({"target": "(a) never slower per train step than (b): median a/b <= 1.00",
                        "measured": f"median a/b {ratio:.3f}, per rep {', '.join(f'{r:.3f}' for r in ratios)}"
                                    f" (a slower in {slower} of {len(ratios)})",
                        "passed": ratio <= 1.0})
    if "gn_ours" in samples and "bn_frozen" in samples:
        ratios = [x / y for x, y in zip(samples["gn_ours"]["train"], samples["bn_frozen"]["train"])]
        ratio = statistics.median(ratios)
        targets.append({"target": "(a) within 5% of (c) per train step: median a/c <= 1.05",
                        "measured": f"median a/c {ratio:.3f}, per rep {', '.join(f'{r:.3f}' for r in ratios)}",
                        "passed": ratio <= 1.05})
    return targets


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.variant:
        return memory_child(args)
    allocator_text = gnbench.apply_allocator(args.allocator)
    torch.set_num_threads(args.threads)
    names = args.variants
    print(f"Mask R-CNN R50-FPN benchmark: torch {torch.__version__}, float32, CPU")
    print(f"CPU: {gnbench.cpu_name()}, {os.cpu_count()} logical cores; torch threads: {torch.get_num_threads()}")
    print(f"Allocator (this process): {allocator_text}")
    print(f"Batch: {args.images} random images {args.height}x{args.width} (uint8 BGR), {args.instances} "
          f"box-shaped ground-truth instances each, seed {args.seed}; same batch for every variant")
    print("Settings common to all variants: " + ", ".join(f"{k} {v}" for k, v in common_settings(args)))
    print(f"RoI budget: {args.rois} sampled RoIs per image in training (ROI_HEADS.BATCH_SIZE_PER_IMAGE; "
          f"detectron2's default is 512), at most 25% foreground; the mask head trains on the foreground RoIs; "
          f"inference: 1000 proposals per image through the box head, 100 detections per image through the "
          f"mask head")
    print("Train step: zero_grad, forward in EventStorage, backward, SGD(lr 0, momentum 0.9, wd 1e-4).step(); "
          "RNG reseeded before every step and inference")

    memory = {}
    if not args.no_memory:
        print(f"\nPeak memory: fresh child process per variant, {args.memory_allocator} allocator, VmHWM "
              f"(= getrusage ru_maxrss) after one inference, then after one training step")
        memory = measure_memory(args)
    start_snapshot = gnbench.cpu_snapshot()  # after the children: their CPU time is not "other load"

    models = build_variants(names, args)
    batch = make_batch(args)
    calibrated = prepare_models(models, batch)
    runners = {name: Runner(models[name], batch, args.seed) for name in names}
    print("\nVariants:")
    for name in names:
        cfg = variant_config(name, args)
        print(f"  {name:<10} {VARIANTS[name]['label']}\n             config: {VARIANTS[name]['source']}"
              + (" (" + " ".join(map(str, VARIANTS[name]["opts"])) + ")" if VARIANTS[name]["opts"] else ""))
        print(f"             {describe_config(cfg)}")
        print("             modules: " + ", ".join(f"{k.strip()} {v}" for k, v in count_norms(models[name]).items()))
        params = sum(p.numel() for p in models[name].parameters())
        trainable = sum(p.numel() for p in models[name].parameters() if p.requires_grad)
        print(f"             parameters: {params / 1e6:.2f} M, trainable {trainable / 1e6:.2f} M")
    for name, count in calibrated.items():
        if count:
            print(f"  {name}: statistics of its {count} FrozenBatchNorm2d layers set from one no-grad backbone pass "
                  f"over the batch (identity statistics make a random BN* ResNet blow up)")
    print("  every variant: box predictor class-0 logit bias set to 10, so inference keeps 100 detections per "
          "image (a random model scores all classes under SCORE_THRESH_TEST and would skip the mask head)")
    if "gn_ours" in names:
        print("  gn_ours loaded gn_d2's state_dict (no missing or unexpected keys): same weights")

    faults_persist = args.allocator == "default"
    steady = " (default allocator: or no fewer than the round before)" if faults_persist else ""
    print(f"\nWarm-up: rounds of one training step and inference per variant, until a round makes under "
          f"{SETTLED_FAULT_BYTES >> 20} MiB of page faults{steady} (at most {args.warmup_rounds})", flush=True)
    warmup_faults = warm_up(runners, args.warmup_rounds, faults_persist)
    print(f"Timing: {args.reps} interleaved repetition(s)", flush=True)
    samples = time_interleaved(runners, args.reps, args.wait_idle)

    print("\nRoIs and losses of the last training step (same for every repetition):")
    roi_info = {}
    for name in names:
        r = runners[name]
        fg, bg = r.last_storage.get("roi_head/num_fg_samples"), r.last_storage.get("roi_head/num_bg_samples")
        roi_info[name] = {"num_fg_per_image": fg, "num_bg_per_image": bg, "losses": r.last_losses,
                          "detections_per_image": r.last_detections}
        losses = ", ".join(f"{k} {v:.3g}" for k, v in r.last_losses.items())
        print(f"  {name:<10} RoIs/img fg {fg:.1f} + bg {bg:.1f}; detections/img {r.last_detections}; {losses}")

    profiles = {}
    if not args.no_profile:
        print(f"\nProfiling {args.profile_steps} train step(s) and inference(s) per variant (torch.profiler, CPU), "
              f"interleaved, after one unrecorded profiled step each ...", flush=True)
        profile_runners, profile_models = dict(runners), dict(models)
        if "gn_ours" in runners:
            profile_runners["gn_floor"] = FloorRunner(models["gn_ours"], batch, args.seed)
            profile_models["gn_floor"] = models["gn_ours"]
        profiles = profile_interleaved(profile_runners, profile_models, args.profile_steps, args.wait_idle)
    load = gnbench.other_load(start_snapshot, gnbench.cpu_snapshot())

    print("\n" + "=" * 40 + " results " + "=" * 40)
    print(f"{'variant':<44} {'train s/step':>12} {'infer s':>9} {'train/(b)':>10} {'train/(c)':>10} "
          f"{'infer/(b)':>10} {'infer/(c)':>10}")
    rows = {}
    for name in names:
        s = samples[name]
        row = {"train_s": statistics.median(s["train"]), "infer_s": statistics.median(s["infer"]),
               "train_samples": s["train"], "infer_samples": s["infer"], "other_load": s["load"],
               "waited_s": s.get("waited", [])}
        for ref, tag in (("gn_d2", "b"), ("bn_frozen", "c")):
            if ref in samples:
                row[f"train_vs_{tag}"] = median_ratio(s["train"], samples[ref]["train"])
                row[f"infer_vs_{tag}"] = median_ratio(s["infer"], samples[ref]["infer"])
        rows[name] = row
        fmt = lambda key: f"{row[key]:>10.3f}" if key in row else f"{'-':>10}"  # noqa: E731
        print(f"{VARIANTS[name]['label']:<44} {row['train_s']:>12.2f} {row['infer_s']:>9.2f} {fmt('train_vs_b')} "
              f"{fmt('train_vs_c')} {fmt('infer_vs_b')} {fmt('infer_vs_c')}")
    print("(medians over repetitions; ratios are medians of per-repetition ratios)")
    print(f"\nRobust to other load (it only adds time): fastest sample, and median of the samples during which "
          f"other processes kept < {QUIET_LOAD} cores busy")
    print(f"{'variant':<44} {'train min':>10} {'infer min':>10} {'train min/(b)':>14} {'train min/(c)':>14} "
          f"{'quiet train':>12} {'n':>3}")
    for name in names:
        s, row = samples[name], rows[name]
        quiet = [t for t, load_ in zip(s["train"], s["load"]) if load_ < QUIET_LOAD]
        row["train_min_s"], row["infer_min_s"] = min(s["train"]), min(s["infer"])
        row["train_quiet_median_s"] = statistics.median(quiet) if quiet else None
        ratio_b = row["train_min_s"] / min(samples["gn_d2"]["train"]) if "gn_d2" in samples else float("nan")
        ratio_c = row["train_min_s"] / min(samples["bn_frozen"]["train"]) if "bn_frozen" in samples else float("nan")
        quiet_text = f"{row['train_quiet_median_s']:>12.2f}" if quiet else f"{'-':>12}"
        print(f"{VARIANTS[name]['label']:<44} {row['train_min_s']:>10.2f} {row['infer_min_s']:>10.2f} "
              f"{ratio_b:>14.3f} {ratio_c:>14.3f} {quiet_text} {len(quiet):>3}")

    if memory:
        print(f"\nPeak resident memory (fresh child per variant, {args.memory_allocator} allocator; MiB):")
        print(f"{'variant':<44} {'before':>8} {'infer peak':>11} {'above':>8} {'train peak':>11} {'above':>8}")
        for name in names:
            m = memory[name]
            mib = 1 / 2**20
            print(f"{VARIANTS[name]['label']:<44} {m['rss_before'] * mib:>8.0f} {m['hwm_infer'] * mib:>11.0f} "
                  f"{(m['hwm_infer'] - m['rss_before']) * mib:>8.0f} {m['hwm_train'] * mib:>11.0f} "
                  f"{(m['hwm_train'] - m['rss_before']) * mib:>8.0f}")
        print("('before' = resident size after building the model and batch; 'above' = peak minus 'before')")

    train_shares, infer_shares, share_at_floor = {}, {}, None
    if profiles:
        print("\nProfiled train step: time in op groups (inclusive CPU time of the outermost op of each group) "
              "and share of the step's wall time; gn_floor is gn_ours with elementwise stand-ins for its GN ops")
        train_shares = share_table(profiles, "train", list(profiles))
        print("\nProfiled inference: same grouping")
        infer_shares = share_table(profiles, "infer", list(profiles))
        if "gn_ours" in profiles and "gn_d2" in profiles:
            share_at_floor = norm_act_by_shape(profiles, train_shares)

    targets = check_targets(samples, train_shares)
    print("\n" + gnbench.contention_note(load))
    print("\nTargets:")
    for t in targets:
        print(f"  {'PASS' if t['passed'] else 'FAIL'}  {t['target']:<62} {t['measured']}")

    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        result = {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "torch": torch.__version__, "cpu": gnbench.cpu_name(), "threads": args.threads,
            "allocator": allocator_text, "memory_allocator": args.memory_allocator,
            "images": args.images, "height": args.height, "width": args.width, "instances": args.instances,
            "rois_per_image": args.rois, "reps": args.reps, "quick": args.quick, "seed": args.seed,
            "common_settings": {k: v for k, v in common_settings(args)},
            "variants": {n: {"label": VARIANTS[n]["label"], "config": VARIANTS[n]["source"],
                             "opts": VARIANTS[n]["opts"], "description": describe_config(variant_config(n, args))}
                         for n in names},
            "timing": rows, "rois": roi_info, "memory_bytes": memory,
            "warmup_fault_bytes": warmup_faults, "profile_steps": args.profile_steps,
            "profile_train": {n: profile_json(profiles[n]["train"], train_shares[n]) for n in profiles},
            "profile_infer": {n: profile_json(profiles[n]["infer"], infer_shares[n]) for n in profiles},
            "norm_act_share_ratio_at_floor": share_at_floor, "other_load_cores": load, "targets": targets,
        }
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
