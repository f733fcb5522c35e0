"""MediaPipe's palm detector and hand landmark network as trainable PyTorch modules (f_E2D, pretrained).

The paper's 2D evidence network is pretrained on real images (Sec. 3.1). handlib reads Google's
openly licensed (Apache-2.0) MediaPipe hand models — the same ``hand_landmarker.task`` that
:mod:`handlib.evidence_pretrained` drives through the MediaPipe runtime — with
:mod:`handlib.tflite`, so that they run, differentiate and fine-tune in torch:

* :class:`HandLandmarkNet`: a 224×224 hand crop → 21 landmarks (x, y in crop pixels, z relative),
  hand presence, handedness, 21 world landmarks (metres) and the pretrained feature F(x)
  (1152-d, global average of a 1152×7×7 map) that feeds every head;
* :class:`PalmDetector`: a 192×192 letterboxed image → palm boxes and 7 palm keypoints (MediaPipe's
  SSD anchors, sigmoid scores, weighted non-maximum suppression);
* :func:`detect_hands`: the whole pipeline — palm detection, the rotated enlarged hand region,
  the landmark network through a differentiable ``grid_sample`` warp, landmarks mapped back to
  image pixels — returning :class:`~handlib.evidence_pretrained.HandDetection` s like the runtime;
* :func:`landmarks_to_roi`: MediaPipe's tracking region (the next crop) from 21 landmarks.

Verified (tests/test_pretrained.py): both networks equal the TFLite runtime to ~1e-4 px; given
mediapipe's own hand region, the crop + network + mapping back reproduce its landmarks to < 0.2 px;
the whole ``detect_hands`` agrees with mediapipe 1.2.2's ``HandLandmarker`` to 0.24 px (median; mean
0.37 px on 9 real hands), once its hand region's rotation is reproduced (:data:`TASKS_TARGET_ANGLE`).

Conventions: landmarks follow MediaPipe's order, which is the OpenPose/FreiHAND order, i.e.
handlib's (``skeleton.ORDERS["freihand"]`` is the identity). ``handedness`` is the network's
sigmoid output, the probability that the hand is a **right** hand in the photo as given
(non-mirrored), which is how mediapipe 1.2.2's ``HandLandmarker`` labels it (checked in
tests/test_pretrained.py on RHD left and FreiHAND right hands).

Image coordinates follow MediaPipe where they must (its region of interest places pixel *i*'s
centre at *i*; its normalised outputs are converted with ``u = x·W − ½``, as
:func:`~handlib.evidence_pretrained.detections_from_result` does), which is what makes the landmark
stage equal the runtime's.
"""
from __future__ import annotations

import dataclasses
import math
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .evidence_pretrained import MIN_BOX_SIDE, HandDetection, PretrainedConfig, default_model_path
from .skeleton import keypoint_box
from .tflite import load_tflite

__all__ = ["HandLandmarks", "HandLandmarkNet", "Palms", "PalmDetector", "ssd_anchors", "decode_palms",
           "weighted_nms", "box_iou", "palm_to_roi", "landmarks_to_roi", "roi_grid", "roi_to_image",
           "HandsFound", "SecondLook", "find_hands", "detect_hands", "HandFinder", "open_detector",
           "RUNTIMES", "read_task_member", "runtime_outputs", "LANDMARK_MEMBER", "PALM_MEMBER",
           "TASKS_TARGET_ANGLE"]

LANDMARK_MEMBER = "hand_landmarks_detector.tflite"
PALM_MEMBER = "hand_detector.tflite"
LANDMARK_SIZE, PALM_SIZE = 224, 192


def read_task_member(path, member: str) -> tuple[bytes, str]:
    """The bytes of one model inside a ``.task`` zip (read in memory, never extracted) and its label."""
    path = Path(path) if path is not None else default_model_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no hand landmarker model; fetch it with "
                                "`python data_scripts/get_pretrained.py`")
    with zipfile.ZipFile(path) as z:
        if member not in z.namelist():
            raise ValueError(f"{path}: no member {member!r} (has {z.namelist()})")
        return z.read(member), f"{path}:{member}"


def runtime_outputs(member: str, x: torch.Tensor, path=None) -> dict:
    """The reference: the TFLite runtime (``ai-edge-litert``) on x, one image at a time.

    Args:
        member: LANDMARK_MEMBER or PALM_MEMBER. x: (B, 3, H, W) RGB in [0, 1].
    Returns:
        {output tensor name: (B, ...) np.ndarray}, e.g. "Identity" (B, 63) for the landmarks.
    """
    from ai_edge_litert.interpreter import Interpreter

    from .evidence_pretrained import _native_stderr_quiet  # TFLite logs its XNNPACK delegate on fd 2

    with _native_stderr_quiet():
        it = Interpreter(model_content=read_task_member(path, member)[0])
        it.allocate_tensors()
        outs = []
        for image in x.detach().float().cpu().permute(0, 2, 3, 1).numpy():
            it.set_tensor(it.get_input_details()[0]["index"], np.ascontiguousarray(image[None]))
            it.invoke()
            outs.append({d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()})
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


# ----------------------------------------------------------------------------------------------
# The landmark network
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HandLandmarks:
    """Outputs of :class:`HandLandmarkNet` for B crops of 224×224.

    Attributes:
        landmarks: (B, 21, 3) x, y in crop pixels (0 = the crop's left/top edge), z relative
            depth on the same scale; handlib keypoint order.
        presence: (B,) probability that a hand is in the crop.
        handedness: (B,) probability that it is a right hand (photo as given).
        world: (B, 21, 3) metres, centred near the hand's middle, axes of the crop.
        feature: (B, 1152) the pretrained F(x): global average of ``feature_map``.
        feature_map: (B, 1152, 7, 7) the last convolutional features.
    """

    landmarks: torch.Tensor
    presence: torch.Tensor
    handedness: torch.Tensor
    world: torch.Tensor
    feature: torch.Tensor
    feature_map: torch.Tensor


class HandLandmarkNet(nn.Module):
    """MediaPipe's ``hand_landmark_full`` (2.72 M parameters) as a torch module.

    ``HandLandmarkNet.from_task()`` reads it from the cached ``hand_landmarker.task``.

    Args:
        net: the :class:`~handlib.tflite.TFLiteModule` of the file.
        cpu_chunk: on CPU, run large batches this many images at a time. Its activations then stay in
            cache: measured forward per image (1 thread) 21 ms at batch 1–4 but 52 ms at batch 32 in
            one piece. None: never split (GPUs prefer whole batches, and are not split anyway).
    """

    def __init__(self, net: nn.Module, cpu_chunk: int | None = 4):
        super().__init__()
        self.net, self.cpu_chunk = net, cpu_chunk
        g = net.graph
        mean = next(op for op in g.ops if op.type == "MEAN")  # global average pooling → every head
        self.feature_map_name = g.tensors[mean.inputs[0]].name
        self.feature_name = g.tensors[mean.outputs[0]].name
        names = [g.tensors[i].name for i in g.outputs]
        # the exported outputs: Identity = landmarks, _1 = presence (conv_handflag), _2 = handedness
        # (conv_handedness), _3 = world landmarks; checked against the producing layers' names
        self.order = [names.index(f"Identity{s}") for s in ("", "_1", "_2", "_3")]
        producers = {op.outputs[0]: op for op in g.ops}
        for key, idx in (("handflag", self.order[1]), ("handedness", self.order[2])):
            fc = producers[producers[g.outputs[idx]].inputs[0]]
            if key not in g.tensors[fc.outputs[0]].name:
                raise ValueError(f"{g.source}: output {names[idx]} is not conv_{key}: an unexpected model")

    @classmethod
    def from_task(cls, path=None) -> HandLandmarkNet:
        """Read ``hand_landmarks_detector.tflite`` from a .task (default: the checksummed cache)."""
        data, label = read_task_member(path, LANDMARK_MEMBER)
        return cls(load_tflite(data, label))

    def forward(self, x: torch.Tensor) -> HandLandmarks:
        """x: (B, 3, 224, 224) RGB in [0, 1] → :class:`HandLandmarks`."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, LANDMARK_SIZE, LANDMARK_SIZE):
            raise ValueError(f"x: expected (B, 3, 224, 224), got {tuple(x.shape)}")
        names = (self.feature_map_name, self.feature_name)
        if x.device.type == "cpu" and self.cpu_chunk and len(x) > self.cpu_chunk:
            parts = [self.net(c, taps=names) for c in x.split(self.cpu_chunk)]
            outs = [torch.cat([p[0][i] for p in parts]) for i in range(len(parts[0][0]))]
            taps = {n: torch.cat([p[1][n] for p in parts]) for n in names}
        else:
            outs, taps = self.net(x, taps=names)
        lm, presence, hand, world = (outs[i] for i in self.order)
        B = x.shape[0]
        return HandLandmarks(landmarks=lm.reshape(B, 21, 3), presence=presence.reshape(B),
                             handedness=hand.reshape(B), world=world.reshape(B, 21, 3),
                             feature=taps[self.feature_name], feature_map=taps[self.feature_map_name])


# ----------------------------------------------------------------------------------------------
# The palm detector
# ----------------------------------------------------------------------------------------------
def ssd_anchors(size: int = PALM_SIZE, strides=(8, 16, 16, 16), per_layer: int = 2) -> torch.Tensor:
    """Centres of MediaPipe's SSD anchors for palm_detection_full, normalised to [0, 1].

    MediaPipe's options: 4 layers, strides 8, 16, 16, 16, offset 0.5, aspect ratio 1 plus one
    interpolated scale (2 anchors per cell and layer), fixed anchor size (width = height = 1).
    Consecutive layers of equal stride share one feature map: 24×24×2 + 12×12×6 = 2016 anchors,
    ordered row, column, anchor as the network's RESHAPEs lay them out.

    Returns:
        (N, 2) anchor centres (x, y).
    """
    centres, i = [], 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        n = math.ceil(size / strides[i])
        ys, xs = torch.meshgrid((torch.arange(n) + 0.5) / n, (torch.arange(n) + 0.5) / n, indexing="ij")
        cells = torch.stack([xs, ys], -1).reshape(-1, 1, 2).expand(-1, per_layer * (j - i), 2)
        centres.append(cells.reshape(-1, 2))
        i = j
    return torch.cat(centres).float()


def decode_palms(raw: torch.Tensor, logits: torch.Tensor, anchors: torch.Tensor, size: int = PALM_SIZE):
    """MediaPipe's TensorsToDetections for the palm model (all anchors, differentiable).

    Args:
        raw: (B, N, 18) box centre offset, box size and 7 keypoint offsets, in input pixels.
        logits: (B, N, 1) or (B, N). anchors: (N, 2) centres, normalised.
    Returns:
        boxes (B, N, 4) (x_min, y_min, x_max, y_max), keypoints (B, N, 7, 2), both normalised to the
        input (0 = left/top edge, 1 = right/bottom edge), scores (B, N) = sigmoid(clip(logit, ±100)).
    """
    centre = raw[..., 0:2] / size + anchors
    half = raw[..., 2:4] / size / 2
    boxes = torch.cat([centre - half, centre + half], -1)
    keypoints = raw[..., 4:18].reshape(*raw.shape[:2], 7, 2) / size + anchors[:, None]
    scores = torch.sigmoid(logits.reshape(raw.shape[:2]).clamp(-100.0, 100.0))
    return boxes, keypoints, scores


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of (4,) box ``a`` with (M, 4) boxes ``b`` (x_min, y_min, x_max, y_max) → (M,)."""
    lo, hi = torch.maximum(a[:2], b[:, :2]), torch.minimum(a[2:], b[:, 2:])
    inter = (hi - lo).clamp_min(0).prod(-1)
    area = lambda t: (t[..., 2:] - t[..., :2]).prod(-1)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp_min(1e-12)


def weighted_nms(boxes, keypoints, scores, iou_threshold: float = 0.3, max_detections: int = 2):
    """MediaPipe's WEIGHTED non-maximum suppression for one image.

    Take the best remaining detection, gather every remaining one overlapping it by IoU > threshold
    (itself included), output their score-weighted mean box and keypoints with the best score.

    Args:
        boxes: (M, 4), keypoints: (M, 7, 2), scores: (M,), already above the score threshold.
    Returns:
        boxes (D, 4), keypoints (D, 7, 2), scores (D,), D ≤ max_detections, best first.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    out_b, out_k, out_s = [], [], []
    while order.numel() and len(out_s) < max_detections:
        top = order[0]
        near = box_iou(boxes[top], boxes[order]) > iou_threshold
        group, order = order[near], order[~near]
        w = scores[group] / scores[group].sum()
        out_b.append((w[:, None] * boxes[group]).sum(0))
        out_k.append((w[:, None, None] * keypoints[group]).sum(0))
        out_s.append(scores[top])
    if not out_s:
        return boxes[:0], keypoints[:0], scores[:0]
    return torch.stack(out_b), torch.stack(out_k), torch.stack(out_s)


@dataclasses.dataclass(frozen=True)
class Palms:
    """Palms found in one image: boxes (D, 4) (x_min, y_min, x_max, y_max) and keypoints (D, 7, 2)
    normalised to the detector's input, scores (D,) in [0, 1], best first. Keypoints: 0 wrist centre,
    1 index MCP, 2 middle MCP, 3 ring MCP, 4 pinky MCP, 5–6 thumb CMC and MCP (MediaPipe's)."""

    boxes: torch.Tensor
    keypoints: torch.Tensor
    scores: torch.Tensor


class PalmDetector(nn.Module):
    """MediaPipe's ``palm_detection_full`` (1.14 M parameters) with its SSD decoding and NMS."""

    def __init__(self, net: nn.Module, min_score: float = 0.5, iou_threshold: float = 0.3):
        super().__init__()
        self.net, self.min_score, self.iou_threshold = net, min_score, iou_threshold
        self.register_buffer("anchors", ssd_anchors(), persistent=False)
        names = [net.graph.tensors[i].name for i in net.graph.outputs]
        self.order = [names.index("Identity"), names.index("Identity_1")]  # (B, N, 18), (B, N, 1)

    @classmethod
    def from_task(cls, path=None, **kwargs) -> PalmDetector:
        """Read ``hand_detector.tflite`` from a .task (default: the checksummed cache)."""
        data, label = read_task_member(path, PALM_MEMBER)
        return cls(load_tflite(data, label), **kwargs)

    def decode(self, x: torch.Tensor):
        """All 2016 anchors, decoded: x (B, 3, 192, 192) RGB in [0, 1] → see :func:`decode_palms`."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, PALM_SIZE, PALM_SIZE):
            raise ValueError(f"x: expected (B, 3, 192, 192), got {tuple(x.shape)}")
        outs = self.net(x)
        return decode_palms(outs[self.order[0]], outs[self.order[1]], self.anchors)

    def forward(self, x: torch.Tensor, max_detections: int = 2) -> list[Palms]:
        """x: (B, 3, 192, 192) RGB in [0, 1] → B :class:`Palms` (score ≥ min_score, weighted NMS)."""
        boxes, keypoints, scores = self.decode(x)
        palms = []
        for b in range(x.shape[0]):
            keep = scores[b] >= self.min_score
            palms.append(Palms(*weighted_nms(boxes[b][keep], keypoints[b][keep], scores[b][keep],
                                             self.iou_threshold, max_detections)))
        return palms


# ----------------------------------------------------------------------------------------------
# The hand pipeline: letterbox → palms → rotated hand regions → landmarks → image pixels
# ----------------------------------------------------------------------------------------------
def _rotate(v: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate (D, ..., 2) vectors by (D,) angles, MediaPipe's sense (clockwise on screen, y down)."""
    c, s = torch.cos(rotation), torch.sin(rotation)
    shape = (-1,) + (1,) * (v.dim() - 2)
    c, s = c.reshape(shape), s.reshape(shape)
    return torch.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], -1)


def roi_grid(center: torch.Tensor, side: torch.Tensor, rotation: torch.Tensor, out: int, H: int, W: int):
    """``grid_sample`` grid that cuts D rotated squares out of an H×W image, as MediaPipe does.

    MediaPipe (ImageToTensor, OpenCV path) maps the region's corners onto the output's corners
    0 and ``out``, so output pixel u samples the image at ``corner + u/out · side`` along the
    rotated axes (image pixel i's centre at i).

    Args:
        center: (D, 2) pixels. side: (D,) pixels. rotation: (D,) radians. out: output size.
    Returns:
        (D, out, out, 2) normalised coordinates for ``F.grid_sample(..., align_corners=False)``.
    """
    t = torch.arange(out, dtype=center.dtype, device=center.device) / out - 0.5
    local = torch.stack(torch.meshgrid(t, t, indexing="xy"), -1)  # (out, out, 2) x, y
    pos = center[:, None, None] + _rotate(local[None] * side[:, None, None, None], rotation)
    size = torch.tensor([W, H], dtype=center.dtype, device=center.device)
    return (2 * pos + 1) / size - 1


def roi_to_image(points: torch.Tensor, center: torch.Tensor, side: torch.Tensor, rotation: torch.Tensor,
                 out: int) -> torch.Tensor:
    """Crop pixels → image pixels (MediaPipe's LandmarkProjection): (D, K, 2) → (D, K, 2)."""
    return center[:, None] + _rotate((points / out - 0.5) * side[:, None, None], rotation)


# MediaPipe's tasks HandDetectorGraph sets DetectionsToRectsCalculator's rotation_vector_target_angle,
# a field in *radians*, to 90 (not its _degrees twin, nor π/2): the target is 90 rad ≡ 116.6°, so the
# wrist → middle-MCP line ends up 26.6° off upright in the crop. Reproducing it is what makes
# detect_hands equal the HandLandmarker (median 1.9 px → 0.24 px on the shared frames).
TASKS_TARGET_ANGLE = 90.0


def palm_to_roi(boxes: torch.Tensor, keypoints: torch.Tensor, scale: float = 2.6, shift_y: float = -0.5,
                target_angle: float = TASKS_TARGET_ANGLE):
    """The hand region from palm detections (all in image pixels), MediaPipe's hand_detector rules.

    Rotation turns the wrist → middle-finger-MCP direction (keypoints 0 → 2) to ``target_angle``
    (radians, counter-clockwise from the x axis with y up); the box is moved by ``shift_y`` of its
    height along the rotated axis, squared on its long side and enlarged ``scale`` times, so that
    the whole hand fits. ``target_angle=math.pi / 2`` makes the hand exactly upright (the legacy
    graphs' 90°); the default, 90 *radians*, is what mediapipe's tasks ``HandLandmarker`` does (see
    ``TASKS_TARGET_ANGLE``).

    Args:
        boxes: (D, 4) (x_min, y_min, x_max, y_max). keypoints: (D, 7, 2).
    Returns:
        center (D, 2), side (D,), rotation (D,) radians in [−π, π).
    """
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    d = keypoints[:, 2] - keypoints[:, 0]
    rotation = target_angle - torch.atan2(-d[:, 1], d[:, 0])
    rotation = rotation - 2 * math.pi * torch.floor((rotation + math.pi) / (2 * math.pi))
    shift = torch.stack([torch.zeros_like(size[:, 1]), size[:, 1] * shift_y], -1)  # (D, 2) in the box frame
    return center + _rotate(shift, rotation), size.max(-1).values * scale, rotation


_PARTIAL = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)  # wrist, thumb CMC–IP, MCP and PIP of each finger


def landmarks_to_roi(kp2d: torch.Tensor, scale: float = 2.0, shift_y: float = -0.1):
    """The next hand region from 21 landmarks (MediaPipe's tracking: HandLandmarksToRect + transform).

    Rotation brings the wrist → (mean of index and ring MCPs, averaged with the middle MCP) direction
    upright; the box is the tight box of the wrist, thumb and MCP/PIP landmarks in that rotated frame,
    moved by ``shift_y`` of its height, squared on its long side and enlarged ``scale`` times.

    Args:
        kp2d: (D, 21, 2) image pixels, handlib's convention (pixel centres at integers).
    Returns:
        center (D, 2) in MediaPipe's pixel positions (handlib's + ½, as :func:`roi_grid` takes),
        side (D,), rotation (D,) radians in [−π, π).
    """
    kp = kp2d + 0.5
    d = ((kp[:, 5] + kp[:, 13]) / 2 + kp[:, 9]) / 2 - kp[:, 0]
    rotation = math.pi / 2 - torch.atan2(-d[:, 1], d[:, 0])
    rotation = rotation - 2 * math.pi * torch.floor((rotation + math.pi) / (2 * math.pi))
    p = kp[:, list(_PARTIAL)]
    mid = (p.amax(1) + p.amin(1)) / 2
    local = _rotate(p - mid[:, None], -rotation)  # (D, 12, 2) in the hand's upright frame
    lo, hi = local.amin(1), local.amax(1)
    size = hi - lo
    shift = torch.stack([torch.zeros_like(size[:, 1]), size[:, 1] * shift_y], -1)
    center = mid + _rotate(((lo + hi) / 2 + shift)[:, None], rotation)[:, 0]
    return center, size.amax(-1) * scale, rotation


@dataclasses.dataclass(frozen=True)
class HandsFound:
    """Tensors of :func:`find_hands` for D hands: kp2d (D, 21, 2) image pixels (centres at integers),
    world (D, 21, 3) metres (image axes), handedness (D,) P(right), presence (D,), palm_scores (D,),
    center (D, 2), side (D,), rotation (D,) the hand regions, crops (D, 3, 224, 224)."""

    kp2d: torch.Tensor
    world: torch.Tensor
    handedness: torch.Tensor
    presence: torch.Tensor
    palm_scores: torch.Tensor
    center: torch.Tensor
    side: torch.Tensor
    rotation: torch.Tensor
    crops: torch.Tensor


@dataclasses.dataclass(frozen=True)
class SecondLook:
    """A second look for hands that MediaPipe's single look misses (ours, not MediaPipe's).

    MediaPipe letterboxes the whole photo into the palm detector's 192×192 input, so a hand that is
    small in the frame, or lit unlike its training photos, can score below the palm threshold while
    the landmark network, shown that hand, is sure of it. Measured on the shared frames
    (``../shared/realdata/mmpose_testdata``): two FreiHAND hands score 0.23 and 0.48 as palms (threshold
    0.5) with presence 0.92 and 1.0; three InterHand hands score no palm above 0.1 in the whole frame,
    but 0.16–0.34 with presence 0.96–1.0 in windows of 0.75 × the frame's long side. So when the first
    look finds no hand, :func:`find_hands` looks again — palms down to
    ``min_detection``, in the whole photo and in its four corner windows of ``window`` × its long side,
    merged by weighted NMS — and keeps a new hand only if the landmark network's presence passes the
    same ``min_presence`` as the first look's and its landmarks are not a hand already kept.
    Only when the first look finds none: a second look costs four more palm passes and a landmark
    pass per candidate, and looking for a missing second hand on every one-hand photo found
    spurious small "hands" (presence 0.5–0.6) in two of the eight FreiHAND frames.
    """

    min_detection: float = 0.1  # palm score threshold of the second look (presence still gates)
    window: float = 0.75  # side of the corner windows, × the photo's long side
    same_hand: float = 0.15  # a new hand whose landmarks are this close (mean, × the found hand's box
    #                          side) to a found hand's is that hand again

    def __post_init__(self):
        if not 0.0 < self.min_detection < 1.0:
            raise ValueError(f"SecondLook.min_detection: expected in (0, 1), got {self.min_detection}")
        if not 0.0 < self.window <= 1.0:
            raise ValueError(f"SecondLook.window: expected in (0, 1], got {self.window}")
        if self.same_hand <= 0.0:
            raise ValueError(f"SecondLook.same_hand: expected > 0, got {self.same_hand}")

    def windows(self, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The squares to look in: the letterboxed photo, then its corner windows (duplicates once).

        Returns:
            centers (N, 2) and sides (N,), image pixels.
        """
        L = float(max(H, W))
        s = self.window * L
        xs = sorted({min(s, W) / 2, W - min(s, W) / 2})
        ys = sorted({min(s, H) / 2, H - min(s, H) / 2})
        centers = [(W / 2, H / 2)] + [(x, y) for y in ys for x in xs]
        sides = [L] + [s] * (len(centers) - 1)
        return torch.tensor(centers), torch.tensor(sides)


def _palms_in(image: torch.Tensor, palm: PalmDetector, centers: torch.Tensor, sides: torch.Tensor,
              min_score: float, max_detections: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Palms in N square windows of an image, merged (weighted NMS) in image pixels.

    Each window (zero outside the photo: MediaPipe's letterbox) is resized to the detector's input.
    With one window centred on the photo, of its long side, this is MediaPipe's palm stage.

    Returns:
        boxes (D, 4) (x_min, y_min, x_max, y_max), keypoints (D, 7, 2), scores (D,), best first.
    """
    _, H, W = image.shape
    centers, sides = centers.to(image), sides.to(image)
    grid = roi_grid(centers, sides, torch.zeros_like(sides), PALM_SIZE, H, W)
    windows = F.grid_sample(image[None].expand(len(sides), -1, -1, -1), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=False)
    boxes, keypoints, scores = palm.decode(windows)  # (N, A, ·), normalised to each window
    corner = centers - sides[:, None] / 2  # (N, 2)
    boxes = corner.repeat(1, 2)[:, None] + boxes * sides[:, None, None]
    keypoints = corner[:, None, None] + keypoints * sides[:, None, None, None]
    keep = scores >= min_score
    return weighted_nms(boxes[keep], keypoints[keep], scores[keep], palm.iou_threshold, max_detections)


def _hands_at(image: torch.Tensor, net: HandLandmarkNet, boxes: torch.Tensor, keypoints: torch.Tensor,
              scores: torch.Tensor, min_presence: float) -> HandsFound:
    """The landmark stage on palms (image pixels): rotated hand regions, landmarks, presence gate."""
    _, H, W = image.shape
    center, side, rotation = palm_to_roi(boxes, keypoints)
    if not len(side):
        return _no_hands(image)
    grid = roi_grid(center, side, rotation, LANDMARK_SIZE, H, W)
    crops = F.grid_sample(image[None].expand(len(side), -1, -1, -1), grid, mode="bilinear",
                          padding_mode="border", align_corners=False)
    out = net(crops)
    keep = out.presence >= min_presence
    kp = roi_to_image(out.landmarks[..., :2], center, side, rotation, LANDMARK_SIZE) - 0.5
    world = torch.cat([_rotate(out.world[..., :2], rotation), out.world[..., 2:]], -1)
    return HandsFound(kp[keep], world[keep], out.handedness[keep], out.presence[keep], scores[keep],
                      center[keep], side[keep], rotation[keep], crops[keep])


def _no_hands(image: torch.Tensor) -> HandsFound:
    z = image.new_zeros
    return HandsFound(z(0, 21, 2), z(0, 21, 3), z(0), z(0), z(0), z(0, 2), z(0), z(0), z(0, 3, 224, 224))


def _new_hands(found: HandsFound, more: HandsFound, same_hand: float, max_hands: int) -> HandsFound:
    """``found`` plus the hands of ``more`` (most present first) that are none of the hands kept so far,
    up to ``max_hands`` in all."""
    kept = [found.kp2d[i] for i in range(len(found.kp2d))]
    take = []
    for i in torch.argsort(more.presence, descending=True, stable=True).tolist():
        if len(kept) >= max_hands:
            break
        kp = more.kp2d[i]
        if any((kp - k).norm(dim=-1).mean() < same_hand * (k.amax(0) - k.amin(0)).max() for k in kept):
            continue
        kept.append(kp)
        take.append(i)
    idx = torch.tensor(take, dtype=torch.long, device=more.kp2d.device)
    return HandsFound(*(torch.cat([getattr(found, f.name), getattr(more, f.name)[idx]])
                        for f in dataclasses.fields(HandsFound)))


def find_hands(image: torch.Tensor, palm: PalmDetector, net: HandLandmarkNet, max_hands: int = 2,
               min_presence: float = 0.5, second_look: SecondLook | None = None) -> HandsFound:
    """MediaPipe's hand pipeline in torch (differentiable from the crops on).

    Args:
        image: (3, H, W) RGB in [0, 1] on the models' device.
        second_look: when the first look finds no hand, look again (:class:`SecondLook`); None:
            MediaPipe's single look.
    Returns:
        :class:`HandsFound` with D ≤ ``max_hands`` hands whose presence ≥ ``min_presence`` (the first
        look's first, in its order).
    """
    _, H, W = image.shape
    whole = (image.new_tensor([[W / 2, H / 2]]), image.new_tensor([float(max(H, W))]))
    palms = _palms_in(image, palm, *whole, palm.min_score, max_hands)
    found = _hands_at(image, net, *palms, min_presence)
    if second_look is None or len(found.kp2d):
        return found
    boxes, keypoints, scores = _palms_in(image, palm, *second_look.windows(H, W), second_look.min_detection,
                                         2 * max_hands + 2)
    seen = palms[0]  # palms the first look already showed the landmark network
    new = [i for i in range(len(scores))
           if not (len(seen) and (box_iou(boxes[i], seen) > palm.iou_threshold).any())]
    more = _hands_at(image, net, boxes[new], keypoints[new], scores[new], min_presence)
    return _new_hands(found, more, second_look.same_hand, max_hands)


_MODELS: dict = {}


def _models(path, device) -> tuple[PalmDetector, HandLandmarkNet]:
    key = (str(path or default_model_path()), str(device))
    if key not in _MODELS:
        _MODELS[key] = (PalmDetector.from_task(path).to(device).eval(),
                        HandLandmarkNet.from_task(path).to(device).eval())
    return _MODELS[key]


def detect_hands(image, max_hands: int = 2, min_detection: float = 0.5, min_presence: float = 0.5,
                 model_path=None, device=None, box_margin: float = 1.0,
                 second_look: SecondLook | None = None) -> list[HandDetection]:
    """Hands in a photo, like :class:`~handlib.evidence_pretrained.PretrainedEvidence` but in torch.

    Args:
        image: (H, W, 3) uint8 RGB array, or a (3, H, W) float tensor in [0, 1].
        max_hands: palms kept after non-maximum suppression. min_detection: palm score threshold.
        min_presence: the landmark network's hand-presence threshold.
        model_path: a .task (default: the cache). device: where to run (default: the tensor's or cpu).
        second_look: :class:`SecondLook` for the hands a single look misses; None (default): MediaPipe's
            single look, equal to the runtime's (:class:`HandFinder` turns it on).
    Returns:
        :class:`HandDetection` list, best handedness score first (as the runtime's conversion).
    """
    if isinstance(image, torch.Tensor):
        x = image.float() if device is None else image.float().to(device)
    else:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"image: expected (H, W, 3) uint8 RGB, got {arr.dtype} {arr.shape}")
        x = torch.from_numpy(np.array(arr)).to(device or "cpu").permute(2, 0, 1).float() / 255
    palm, net = _models(model_path, x.device)
    palm.min_score = min_detection
    with torch.no_grad():
        found = find_hands(x, palm, net, max_hands, min_presence, second_look)
    out = []
    for kp, world, p in zip(found.kp2d.double().cpu().numpy(), found.world.double().cpu().numpy(),
                            found.handedness.double().cpu().tolist()):
        side = "right" if p > 0.5 else "left"
        box = keypoint_box(kp, box_margin, MIN_BOX_SIDE)
        out.append(HandDetection(kp2d=kp, box=box, side=side, score=max(p, 1 - p), world=world))
    return sorted(out, key=lambda d: -d.score)


def _swap_sides(dets: list[HandDetection]) -> list[HandDetection]:
    other = {"left": "right", "right": "left"}
    return [dataclasses.replace(d, side=other[d.side]) for d in dets]


class HandFinder:
    """:func:`detect_hands` behind :class:`~handlib.evidence_pretrained.PretrainedEvidence`'s interface.

    ``with HandFinder() as finder: finder.detect(image)`` — what ``predict``, ``eval-real``, the fit
    benchmark and notebook 09 use by default. Needs torch and the checksummed ``.task`` only (not the
    ``mediapipe`` package); the two networks are read once per (model file, device). Unlike the
    runtime it takes a :class:`SecondLook` when the first finds no hand
    (``PretrainedConfig.second_look``, on by default).

    Args:
        cfg: :class:`~handlib.evidence_pretrained.PretrainedConfig` (thresholds, number of hands,
            ``swap_handedness``, ``box_margin``, ``model_path``, ``second_look``).
        device: where the networks run (default cpu).
        second_look: the second look's settings, used when ``cfg.second_look`` is on.
    Raises:
        FileNotFoundError naming the path (and how to fetch it) when the .task is absent.
    """

    def __init__(self, cfg: PretrainedConfig = PretrainedConfig(), device=None,
                 second_look: SecondLook = SecondLook()):
        self.cfg, self.device = cfg, torch.device(device or "cpu")
        self.second_look = second_look if cfg.second_look else None
        _models(cfg.model_path, self.device)  # read now: a missing file fails here, not on the first photo

    def detect(self, image) -> list[HandDetection]:
        """Hands in an (H, W, 3) uint8 RGB image, best first (empty when none is found)."""
        c = self.cfg
        dets = detect_hands(image, c.num_hands, c.min_detection_confidence, c.min_presence_confidence,
                            c.model_path, self.device, c.box_margin, self.second_look)
        return _swap_sides(dets) if c.swap_handedness else dets

    def close(self) -> None:
        """Nothing to release (the networks stay cached for the next finder)."""

    def __enter__(self) -> HandFinder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


RUNTIMES = ("torch", "mediapipe")


def open_detector(runtime: str = "torch", cfg: PretrainedConfig = PretrainedConfig(), device=None):
    """MediaPipe's hand pipeline, run by ``runtime``: "torch" (:class:`HandFinder`, the default) or
    "mediapipe" (:class:`~handlib.evidence_pretrained.PretrainedEvidence`, the mediapipe package's
    runtime, kept as the reference). Both have ``detect(image)``, ``close()`` and a with-block."""
    if runtime == "torch":
        return HandFinder(cfg, device)
    if runtime == "mediapipe":
        from .evidence_pretrained import PretrainedEvidence

        return PretrainedEvidence(cfg)
    raise ValueError(f"runtime: expected one of {RUNTIMES}, got {runtime!r}")
