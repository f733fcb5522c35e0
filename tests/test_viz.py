"""What a student sees first: 3D hands face the viewer and are lit from the viewer's side; widgets
open at the values their code shows."""
import numpy as np
import pytest
import torch

from handlib import HandModel, viz
from handlib.hand_model import pack_h


def _angle(a, b) -> float:
    """Angle between two vectors, degrees."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


def _vec(d: dict) -> np.ndarray:
    return np.array([d["x"], d["y"], d["z"]], float)


def _unproject(lightposition: dict, aspect: float = 1.0) -> np.ndarray:
    """The eye-space point (x right, y up, z towards the viewer) of plotly's clip-space lightposition:
    gl-mesh3d multiplies (x, y, z, 1) by inverse(projection · view · model); the OpenGL perspective of
    gl-plot3d (fovy 45°, zNear 0.01, zFar 1000), written out here independently of handlib."""
    n, f, t = 0.01, 1000.0, np.tan(np.pi / 8)
    P = np.array([[1 / (t * aspect), 0, 0, 0], [0, 1 / t, 0, 0],
                  [0, 0, -(f + n) / (f - n), -2 * f * n / (f - n)], [0, 0, -1, 0]])
    p = np.linalg.inv(P) @ np.array([*_vec(lightposition), 1.0])
    return p[:3] / p[3]


@pytest.fixture(scope="module")
def rest():
    model = HandModel(flat_hand_mean=True, dtype=torch.float64)
    return model, model.v_template.numpy(), model().joints[0].numpy()


def test_default_camera_faces_the_palm_fingers_up(rest):
    model, v, j = rest
    faces = model.faces.numpy()
    # OpenHand at rest lies in MANO's x-z plane: the palm faces −y, the fingers point to −x
    for joints in (j, None):  # from the keypoints, and from the mesh alone
        cam = viz.mesh_figure(v, faces, joints).layout.scene.camera
        eye, up = _vec(cam.eye.to_plotly_json()), _vec(cam.up.to_plotly_json())
        tol = 2 if joints is not None else 15  # the thumb tilts the mesh's own least-spread axis 10°
        assert _angle(eye, [0, -1, 0]) < tol, eye  # palm-on, not edge-on (the old eye was at −z: 90°)
        assert _angle(up, [-1, 0, 0]) < tol, up  # wrist at the bottom, fingers up
        assert abs(up @ eye) < 1e-9  # a proper camera: up ⟂ the viewing direction


def test_camera_space_hand_is_seen_from_the_camera_side(rest):
    model, _, _ = rest
    for angle in (0.6, 2.5):  # palm half towards the camera, then the back
        q = torch.tensor([[np.cos(angle), np.sin(angle), 0.0, 0.0]], dtype=torch.float64)  # about x
        zeros = lambda n: torch.zeros(1, n, dtype=torch.float64)  # noqa: E731
        t = torch.tensor([[0.02, -0.01, 0.5]], dtype=torch.float64)  # half a metre in front of the camera
        out = model.from_h(pack_h(q, zeros(45), zeros(10), zeros(1) + 1, t))
        v, j = out.verts[0].numpy(), out.joints[0].numpy()
        assert (v[:, 2] > 0).all()  # in front of the camera: camera space
        n = np.cross(j[5] - j[0], j[17] - j[0])  # palm normal from the index and pinky MCPs
        for joints in (j, None):
            eye = _vec(viz.hand_camera(v, model.faces.numpy(), joints)["eye"])
            assert min(_angle(eye, n), _angle(eye, -n)) < (1 if joints is not None else 15)  # face-on
            assert eye @ -v.mean(0) > 0  # from the side the camera (at the origin) sees


def test_camera_frames_the_hand(rest):
    """Every vertex inside the 45° field of view, and the hand not a speck in the middle."""
    model, v, j = rest
    cam = viz.hand_camera(v, model.faces.numpy(), j)
    eye, up = _vec(cam["eye"]), _vec(cam["up"])
    lo, hi = v.min(0), v.max(0)
    q = (v - (lo + hi) / 2) / np.exp(np.log(hi - lo).mean())  # plotly's "data" aspect units
    back = eye / np.linalg.norm(eye)
    right = np.cross(up, back)
    rel = q - eye
    depth = -(rel @ back)
    assert (depth > 0).all()
    tan = np.maximum(np.abs(rel @ up), np.abs(rel @ right)) / depth
    assert tan.max() < np.tan(np.pi / 8) and tan.max() > 0.5 * np.tan(np.pi / 8)


def test_camera_survives_a_diverged_mesh(rest):
    model, v, j = rest
    v = v.copy()
    v[:5] = np.nan
    eye = _vec(viz.mesh_figure(v, model.faces, j).layout.scene.camera.eye.to_plotly_json())
    assert np.isfinite(eye).all() and _angle(eye, [0, -1, 0]) < 2
    cam = viz.hand_camera(np.full((4, 3), np.nan))
    assert cam["eye"] == {"x": 0.0, "y": 0.0, "z": -2.0}  # nothing to face: as a camera sees


def test_light_comes_from_the_viewer_side(rest):
    model, v, j = rest
    trace = viz.mesh_figure(v, model.faces, j).data[0]
    lp = trace.lightposition.to_plotly_json()
    assert lp == viz.light_position()
    for aspect in (1.0, 2.5):  # a square figure, and a wide notebook cell
        p = _unproject(lp, aspect)
        assert p[2] > 50  # far behind the viewer: a distant light on the camera's side
        assert _angle(p, [0, 0, 1]) < 60 and p[0] < 0 < p[1]  # from the front, upper left
    p = _unproject(viz.light_position((0.3, -0.2, 1.0)))
    assert np.allclose(p / p[2], [0.3, -0.2, 1.0])  # any direction, exactly (square figure)
    assert _unproject({"x": 0, "y": -100, "z": -200})[2] < 0  # the old setting: in front, lit the far side
    light = trace.lighting
    cos = 1 / np.linalg.norm(viz.LIGHT_DIRECTION)  # a face turned to the viewer
    assert 0.2 <= light.ambient and light.ambient + light.diffuse * cos <= 1.0  # shaded, not saturated
    with pytest.raises(ValueError, match="z > 0"):
        viz.light_position((0, 0, -1))


@pytest.mark.parametrize("sigma", [1e-4, 3e-3, 1e-6])
def test_sigma_explorer_opens_at_its_argument(rest, sigma):
    model, v, _ = rest
    from handlib.camera import intrinsics

    verts = torch.as_tensor(v)[None] + torch.tensor([0.0, 0.0, 0.4], dtype=torch.float64)
    K = intrinsics(60.0, 15.5, 15.5, dtype=torch.float64)
    box, state = viz.sigma_explorer(verts, model.faces, K, 32, sigma=sigma)
    assert state["slider"].value == sigma and state["slider"].get_state()["value"] == sigma
    shown = state["picture"].value
    assert shown[:4] == b"\x89PNG"
    state["slider"].value = 1e-1
    assert state["picture"].value != shown
    state["slider"].value = sigma
    assert state["picture"].value == shown


def test_sigma_explorer_rejects_a_value_off_the_slider(rest):
    model, v, _ = rest
    with pytest.raises(ValueError, match="sigma"):
        viz.sigma_explorer(torch.as_tensor(v)[None], model.faces, torch.eye(3), 16, sigma=1.0)
