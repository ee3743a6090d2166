"""The Mask R-CNN step benchmark's models and steps: R50-FPN Mask R-CNN with
(a) our GN (fused ReLU), (b) detectron2's own GN model (``torch.nn.GroupNorm``) and
(c) BN* (FrozenBatchNorm2d, no norm in FPN and heads), with random weights, built
alike and run on the same batch; a training step and an inference of each, timed
interleaved.

All weights are random and seeded; (a) loads (b)'s weights, so both make the same
proposals and sample the same RoIs. Every variant gets the same pixel mean/std, RPN,
RoI budget and test settings (common_settings), and two adjustments (prepare) that
keep a random model doing a trained one's work: BN*'s statistics set from the batch,
and a class-0 logit bias of 10 so inference keeps 100 detections per image.
"""

import os
import time

import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from gn_detection.benchmark import host
from gn_detection.benchmark.timing import rotated_order
from gn_detection.config import add_gn_config
from gn_detection.layers import GroupNorm

REPO_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
D2_GN_CONFIG = "Misc/mask_rcnn_R_50_FPN_3x_gn.yaml"
VARIANTS = {
    "gn_ours": ("(a) our GN (custom op, fused ReLU)", "table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml",
                ["MODEL.GN.IMPL", "custom", "MODEL.GN.FUSE_RELU", True]),
    "gn_d2": ("(b) detectron2 GN (nn.GroupNorm)", "detectron2 model zoo: " + D2_GN_CONFIG, []),
    "bn_frozen": ("(c) BN* (FrozenBatchNorm2d)", "table5_fpn_heads/mask_rcnn_R_50_FPN_bn_frozen_4conv1fc.yaml", []),
}
# Detectron's BGR pixel mean (configs/Base-GN-RCNN-FPN.yaml), for all three.
PIXEL_MEAN, PIXEL_STD = [102.9801, 115.9465, 122.7717], [1.0, 1.0, 1.0]
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SETTLED_FAULT_BYTES = 4 << 20  # page faults of a CPU warm-up round under which the heap has stopped growing


def common_settings(device: str, rois: int) -> list:
    """(key, value) overrides applied to every variant."""
    return [
        ("MODEL.DEVICE", device), ("MODEL.WEIGHTS", ""), ("MODEL.PIXEL_MEAN", PIXEL_MEAN),
        ("MODEL.PIXEL_STD", PIXEL_STD), ("MODEL.RPN.PRE_NMS_TOPK_TRAIN", 2000),
        ("MODEL.RPN.POST_NMS_TOPK_TRAIN", 1000), ("MODEL.RPN.PRE_NMS_TOPK_TEST", 1000),
        ("MODEL.RPN.POST_NMS_TOPK_TEST", 1000), ("MODEL.RPN.BATCH_SIZE_PER_IMAGE", 256),
        ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", rois), ("MODEL.ROI_HEADS.POSITIVE_FRACTION", 0.25),
        ("MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", True), ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.05),
        ("MODEL.ROI_HEADS.NMS_THRESH_TEST", 0.5), ("TEST.DETECTIONS_PER_IMAGE", 100),
    ]


def variant_config(name: str, device: str, rois: int):
    label, source, opts = VARIANTS[name]
    cfg = add_gn_config(get_cfg())
    cfg.merge_from_file(model_zoo.get_config_file(D2_GN_CONFIG) if name == "gn_d2"
                        else os.path.join(REPO_CONFIGS, source))
    cfg.merge_from_list(list(opts))
    cfg.merge_from_list([item for key, value in common_settings(device, rois) for item in (key, value)])
    cfg.freeze()
    return cfg


def build_variants(names, device: str, rois: int, seed: int) -> dict:
    """{name: model}; gn_ours gets gn_d2's weights (every key must match), so gn_d2 is
    built too when gn_ours is asked for."""
    models = {}
    for name in [n for n in ("gn_d2", "gn_ours", "bn_frozen") if n in names or (n == "gn_d2" and "gn_ours" in names)]:
        torch.manual_seed(seed)
        models[name] = build_model(variant_config(name, device, rois))
        if name == "gn_ours":
            result = models[name].load_state_dict(models["gn_d2"].state_dict())
            if result.missing_keys or result.unexpected_keys:
                raise SystemExit(f"gn_ours cannot load gn_d2's weights: {result}")
    return {name: models[name] for name in names}


def count_norms(model) -> dict:
    ours = [m for m in model.modules() if isinstance(m, GroupNorm)]
    return {
        "our GroupNorm": len(ours),
        "with fused ReLU": sum(m.activation == "relu" for m in ours),
        "nn.GroupNorm": sum(isinstance(m, torch.nn.GroupNorm) and not isinstance(m, GroupNorm)
                            for m in model.modules()),
        "FrozenBatchNorm2d": sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules()),
    }


def calibrate_frozen_bn(model, batch) -> int:
    """Sets every FrozenBatchNorm2d's statistics to those of its input on `batch` (one
    no-grad backbone pass), as a pretrained BN* model's would roughly be. With identity
    statistics a random BN* ResNet's activations grow block after block (losses in the
    hundreds, degenerate proposals, few RoIs): it would do less work than the GN models."""
    def set_statistics(module, inputs):
        x = inputs[0].float()
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


def confident_class_scores(model) -> None:
    """Class-0 logit bias 10: every proposal scores about 1 for class 0, so inference
    keeps TEST.DETECTIONS_PER_IMAGE detections per image and runs the mask head on them,
    as a trained model does (random weights score every class near 1/81, under
    SCORE_THRESH_TEST). Training work is unchanged."""
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.zero_()
        model.roi_heads.box_predictor.cls_score.bias[0] = 10.0


def prepare(models: dict, batch) -> None:
    for model in models.values():
        calibrate_frozen_bn(model, batch)
        confident_class_scores(model)


class Runner:
    """Training step and inference of one model on one batch, reseeded before each
    (the same proposals and RoIs every time), under autocast when `amp` is a dtype.

    Training step: zero_grad, forward inside EventStorage, backward, SGD step with
    lr 0 (momentum 0.9, weight decay 1e-4: the optimizer's work without changing the
    weights); with float16 autocast through a GradScaler, as float16 training is run.
    Both end with a device synchronization, so wall-clock times are complete."""

    def __init__(self, model, batch, seed: int, amp=None):
        self.model, self.batch, self.seed, self.amp = model, batch, seed, amp
        self.device = next(model.parameters()).device
        self.test_batch = [{k: v for k, v in item.items() if k != "instances"} for item in batch]
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=0.0, momentum=0.9, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler(self.device.type) if amp == torch.float16 else None
        self.last_losses, self.last_rois, self.last_detections = {}, {}, []

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_step(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        torch.manual_seed(self.seed)
        with EventStorage() as storage:
            with self.autocast():
                losses = self.model(self.batch)
            total = sum(losses.values())
            if self.scaler is None:
                total.backward()
                self.optimizer.step()
            else:
                self.scaler.scale(total).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
        self.synchronize()
        self.last_losses = {k: v.item() for k, v in losses.items()}
        self.last_rois = {k: v[0] for k, v in storage.latest().items() if k.startswith("roi_head/num_")}

    def inference(self) -> None:
        self.model.eval()
        torch.manual_seed(self.seed)
        with torch.no_grad(), self.autocast():
            outputs = self.model(self.test_batch)
        self.synchronize()
        self.last_detections = [len(o["instances"]) for o in outputs]


def norm_output_dtypes(runner: Runner) -> dict:
    """{dtype name: count} of the normalization layers' outputs in one training step:
    what the model's norm layers give the next layer (under autocast too)."""
    counts = {}

    def count(module, inputs, output):
        name = str(output.dtype).replace("torch.", "")
        counts[name] = counts.get(name, 0) + 1

    kinds = (torch.nn.GroupNorm, FrozenBatchNorm2d)
    handles = [m.register_forward_hook(count) for m in runner.model.modules() if isinstance(m, kinds)]
    try:
        runner.train_step()
    finally:
        for handle in handles:
            handle.remove()
    return counts


def wait_until_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Waits (up to `max_wait` seconds) until other processes keep fewer than
    `threshold` cores busy over a 1 s window; returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < max_wait:
        before = host.cpu_snapshot()
        time.sleep(1.0)
        if host.other_load(before, host.cpu_snapshot()) < threshold:
            break
    return time.monotonic() - start


def warm_up(runners: dict, max_rounds: int, until_settled: bool, faults_persist: bool = False) -> list:
    """Rounds of one training step and one inference per variant; returns each round's
    page faults per variant. With `until_settled` (CPU) the rounds stop early once one
    makes under SETTLED_FAULT_BYTES of faults (the heap has grown to the step's peak, so
    no timed op pays the kernel's page zeroing), or, with `faults_persist` (glibc's
    default allocator maps large outputs afresh every step), no fewer than the round before."""
    rounds = []
    for _ in range(max_rounds):
        faults = {}
        for name, runner in runners.items():
            before = host.page_fault_bytes()
            runner.train_step()
            runner.inference()
            faults[name] = host.page_fault_bytes() - before
        rounds.append(faults)
        total = sum(faults.values())
        if until_settled and (total < SETTLED_FAULT_BYTES or (
                faults_persist and len(rounds) > 1 and total >= sum(rounds[-2].values()))):
            break
    return rounds


def time_steps(runners: dict, reps: int, max_wait: float = 0.0, report=None) -> dict:
    """{name: {"train": [s], "infer": [s], "load": [cores]}}: `reps` repetitions of a
    training step and an inference per variant, in rotated_order; before every sample,
    waits up to `max_wait` s for the machine to be quiet. `report(rep, name, sample)` is
    called after each sample."""
    samples = {name: {"train": [], "infer": [], "load": []} for name in runners}
    for rep in range(reps):
        for name in rotated_order(runners, rep):
            if max_wait > 0:
                wait_until_quiet(max_wait)
            before = host.cpu_snapshot()
            start = time.perf_counter()
            runners[name].train_step()
            middle = time.perf_counter()
            runners[name].inference()
            end = time.perf_counter()
            sample = samples[name]
            sample["train"].append(middle - start)
            sample["infer"].append(end - middle)
            sample["load"].append(host.other_load(before, host.cpu_snapshot()))
            if report:
                report(rep, name, {key: values[-1] for key, values in sample.items()})
    return samples
