from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worldenv import geometry as G
from worldenv.controls import (
    DISCRETE_ACTIONS,
    ContinuousControls,
    DiscreteControls,
    PoseControls,
    make_controls,
    pitch_of,
    yaw_of,
)

A = {name: i for i, name in enumerate(DISCRETE_ACTIONS)}


def start_pose(yaw_deg: float = 0.0, pitch_deg: float = 0.0, t=(1.0, -1.5, 2.0)) -> np.ndarray:
    R = G.rot_y(math.radians(yaw_deg)) @ G.rot_x(math.radians(pitch_deg))
    return G.se3(R, t)


def run(controls, pose, actions):
    for a in actions:
        pose = controls.step(pose, a)
    return pose


def test_discrete_space_and_habitat_order():
    c = DiscreteControls()
    assert c.action_space.n == 9
    assert DISCRETE_ACTIONS[:4] == ("stop", "move_forward", "turn_left", "turn_right")
    assert c.is_stop(0) and not c.is_stop(1)
    habitat = DiscreteControls(actions=("stop", "move_forward", "turn_left", "turn_right"))
    assert habitat.action_space.n == 4


def test_forward_moves_along_heading():
    c = DiscreteControls()
    P0 = start_pose(yaw_deg=90.0)  # looking along world +x
    P1 = c.step(P0, A["move_forward"])
    np.testing.assert_allclose(P1[:3, 3] - P0[:3, 3], [0.25, 0, 0], atol=1e-12)
    np.testing.assert_allclose(P1[:3, :3], P0[:3, :3], atol=1e-12)
    P2 = c.step(P0, A["strafe_right"])
    # Right of a camera looking along +x with y down is y x x = -z.
    np.testing.assert_allclose(P2[:3, 3] - P0[:3, 3], [0, 0, -0.25], atol=1e-12)


def test_looking_down_does_not_dig_into_floor():
    c = DiscreteControls()
    P = run(c, start_pose(), [A["look_down"]] * 3 + [A["move_forward"]] * 4)
    assert pitch_of(P[None])[0] == pytest.approx(-math.radians(30))
    assert P[1, 3] == pytest.approx(-1.5)  # height unchanged
    np.testing.assert_allclose(P[[0, 2], 3], [1.0, 3.0], atol=1e-12)


def test_turn_right_is_positive_yaw_and_no_roll():
    c = DiscreteControls()
    P = run(c, start_pose(pitch_deg=20.0), [A["turn_right"]] * 3)
    assert yaw_of(P[None])[0] == pytest.approx(math.radians(30))
    assert pitch_of(P[None])[0] == pytest.approx(math.radians(20))
    assert abs(P[1, 0]) < 1e-12  # camera x axis stays horizontal
    full = run(c, start_pose(), [A["turn_right"]] * 36)
    np.testing.assert_allclose(full, start_pose(), atol=1e-12)


def test_pitch_is_clamped():
    c = DiscreteControls()
    P = run(c, start_pose(), [A["look_up"]] * 12)
    assert pitch_of(P[None])[0] == pytest.approx(math.radians(80))
    P = run(c, P, [A["look_down"]] * 20)
    assert pitch_of(P[None])[0] == pytest.approx(-math.radians(80))


def test_apply_returns_delta_in_camera_frame():
    c = DiscreteControls()
    rng = np.random.default_rng(0)
    P = np.stack([start_pose(rng.uniform(-180, 180), rng.uniform(-60, 60), rng.normal(size=3)) for _ in range(9)])
    new, dT = c.apply(P, list(range(9)))
    np.testing.assert_allclose(P @ dT, new, atol=1e-12)
    # move_forward in the camera frame of a level camera is +z.
    level = start_pose(30.0)[None]
    _, d = c.apply(level, [A["move_forward"]])
    np.testing.assert_allclose(d[0], G.se3(np.eye(3), [0, 0, 0.25]), atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 8), min_size=1, max_size=30))
def test_discrete_inverse_actions_cancel(actions):
    # Every move has an inverse; playing the inverses backwards returns home
    # when no pitch clamp was hit (look actions limited to keep within ±80°).
    c = DiscreteControls()
    inverse = {0: 0, 1: 6, 6: 1, 2: 3, 3: 2, 4: 5, 5: 4, 7: 8, 8: 7}
    P0 = start_pose(15.0, 0.0)
    P = P0
    pitch = 0
    for a in actions:
        pitch += {4: 10, 5: -10}.get(a, 0)
        if abs(pitch) > 80:
            return
        P = c.step(P, a)
    for a in reversed(actions):
        P = c.step(P, inverse[a])
    np.testing.assert_allclose(P, P0, atol=1e-9)


def test_continuous_scaling_and_flags():
    c = ContinuousControls(max_linear=0.5, max_angular=20.0)
    assert c.action_space.shape == (6,) and c.action_space.dtype == np.float32
    P0 = start_pose()
    np.testing.assert_allclose(c.step(P0, np.zeros(6)), P0, atol=1e-15)
    P = c.step(P0, [0, 0, 1, 0, 0, 0])
    np.testing.assert_allclose(P[:3, 3] - P0[:3, 3], [0, 0, 0.5], atol=1e-12)
    P = c.step(P0, [0, 0, 0, 0, 1, 0])
    assert yaw_of(P[None])[0] == pytest.approx(math.radians(20))
    P = c.step(P0, [0, 0, 0, 0.5, 0, 0])
    assert pitch_of(P[None])[0] == pytest.approx(math.radians(10))
    ground = ContinuousControls(allow_vertical=False, allow_roll=False)
    np.testing.assert_allclose(ground.step(P0, [0, 1, 0, 0, 0, 1]), P0, atol=1e-15)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(-1, 1), min_size=6, max_size=6), min_size=1, max_size=40))
def test_continuous_pitch_stays_within_limit(actions):
    c = ContinuousControls(allow_roll=False)
    P = run(c, start_pose(), actions)
    assert abs(pitch_of(P[None])[0]) <= math.radians(80) + 1e-9
    np.testing.assert_allclose(P[:3, :3] @ P[:3, :3].T, np.eye(3), atol=1e-9)


def test_pose_controls_absolute_and_relative():
    target = G.se3(G.axis_angle_to_matrix([0.1, 0.2, 0.3]), [1, 2, 3])
    q = G.matrix_to_quat(target[:3, :3])
    a = np.concatenate([target[:3, 3], q])
    absolute = PoseControls()
    np.testing.assert_allclose(absolute.step(start_pose(), a), target, atol=1e-12)
    np.testing.assert_allclose(absolute.step(start_pose(), target), target, atol=1e-12)
    relative = PoseControls(mode="relative")
    np.testing.assert_allclose(relative.step(start_pose(), a), start_pose() @ target, atol=1e-12)
    assert absolute.action_space.contains(a)
    # Samples from the space are valid actions.
    absolute.action_space.seed(0)
    absolute.step(start_pose(), absolute.action_space.sample())


@pytest.mark.parametrize(
    "controls, action, error, match",
    [
        (DiscreteControls(), 9, ValueError, r"`action` in \[0, 9\)"),
        (DiscreteControls(), -1, ValueError, "`action`"),
        (DiscreteControls(), 1.5, TypeError, "`action`"),
        (DiscreteControls(), [1, 2], TypeError, "`action`"),
        (ContinuousControls(), [0, 0, 1.5, 0, 0, 0], ValueError, r"within \[-1, 1\]"),
        (ContinuousControls(), [0, 0, np.nan, 0, 0, 0], ValueError, "finite"),
        (ContinuousControls(), [0, 0, np.inf, 0, 0, 0], ValueError, "finite"),
        (ContinuousControls(), [0, 0, 0], ValueError, r"shape \(6,\)"),
        (PoseControls(), [0, 0, 0, 0, 0, 0, 0], ValueError, "non-zero"),
        (PoseControls(), np.diag([2.0, 1, 1, 1]), ValueError, "rigid"),
        (PoseControls(), [0, 0, 0, 0], ValueError, "shape"),
    ],
)
def test_bad_actions(controls, action, error, match):
    with pytest.raises(error, match=match):
        controls.step(start_pose(), action)


def test_bad_config_and_pose():
    with pytest.raises(ValueError, match="`actions`"):
        DiscreteControls(actions=("fly",))
    with pytest.raises(ValueError, match="`pitch_limit`"):
        DiscreteControls(pitch_limit=95.0)
    with pytest.raises(ValueError, match="`max_linear`"):
        ContinuousControls(max_linear=0.0)
    with pytest.raises(ValueError, match="`controls`"):
        make_controls("joystick")
    with pytest.raises(ValueError, match="`c2w`"):
        DiscreteControls().step(np.full((4, 4), np.nan), 1)
    with pytest.raises(ValueError, match="one action per pose"):
        DiscreteControls().apply(np.eye(4)[None], [1, 2])
