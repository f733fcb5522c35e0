"""Figures and widgets. Every function returns a figure or widget and never calls ``show()``.

* plotly for interactive 3D (``mesh_figure``, lit from the viewer's side and facing the palm:
  ``hand_camera``, ``light_position``), matplotlib for static pictures (``overlay_2d``,
  ``mesh_views``, ``image_row``, ``curve``, ``loss_curves``, ``refinement_strip``), ipywidgets for
  explorers (``pose_explorer``, ``sigma_explorer``, ``refinement_stepper``).
"""
from __future__ import annotations

import numpy as np
import torch

from . import skeleton


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def weight_colors(lbs_weights) -> np.ndarray:
    """(V, 16) skinning weights → (V, 3) RGB: each joint a colour, blended by weight."""
    import matplotlib

    palette = matplotlib.colormaps["tab20"](np.arange(16))[:, :3]  # (16, 3)
    return _np(lbs_weights) @ palette


def _bone_lines(joints: np.ndarray):
    """Per finger, the polyline wrist → MCP → … → tip as (name, (n, 3 or 2)) pairs."""
    for name, idx in skeleton.FINGERS.items():
        yield name, joints[[skeleton.ROOT, *idx]]


# ---------------------------------------------------------------------------------- plotly -----
# Lighting. plotly's Mesh3d ``lightposition`` is not a point in data space: gl-mesh3d maps it
# through inverse(projection · view · model), so it is a point in *clip* coordinates and the light
# moves with the camera. With plotly's perspective (fovy 45°, zNear 0.01, zFar 1000), a clip z just
# above (far + near) / (far − near) = 1.00002 sends the point far *behind the viewer* (the homogeneous
# w changes sign, which also flips x and y): a light shining from the viewer's side whatever the view.
# A z below 1 puts it in front (at most grazing), which left the camera-facing side unlit.
_FOVY = np.pi / 4  # plotly's gl3d perspective: field of view, near and far planes
_ZNEAR, _ZFAR = 0.01, 1000.0
LIGHT_DIRECTION = (-0.45, 0.55, 1.0)  # to the light, viewer frame: x right, y up, z to the viewer
# ambient + diffuse·cos: a palm facing the viewer gets 0.3 + 0.8 · 0.81 ≈ 0.95 (not saturated, so
# fingers and knuckles that turn away darken and show their shape); sides facing away keep 0.3
MESH_LIGHTING = dict(ambient=0.3, diffuse=0.8, specular=0.15, roughness=0.5, fresnel=0.2)


def light_position(direction=LIGHT_DIRECTION) -> dict:
    """plotly ``lightposition`` for a distant light in ``direction`` as seen from the viewer.

    Args:
        direction: (3,) towards the light in the viewer's frame (x right, y up, z towards the
            viewer); z must be > 0 (a light from the viewer's side).
    Returns:
        dict(x, y, z) in plotly's clip coordinates (see the comment above ``LIGHT_DIRECTION``): the
        clip point (x, y, z, 1) un-projects to about 250 scene units behind the viewer along
        ``direction``, with the aspect of a square figure (a wider one tilts it a little sideways).
    """
    d = np.asarray(direction, np.float64)
    if d.shape != (3,) or not d[2] > 0:
        raise ValueError(f"direction: expected (3,) with z > 0 (towards the viewer), got {tuple(d)}")
    f = 1.0 / np.tan(_FOVY / 2)  # projection[0, 0] = projection[1, 1] at aspect 1
    z = (_ZFAR + _ZNEAR) / (_ZFAR - _ZNEAR) + 8e-5  # just past w = 0: far behind the eye
    return dict(x=float(-d[0] / d[2] * f), y=float(-d[1] / d[2] * f), z=float(z))


def _boundary_centroid(v: np.ndarray, f: np.ndarray):
    """Centroid of the vertices on edges used by one face only (MANO's and OpenHand's open wrist)."""
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)  # (3F, 2)
    uniq, count = np.unique(e, axis=0, return_counts=True)
    rim = np.unique(uniq[count == 1])
    return v[rim].mean(0) if len(rim) else None


def palm_frame(verts, faces=None, joints=None):
    """The hand's palm normal and finger direction, from its keypoints or from the mesh alone.

    Normal: with ``joints``, (index MCP − wrist) × (pinky MCP − wrist), which leaves the palm of a
    right hand; else the vertices' direction of least spread (the palm of a flat hand). Fingers:
    middle MCP − wrist with ``joints``, else from the mesh's open rim (the wrist) to its centroid,
    else the direction of largest spread; made orthogonal to the normal.

    Args:
        verts: (V, 3). faces: optional (F, 3). joints: optional (21, 3) keypoints, handlib order.
    Returns:
        (normal, fingers): two orthonormal (3,) arrays.
    """
    v = _np(verts).astype(np.float64)
    c = v.mean(0)
    _, _, axes = np.linalg.svd(v - c, full_matrices=False)  # rows: largest → least spread
    wrist = None
    if joints is not None:
        j = _np(joints).astype(np.float64)
        wrist = j[skeleton.ROOT]
        n = np.cross(j[skeleton.FINGERS["index"][0]] - wrist, j[skeleton.FINGERS["pinky"][0]] - wrist)
        fingers = j[skeleton.MIDDLE_MCP] - wrist
    else:
        n = axes[2]
        if faces is not None:
            wrist = _boundary_centroid(v, _np(faces))
        fingers = c - wrist if wrist is not None else axes[0]
    if np.linalg.norm(n) < 1e-12:  # wrist and MCPs in a line: fall back on the mesh's thinnest axis
        n = axes[2]
    n = n / np.linalg.norm(n)
    fingers = fingers - (fingers @ n) * n
    if np.linalg.norm(fingers) < 1e-9:  # degenerate: any direction in the palm plane
        fingers = axes[0] - (axes[0] @ n) * n
    return n, fingers / np.linalg.norm(fingers)


def hand_camera(verts, faces=None, joints=None, points=None) -> dict:
    """A plotly scene camera that faces the palm or the back of the hand, fingers up.

    The eye looks along the palm normal (:func:`palm_frame`), from the side a camera at the origin
    sees when every vertex is in front of it (camera space: the side the photo shows), else from
    −y (MANO's model frame, where the palm of the rest hand faces −y). Its distance frames the
    hand with a margin, for a figure with ``scene.aspectmode="data"``.

    Args:
        verts: (V, 3) the hand to face. faces: optional (F, 3). joints: optional (21, 3) keypoints.
        points: optional (N, 3) everything the scene holds (default ``verts``): plotly scales the
            scene box by its extent.
    Returns:
        dict(eye, up, center) for ``fig.update_layout(scene_camera=...)``.
    """
    v = _np(verts).astype(np.float64)
    v = v[np.isfinite(v).all(1)]  # a diverged prediction may hold NaNs: frame what is left
    if len(v) < 3:
        return dict(eye=dict(x=0.0, y=0.0, z=-2.0), up=dict(x=0.0, y=-1.0, z=0.0))  # as a camera sees
    if joints is not None and not np.isfinite(_np(joints)).all():
        joints = None
    n, up = palm_frame(v, faces if len(v) == len(_np(verts)) else None, joints)
    in_front = bool((v[:, 2] > 0).all())
    toward = -v.mean(0) if in_front else np.array([0.0, -1.0, 0.0])
    if n @ toward < 0:
        n = -n
    # plotly's "data" aspect: the scene box spans each axis' range / the ranges' geometric mean
    # (+ 1/32 padding per side); eye and up are in those units, centred on the box
    p = v if points is None else np.concatenate([v, _np(points).reshape(-1, 3)])
    p = p[np.isfinite(p).all(1)]
    lo, hi = p.min(0), p.max(0)
    rng = np.maximum(hi - lo, 1e-9)
    scale = np.exp(np.log(rng).mean())  # geometric mean
    q = (v - (lo + hi) / 2) / scale
    half = max(np.abs(q @ up).max(), np.abs(q @ np.cross(up, n)).max())  # half-extent facing the eye
    dist = 1.4 * half / np.tan(_FOVY / 2) + np.abs(q @ n).max()
    eye = n * dist
    return dict(eye=dict(x=float(eye[0]), y=float(eye[1]), z=float(eye[2])),
                up=dict(x=float(up[0]), y=float(up[1]), z=float(up[2])), center=dict(x=0.0, y=0.0, z=0.0))


def _scene_points(fig) -> np.ndarray:
    """(N, 3) every x, y, z point of a figure's 3D traces."""
    pts = [np.stack([np.asarray(t.x, float), np.asarray(t.y, float), np.asarray(t.z, float)], 1)
           for t in fig.data if getattr(t, "z", None) is not None]
    return np.concatenate(pts) if pts else np.zeros((0, 3))


def mesh_figure(verts, faces, joints=None, color: str = "#e0ac8a", opacity: float = 1.0,
                title: str | None = None, fig=None, vertex_colors=None, camera: dict | None = None):
    """Interactive 3D mesh with an optional skeleton, lit from the viewer's side and facing the palm.

    Args:
        verts: (V, 3) vertices. faces: (F, 3). joints: optional (21, 3) keypoints (handlib order).
        fig: an existing ``go.Figure``/``go.FigureWidget`` to add the traces to.
        vertex_colors: optional (V, 3) RGB in [0, 1] per vertex (e.g. skinning weights).
        camera: plotly scene camera; default :func:`hand_camera` of this mesh (and joints).
    Returns:
        plotly Figure; the mesh trace is ``fig.data[0]``.
    """
    import plotly.graph_objects as go

    v, f = _np(verts), _np(faces)
    fig = fig if fig is not None else go.Figure()
    colors = {"color": color} if vertex_colors is None else {
        "vertexcolor": [f"rgb({r:.0f},{g:.0f},{b:.0f})" for r, g, b in 255 * _np(vertex_colors)]}
    fig.add_trace(go.Mesh3d(x=v[:, 0], y=v[:, 1], z=v[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2],
                            **colors, opacity=opacity, flatshading=False, name="mesh",
                            lighting=MESH_LIGHTING, lightposition=light_position()))
    if joints is not None:
        j = _np(joints)
        for name, line in _bone_lines(j):
            fig.add_trace(go.Scatter3d(x=line[:, 0], y=line[:, 1], z=line[:, 2], mode="lines+markers",
                                       line=dict(color=skeleton.FINGER_COLORS[name], width=6),
                                       marker=dict(size=3), name=name))
    if camera is None:
        camera = hand_camera(v, f, joints, points=_scene_points(fig))
    fig.update_layout(title=title, showlegend=joints is not None, margin=dict(l=0, r=0, t=30, b=0),
                      scene=dict(aspectmode="data", camera=camera))
    return fig


# ------------------------------------------------------------------------------ matplotlib -----
def overlay_2d(image=None, kp2d=None, mask=None, ax=None, title: str | None = None,
               valid=None, image_size=None):
    """Keypoints (and mask) drawn over an image.

    Args:
        image: (H, W, 3) uint8 or float in [0, 1], or None (blank canvas of ``image_size``).
        kp2d: (21, 2) pixel coordinates in handlib order. mask: (H, W) bool/float.
        valid: (21,) bool; invalid keypoints are not drawn.
    Returns:
        matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(4, 4))
        plt.close(fig)  # returned, not auto-shown: Jupyter displays it once
    else:
        fig = ax.figure
    if image is not None:
        ax.imshow(_np(image))
    elif image_size is not None:
        ax.set_xlim(-0.5, image_size[1] - 0.5)
        ax.set_ylim(image_size[0] - 0.5, -0.5)
    if mask is not None:
        m = _np(mask).astype(float)
        ax.imshow(np.ma.masked_where(m < 0.5, m), cmap="cool", alpha=0.35, vmin=0, vmax=1)
    if kp2d is not None:
        kp = _np(kp2d)
        ok = np.ones(21, bool) if valid is None else _np(valid).astype(bool)
        for name, idx in skeleton.FINGERS.items():
            chain = [skeleton.ROOT, *idx]
            for a, b in zip(chain[:-1], chain[1:]):
                if ok[a] and ok[b]:
                    ax.plot(kp[[a, b], 0], kp[[a, b], 1], "-", color=skeleton.FINGER_COLORS[name], lw=2)
        ax.scatter(kp[ok, 0], kp[ok, 1], s=10, c="white", edgecolors="black", linewidths=0.5, zorder=3)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def image_row(images, titles=None, cmap: str | None = "gray", vmin=None, vmax=None, symmetric: bool = False,
              polygons=None, size: float = 3.0, colorbar: bool = False):
    """A row of images side by side.

    Args:
        images: sequence of (H, W) or (H, W, 3) arrays/tensors (bool, float or uint8).
        titles: optional sequence of panel titles.
        cmap, vmin, vmax: for single-channel panels; ``symmetric`` centres the range on 0
            (for signed maps such as gradients).
        polygons: optional per-panel sequences of (n, 2) pixel polygons to outline (e.g. triangles).
        size: panel width in inches. colorbar: add a colour bar to each single-channel panel.
    Returns:
        matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(size * n, size), squeeze=False)
    plt.close(fig)  # returned, not auto-shown
    for i, (ax, img) in enumerate(zip(axes[0], images)):
        a = _np(img)
        a = a.astype(float) if a.dtype == bool else a
        lo, hi = vmin, vmax
        if symmetric:
            hi = float(np.nanmax(np.abs(a))) or 1.0
            lo = -hi
        im = ax.imshow(a, cmap=cmap if a.ndim == 2 else None, vmin=lo, vmax=hi)
        for poly in (polygons[i] if polygons is not None else ()):
            ax.add_patch(plt.Polygon(_np(poly), fill=False, color="tab:red"))
        if titles is not None:
            ax.set_title(titles[i])
        if colorbar and a.ndim == 2:
            fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def curve(values, xlabel: str = "step", ylabel: str = "", title: str | None = None, logy: bool = False):
    """A line plot of a sequence (loss curves). Returns a matplotlib Figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    plt.close(fig)
    ax.plot(_np(values))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, yscale="log" if logy else "linear")
    fig.tight_layout()
    return fig


def _shaded_polys(v: np.ndarray, f: np.ndarray, light=(0.3, -0.5, -0.8)):
    tri = v[f]  # (F, 3, 3)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    light = np.asarray(light) / np.linalg.norm(light)
    return tri, np.clip(n @ light, 0, 1)


def mesh_views(verts, faces, joints=None, views=("palm", "back", "side"), color=(0.88, 0.67, 0.54),
               title: str | None = None):
    """Static shaded pictures of a hand mesh from several directions (painter's algorithm).

    Args:
        verts: (V, 3) in MANO's model frame or camera space; faces (F, 3); joints (21, 3) optional.
        views: any of "palm" (looking along +y), "back" (−y), "side" (looking along +z), "camera"
            (along +z with y down, as a camera sees camera-space points).
    Returns:
        matplotlib Figure with one panel per view.
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    v, f = _np(verts).astype(np.float64), _np(faces)
    # view → (rotation taking points to a viewer frame with x right, y up, z towards the viewer)
    R = {"palm": np.array([[-1, 0, 0], [0, 0, 1], [0, 1, 0]]),  # palm faces −y: look from −y
         "back": np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]]),
         "side": np.array([[-1, 0, 0], [0, -1, 0], [0, 0, -1]]),
         "camera": np.array([[1, 0, 0], [0, -1, 0], [0, 0, -1]])}
    fig, axes = plt.subplots(1, len(views), figsize=(3.2 * len(views), 3.4), squeeze=False)
    plt.close(fig)  # returned, not auto-shown
    for ax, name in zip(axes[0], views):
        p = (v - v.mean(0)) @ R[name].T
        tri, shade = _shaded_polys(p, f, light=(0.2, 0.4, 1.0))
        front = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2] > 0
        order = np.argsort(tri[:, :, 2].mean(1))  # far to near
        order = order[front[order]]
        cols = np.clip(np.asarray(color)[None] * (0.35 + 0.65 * shade[order, None]), 0, 1)
        ax.add_collection(PolyCollection(tri[order, :, :2], facecolors=cols, edgecolors="none"))
        if joints is not None:
            j = (_np(joints) - v.mean(0)) @ R[name].T
            for fname, line in _bone_lines(j):
                ax.plot(line[:, 0], line[:, 1], "-o", ms=2, lw=1.2, color=skeleton.FINGER_COLORS[fname])
        ax.set_aspect("equal")
        ax.autoscale_view()
        ax.set_title(name)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------- widgets ------
def pose_explorer(model, pose_library: dict | None = None):
    """An ipywidgets explorer: a slider per finger-joint axis and per shape direction.

    Joints are grouped per finger in tabs (3 joints × 3 axis-angle components); the shape tab
    holds one slider per β in [−3, 3] σ. A dropdown loads named poses. The mesh is a plotly
    FigureWidget updated in place.

    Args:
        model: a :class:`handlib.HandModel` (use ``flat_hand_mean=True`` to start from a flat hand).
        pose_library: optional {name: (45,) axis-angle}.
    Returns:
        (widget, state): the ipywidgets VBox to display, and a dict with ``pose_sliders``
        (15×3 list), ``shape_sliders``, ``figure``, ``update()`` for programmatic use and tests.
    """
    import ipywidgets as W
    import plotly.graph_objects as go

    dtype = model.v_template.dtype
    joint_names = skeleton.MANO_JOINT_NAMES[1:]
    pose_sliders = [[W.FloatSlider(value=0.0, min=-1.6, max=1.6, step=0.02, description=f"{n} {ax}",
                                   continuous_update=False, layout=W.Layout(width="320px"))
                     for ax in "xyz"] for n in joint_names]
    shape_sliders = [W.FloatSlider(value=0.0, min=-3.0, max=3.0, step=0.1, description=f"β{i}",
                                   continuous_update=False) for i in range(model.num_betas)]
    with torch.no_grad():
        out = model()
    fig = go.FigureWidget(mesh_figure(out.verts[0], model.faces, out.joints[0]))

    def params():
        pose = torch.tensor([[s.value for s in row] for row in pose_sliders], dtype=dtype).reshape(1, 45)
        betas = torch.tensor([[s.value for s in shape_sliders]], dtype=dtype)
        return pose, betas

    def update(*_):
        pose, betas = params()
        with torch.no_grad():
            o = model(pose=pose, betas=betas)
        v, j = o.verts[0].numpy(), o.joints[0].numpy()
        with fig.batch_update():
            fig.data[0].x, fig.data[0].y, fig.data[0].z = v[:, 0], v[:, 1], v[:, 2]
            for trace, (_, line) in zip(fig.data[1:], _bone_lines(j)):
                trace.x, trace.y, trace.z = line[:, 0], line[:, 1], line[:, 2]
        return o

    for s in [s for row in pose_sliders for s in row] + shape_sliders:
        s.observe(update, names="value")
    fingers = {"index": (0, 1, 2), "middle": (3, 4, 5), "pinky": (6, 7, 8), "ring": (9, 10, 11),
               "thumb": (12, 13, 14)}
    tabs = W.Tab(children=[W.VBox([s for j in idx for s in pose_sliders[j]]) for idx in fingers.values()]
                 + [W.VBox(shape_sliders)])
    for i, name in enumerate([*fingers, "shape"]):
        tabs.set_title(i, name)
    children = [tabs]
    if pose_library:
        dd = W.Dropdown(options=["(sliders)", *pose_library], description="pose")

        def load(change):
            if change["new"] in pose_library:
                values = np.asarray(pose_library[change["new"]]).reshape(15, 3)
                for row, vals in zip(pose_sliders, values):
                    for s, val in zip(row, vals):
                        s.unobserve(update, names="value")
                        s.value = float(val)
                        s.observe(update, names="value")
                update()

        dd.observe(load, names="value")
        children.insert(0, dd)
    box = W.VBox([W.HBox([W.VBox(children), fig])])
    return box, {"pose_sliders": pose_sliders, "shape_sliders": shape_sliders, "figure": fig,
                 "update": update}


def sigma_explorer(verts, faces, K, image_size, sigma: float = 1e-4, exponents=(-7.0, -1.0),
                   step: float = 0.25, width: int = 256):
    """An ipywidgets slider over SoftRas' blur σ (log scale) with the soft silhouette it gives.

    The slider opens at ``sigma``, the value the calling code shows.

    Args:
        verts: (B, V, 3) camera-space vertices (the first mesh is drawn). faces: (F, 3). K: (B, 3, 3)
            or (3, 3) intrinsics, pixels. image_size: (H, W) or an int.
        sigma: the starting σ, squared NDC units (``render.soft_silhouette``'s).
        exponents: (min, max) of log10 σ on the slider. step: slider step in log10 σ.
        width: picture width, pixels.
    Returns:
        (widget, state): the ipywidgets VBox to display, and a dict with ``slider``
        (``FloatLogSlider``; its value is σ), ``picture`` (``ipywidgets.Image``, PNG bytes) and
        ``update()``.
    """
    import io

    import ipywidgets as W
    import matplotlib.pyplot as plt

    from . import render

    lo, hi = exponents
    if not (sigma > 0 and 10.0 ** lo <= sigma <= 10.0 ** hi):
        raise ValueError(f"sigma: expected a value in [1e{lo:g}, 1e{hi:g}], got {sigma}")
    slider = W.FloatLogSlider(value=sigma, base=10, min=lo, max=hi, step=step, description="σ (NDC²)",
                              continuous_update=False, readout_format=".1e")
    picture = W.Image(format="png", width=width)

    def update(*_):
        with torch.no_grad():
            A = render.soft_silhouette(verts, faces, K, image_size, sigma=slider.value)[0]  # (H, W)
        buf = io.BytesIO()
        plt.imsave(buf, _np(A), cmap="gray", vmin=0, vmax=1, format="png")
        picture.value = buf.getvalue()

    slider.observe(update, names="value")
    update()
    return W.VBox([slider, picture]), {"slider": slider, "picture": picture, "update": update}


# ------------------------------------------------------------------ Eq. 13 refinement --------
def loss_curves(logs, keys=None, xlabel: str = "step", ylabel: str = "", title: str | None = None,
                logy: bool = False):
    """One line per logged quantity, with a legend (e.g. ``RefineResult.losses``).

    Args:
        logs: sequence of dicts {name: float}, one per step.
        keys: names to draw (default: every key of the first dict, in order).
    Returns:
        matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    logs = list(logs)
    if not logs:
        raise ValueError("logs: expected at least one dict of values")
    keys = list(logs[0]) if keys is None else list(keys)
    fig, ax = plt.subplots(figsize=(5, 3))
    plt.close(fig)
    for k in keys:
        ax.plot([d[k] for d in logs], label=k, lw=2.5 if k == "total" else 1.5)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, yscale="log" if logy else "linear")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _row(x, name: str, shape: tuple, index: int):
    """``x[index]`` of a batched (B, *shape) array or tensor, with a loud shape error."""
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name}: expected shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
    return x[index]


class _RefineFrames:
    """The geometry of one sample of a :class:`~handlib.refine.RefineResult` at its recorded steps:
    projected joints (21, 2) and the model renderer's soft silhouette R(h) (S, S), cached per step."""

    def __init__(self, model, result, image, K, index: int, target, valid):
        from .refine import RefineResult

        if not isinstance(result, RefineResult):
            raise TypeError(f"result: expected a RefineResult, got {type(result).__name__}")
        B = result.h.shape[0]
        if not 0 <= index < B:
            raise ValueError(f"index: expected a sample in [0, {B}), got {index}")
        self.model, self.result, self.index = model, result, index
        h, S = result.h, model.cfg.image_size
        if len(image) != B or len(K) != B:
            raise ValueError(f"image, K: expected the batch of the result (B = {B}), "
                             f"got {len(image)} and {len(K)}")
        self.image = _np(_row(image, "image", (S, S, 3), index))
        if self.image.dtype != np.uint8:
            self.image = np.clip(self.image, 0.0, 1.0)
        self.K = _row(torch.as_tensor(K), "K", (3, 3), index).to(h.device, h.dtype)
        self.has_target = target is not None
        ref = result.target if target is None else torch.as_tensor(target)
        self.target = _row(ref, "target", (21, 2), index).to(h.device, h.dtype)
        self.valid = (None if valid is None
                      else _row(torch.as_tensor(valid), "valid", (21,), index).bool().to(h.device))
        self._cache: dict = {}

    def __call__(self, step: int):
        if step not in self._cache:
            from .camera import project

            if step not in self.result.steps:
                raise ValueError(f"step {step} was not recorded; recorded steps: {self.result.steps}")
            h = self.result.trajectory[self.result.steps.index(step)][self.index]  # (63,)
            with torch.no_grad():
                mesh = self.model.hand_model.from_h(h[None])
                j2d = project(mesh.joints, self.K[None])[0]  # (21, 2)
                sil = self.model.renderer(mesh.verts, self.K[None])[0]  # (S, S) R(h)
            d = (j2d - self.target).norm(dim=-1)  # (21,) px
            err = float(d[self.valid].mean() if self.valid is not None else d.mean())
            self._cache[step] = (j2d, sil, err)
        return self._cache[step]

    def draw(self, ax, step: int, title: str | None = None):
        j2d, sil, err = self(step)
        overlay_2d(self.image, j2d, ax=ax, valid=self.valid,
                   title=title if title is not None else f"step {step}: {err:.1f} px")
        s = _np(sil)
        if s.min() < 0.5 < s.max():  # outline of R(h) at its half level
            ax.contour(s, levels=[0.5], colors="cyan", linewidths=1.2)
        t = _np(self.target)
        ax.scatter(t[:, 0], t[:, 1], marker="x", c="red", s=16, linewidths=1.0, zorder=4)
        return err

    def readout(self, step: int) -> str:
        _, _, err = self(step)
        log = self.result.losses[step]
        ref = "the given target" if self.has_target else "result.target, the last step's target"
        terms = "\n".join(f"  {k:9s} {log[k]:.4g}" for k in ("joints", "feature", "laplacian", "total"))
        return (f"step {step} of {self.result.steps[-1]}\n"
                f"Eq. 13, λ·L (batch mean):\n{terms}\n"
                f"sample {self.index}: 2D error {err:.2f} px\n  (projected joints vs {ref})")


def refinement_strip(model, result, image, K, index: int = 0, steps=None, n: int = 4, target=None,
                     valid=None, size: float = 2.6):
    """Chosen steps of an Eq. 13 refinement side by side, for one sample of the batch.

    Each panel: the crop, the projected skeleton π(j3D(h)), the outline (0.5 level) of the soft
    silhouette R(h) (cyan), the 2D target (red crosses) and the mean 2D error in the title.

    Args:
        model: the :class:`~handlib.model.DHPE` that was refined (its hand model and renderer).
        result: :class:`~handlib.refine.RefineResult` of a batch.
        image: (B, S, S, 3) the refined batch's crops in [0, 1] or uint8
            (``data.batch.denormalize_image(x)``). K: (B, 3, 3) their crop intrinsics.
        index: the sample of the batch to draw (the whole batch is passed, so that the crop, K and
            the trajectory cannot come from different samples).
        steps: recorded steps to draw (in ``result.steps``); default ``n`` evenly spaced ones,
            the first and the last included.
        target: optional (B, 21, 2) pixels to measure the error against and to mark (e.g. the
            ground truth); default the refined target ``result.target``.
        valid: optional (B, 21) keypoints that count. size: panel side, inches.
    Returns:
        matplotlib Figure with one axes per step.
    """
    import matplotlib.pyplot as plt

    frames = _RefineFrames(model, result, image, K, index, target, valid)
    if steps is None:
        rec = result.steps
        steps = sorted({rec[int(round(i))] for i in np.linspace(0, len(rec) - 1, min(n, len(rec)))})
    steps = list(steps)
    if not steps:
        raise ValueError("steps: expected at least one step")
    fig, axes = plt.subplots(1, len(steps), figsize=(size * len(steps), size + 0.3), squeeze=False)
    plt.close(fig)  # returned, not auto-shown
    for ax, step in zip(axes[0], steps):
        frames.draw(ax, step, title=f"step {step}: {frames(step)[2]:.1f} px\n"
                                    f"E = {result.losses[step]['total']:.3g}")
    fig.tight_layout()
    return fig


def refinement_stepper(model, result, image, K, index: int = 0, target=None, valid=None,
                       size: float = 3.5):
    """An ipywidgets stepper through the recorded steps of an Eq. 13 refinement (one sample).

    A slider picks a recorded step; the picture (a PNG re-drawn with matplotlib) shows the crop with
    the projected skeleton, the outline of the rendered silhouette R(h) and the 2D target, and a
    readout lists the weighted Eq. 13 terms at that step (batch means, ``result.losses``) and the
    sample's mean 2D error. Frames are computed when first shown and cached.

    Args:
        model, result, image, K, index, target, valid: as :func:`refinement_strip`.
        size: picture side, inches.
    Returns:
        (widget, state): the ipywidgets VBox to display, and a dict with ``slider`` (its value is a
        step number), ``picture`` (``ipywidgets.Image``), ``readout`` (``ipywidgets.HTML``),
        ``errors()`` (step → 2D error, px, for every recorded step) and ``update()``.
    """
    import html
    import io

    import ipywidgets as W
    import matplotlib.pyplot as plt

    frames = _RefineFrames(model, result, image, K, index, target, valid)
    slider = W.SelectionSlider(options=list(result.steps), value=result.steps[0], description="step",
                               continuous_update=False, layout=W.Layout(width="420px"))
    picture = W.Image(format="png", width=int(72 * size))
    readout = W.HTML()

    def update(*_):
        step = slider.value
        fig, ax = plt.subplots(figsize=(size, size))
        plt.close(fig)
        frames.draw(ax, step)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=72)
        picture.value = buf.getvalue()
        readout.value = f"<pre>{html.escape(frames.readout(step))}</pre>"

    def errors() -> dict:
        return {s: frames(s)[2] for s in result.steps}

    slider.observe(update, names="value")
    update()
    box = W.VBox([slider, W.HBox([picture, readout])])
    return box, {"slider": slider, "picture": picture, "readout": readout, "errors": errors,
                 "update": update}
