"""Scenes: specs, determinism and variety, occupancy (collisions, doorways), start/goal sampling, mesh files."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worldenv.geometry import intrinsics_from_fov
from worldenv.scenes import NoNavigableAreaError, NoOracleError, Scene, View, load_scene
from worldenv.scenes.rooms import RoomsScene
from worldenv.scenes.street import StreetScene


@pytest.fixture(scope="module")
def rooms7():
    return load_scene("rooms", seed=7)


@pytest.fixture(scope="module")
def street0():
    return load_scene("street", seed=0)


# ------------------------------------------------------------------------ specs


def test_specs_make_the_right_scenes(rooms7, street0):
    assert isinstance(rooms7, RoomsScene) and isinstance(rooms7, Scene) and rooms7.has_oracle
    assert isinstance(street0, StreetScene) and street0.has_oracle
    assert rooms7.spec == "rooms" and rooms7.seed == 7


@pytest.mark.parametrize(
    "spec,match",
    [("room", "rooms"), ("rooms:x", "rooms"), ("capture:foo:/tmp", "format"), ("capture:tum", "format"), ("mesh:", "mesh")],
)
def test_bad_specs_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        load_scene(spec)


def test_bad_options_and_seeds_are_named():
    with pytest.raises(ValueError, match="furniture_densty"):
        load_scene("rooms", seed=0, furniture_densty=0.1)
    with pytest.raises(ValueError, match="`min_rooms`"):
        load_scene("rooms", seed=0, min_rooms=0)
    with pytest.raises(ValueError, match="`seed`"):
        load_scene("rooms", seed=-1)
    with pytest.raises(TypeError, match="`seed`"):
        load_scene("street", seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        load_scene("mesh:/nonexistent/file.glb")


# ------------------------------------------------------- determinism and variety


@pytest.mark.parametrize("spec", ["rooms", "street"])
def test_same_seed_same_scene(spec):
    a, b = load_scene(spec, seed=3), load_scene(spec, seed=3)
    assert np.array_equal(a.vertices, b.vertices)
    assert np.array_equal(a.textures, b.textures)
    assert np.array_equal(a.occupancy.navigable, b.occupancy.navigable)
    va, vb = a.reference_views(32), b.reference_views(32)
    assert all(np.array_equal(x.rgb, y.rgb) and np.array_equal(x.depth, y.depth) for x, y in zip(va, vb))


@pytest.mark.parametrize("spec", ["rooms", "street"])
def test_different_seeds_differ(spec):
    a, b = load_scene(spec, seed=1), load_scene(spec, seed=2)
    assert a.vertices.shape != b.vertices.shape or not np.array_equal(a.vertices, b.vertices)
    assert not np.array_equal(a.textures[0], b.textures[0])
    ra = a.reference_views(32)[0].rgb
    rb = b.reference_views(32)[0].rgb
    assert not np.array_equal(ra, rb)


def test_rooms_vary_across_seeds():
    scenes = [load_scene("rooms", seed=s) for s in range(8)]
    assert len({len(s.rooms) for s in scenes}) >= 3
    assert len({round(s.height, 2) for s in scenes}) >= 3
    assert sum(any(r.corridor for r in s.rooms) for s in scenes) >= 2
    # Many distinct textures per scene, and no two scenes share their first floor texture.
    assert all(s.textures.shape[0] >= 12 for s in scenes)
    firsts = {s.textures[1].tobytes() for s in scenes}
    assert len(firsts) == len(scenes)


def test_reference_views_follow_conventions(rooms7, street0):
    for scene in (rooms7, street0):
        views = scene.reference_views(48)
        assert len(views) >= 4 and all(isinstance(v, View) for v in views)
        for v in views:
            assert v.rgb.shape == (48, 48, 3) and v.rgb.dtype == np.uint8
            assert v.depth.shape == (48, 48) and v.depth.dtype == np.float32
            assert v.c2w.shape == (4, 4) and v.c2w.dtype == np.float64 and v.K.shape == (3, 3)
            assert np.allclose(v.c2w[:3, :3] @ v.c2w[:3, :3].T, np.eye(3))
        assert np.mean([np.mean(v.depth > 0) for v in views]) > 0.5


def test_bounds_hold_the_geometry(rooms7, street0):
    for scene in (rooms7, street0):
        lo, hi = scene.bounds
        tri = scene.triangles.reshape(-1, 3)
        inside = np.all((tri >= lo - 1e-4) & (tri <= hi + 1e-4), axis=1)
        # The street's far road and ground run on into open country beyond its bounds.
        assert inside.mean() > (0.999 if scene is rooms7 else 0.9)


def test_street_has_sky_and_lanes(street0):
    assert street0.lanes and all(abs(x) < street0.road_right for x, _ in street0.lanes)
    heads = {h for _, h in street0.lanes}
    assert heads == {1, -1}
    K = intrinsics_from_fov(64, 64, 90.0)
    x, heading = street0.lanes[0]
    pose = street0.pose_at(np.array([x, 0.0, 20.0]), 0.0 if heading > 0 else math.pi)
    rgb, depth = street0.render(pose, K, 64)
    assert abs(pose[1, 3] + street0.camera_height) < 1e-9
    sky = depth[:20] == 0
    assert sky.mean() > 0.1 and depth[-10:].min() > 0  # sky above, road below
    assert rgb[:20][sky].mean() > rgb[-10:].mean()  # a bright sky over dark asphalt


# -------------------------------------------------------------------- occupancy


def _door_probe(scene: RoomsScene, d, off: float, along: float) -> tuple[np.ndarray, np.ndarray]:
    if d.axis == "x":
        return np.array([d.line - off, 0.0, along]), np.array([d.line + off, 0.0, along])
    return np.array([along, 0.0, d.line - off]), np.array([along, 0.0, d.line + off])


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_walls_block_and_doorways_pass(seed):
    scene = load_scene("rooms", seed=seed)
    assert scene.doors
    for d in scene.doors:
        a, b = _door_probe(scene, d, 0.6, 0.5 * (d.lo + d.hi))
        assert not scene.collide(a, b), "a doorway must let the agent through"
        assert not scene.collide(b, a)
        # The same wall beside the doorway blocks (where no other doorway opens in it).
        same_line = [e for e in scene.doors if e.axis == d.axis and abs(e.line - d.line) < 1e-6]
        for along in (d.lo - 0.4, d.hi + 0.4):
            if any(e.lo - 0.3 < along < e.hi + 0.3 for e in same_line):
                continue
            a, b = _door_probe(scene, d, 0.6, along)
            assert scene.collide(a, b), "a wall must block the agent"
    # Batched calls agree with single ones.
    rng = np.random.default_rng(0)
    p0 = scene.occupancy.sample_navigable(rng, 50)
    p1 = p0 + rng.normal(0, 2.0, size=p0.shape)
    many = scene.collide(p0, p1)
    assert many.shape == (50,) and many.dtype == bool
    assert [bool(scene.collide(a, b)) for a, b in zip(p0, p1)] == list(many)


def test_navigable_cells_keep_the_agent_clear(rooms7):
    from scipy.ndimage import distance_transform_edt

    occ = rooms7.occupancy
    clearance = distance_transform_edt(np.pad(occ.free, 1))[1:-1, 1:-1] * occ.cell
    assert np.all(clearance[occ.navigable] >= occ.agent_radius)
    assert occ.navigable.sum() > 0.3 * np.isfinite(occ.floor_y).sum()
    assert occ.main_component.sum() > 0.9 * occ.navigable.sum()


def test_furniture_blocks_the_agent(rooms7):
    occ = rooms7.occupancy
    floor = np.isfinite(occ.floor_y)
    blocked_floor = floor & ~occ.free
    assert blocked_floor.sum() > 100  # furniture footprints
    iz, ix = np.argwhere(blocked_floor)[0]
    p = occ.cell_center(iz, ix)
    assert not occ.is_navigable(p)


@pytest.mark.parametrize("spec,seed", [("rooms", 0), ("rooms", 5), ("street", 2)])
def test_sample_start_goal_in_range(spec, seed):
    scene = load_scene(spec, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        start, goal, geo = scene.sample_start_goal(rng, 2.0, 8.0)
        assert 2.0 <= geo <= 8.0
        assert start.shape == (4, 4) and goal.shape == (3,)
        p = start[:3, 3]
        assert scene.occupancy.is_navigable(p) and scene.occupancy.is_navigable(goal)
        assert abs(float(scene.occupancy.floor_height(p)) - scene.camera_height - p[1]) < 1e-9
        assert abs(start[1, 2]) < 1e-12 and abs(start[1, 1] - 1.0) < 1e-12  # level and upright
        euclid = math.hypot(*(goal - p)[[0, 2]])
        assert geo >= euclid - 1e-9
        assert geo <= 1.03 * euclid + 0.5 or geo > euclid  # grid paths overestimate by a few percent at most
        assert scene.geodesic_distance(p, goal) == pytest.approx(geo)
        path = scene.occupancy.shortest_path(p, goal)
        legs = np.linalg.norm(np.diff(path[:, [0, 2]], axis=0), axis=1).sum()
        assert euclid - 1e-6 <= legs <= geo + 1e-6
        assert not np.any(scene.collide(path[:-1], path[1:]))


def test_sample_start_goal_errors(rooms7):
    rng = np.random.default_rng(0)
    with pytest.raises(NoNavigableAreaError, match="geodesic"):
        rooms7.sample_start_goal(rng, 500.0, 600.0)
    with pytest.raises(ValueError, match="min_geodesic"):
        rooms7.sample_start_goal(rng, 5.0, 1.0)
    with pytest.raises(TypeError, match="`rng`"):
        rooms7.sample_start_goal(0, 1.0, 2.0)  # type: ignore[arg-type]


def test_unreachable_points_are_infinitely_far(rooms7):
    occ = rooms7.occupancy
    outside = np.array([-5.0, 0.0, -5.0])
    inside = occ.sample_navigable(np.random.default_rng(1))[0]
    assert rooms7.geodesic_distance(outside, inside) == math.inf
    assert rooms7.collide(inside, outside)


# ------------------------------------------------------------------ mesh files


def _textured_room(path, ext: str) -> None:
    """A 6 x 4 m room (floor + four walls, Y-up like OBJ/glTF) with a pillar, textured."""
    import trimesh
    from PIL import Image

    parts = [trimesh.creation.box((6.0, 0.1, 4.0), trimesh.transformations.translation_matrix((0, -0.05, 0)))]
    for (sx, sz, x, z) in ((6.0, 0.1, 0, 2.0), (6.0, 0.1, 0, -2.0), (0.1, 4.0, 3.0, 0), (0.1, 4.0, -3.0, 0)):
        parts.append(trimesh.creation.box((sx, 2.5, sz), trimesh.transformations.translation_matrix((x, 1.25, z))))
    parts.append(trimesh.creation.box((0.6, 2.5, 0.6), trimesh.transformations.translation_matrix((1.0, 1.25, 0.5))))
    mesh = trimesh.util.concatenate(parts)
    uv = np.stack([mesh.vertices[:, 0] / 6 + 0.5, mesh.vertices[:, 2] / 4 + 0.5], 1)
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 1] = 200  # green everywhere
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(img))
    mesh.export(str(path))


@pytest.mark.parametrize("ext", ["obj", "glb"])
def test_textured_mesh_scene(tmp_path, ext):
    f = tmp_path / f"room.{ext}"
    _textured_room(f, ext)
    scene = load_scene(f"mesh:{f}")
    assert not scene.has_ground and abs(scene.floor_y) < 1e-6  # its own floor, at y = 0 after the Y-up flip
    assert scene.textures is not None and scene.textures.shape[0] == 1
    occ = scene.occupancy
    pillar = np.array([1.0, 0.0, -0.5])  # (x, y, z) -> (x, -y, -z): the pillar sits at z = -0.5
    assert not occ.is_navigable(pillar)
    assert occ.is_navigable(np.array([-1.5, 0.0, 0.5]))
    assert scene.collide(np.array([0.0, 0.0, -0.5]), np.array([2.0, 0.0, -0.5]))
    views = scene.reference_views(32)
    rgb = np.concatenate([v.rgb.reshape(-1, 3) for v in views]).astype(float)
    assert rgb[:, 1].mean() > 2 * rgb[:, 0].mean() and rgb[:, 1].mean() > 2 * rgb[:, 2].mean()  # green texture
    start, goal, geo = scene.sample_start_goal(np.random.default_rng(0), 1.0, 4.0)
    assert 1.0 <= geo <= 4.0


def test_vertex_coloured_object_stands_on_a_ground(tmp_path):
    import trimesh

    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    ball.apply_translation((0.0, 0.5, 0.0))
    ball.visual.vertex_colors = np.tile(np.array([[220, 20, 20, 255]], np.uint8), (len(ball.vertices), 1))
    f = tmp_path / "ball.ply"
    ball.export(str(f))
    scene = load_scene(f"mesh:{f}", seed=0)
    assert scene.has_ground
    assert not scene.occupancy.is_navigable(np.array([0.0, 0.0, 0.0]))
    assert scene.occupancy.is_navigable(np.array([2.0, 0.0, 2.0]))
    views = scene.reference_views(32)
    assert len(views) == 8
    centre = np.stack([v.rgb[12:20, 12:20] for v in views]).reshape(-1, 3).astype(float)
    assert centre[:, 0].mean() > 2 * centre[:, 1].mean()  # the red ball fills the centre of every orbit view
    a, b = load_scene(f"mesh:{f}", seed=0), load_scene(f"mesh:{f}", seed=0)
    assert np.array_equal(a.reference_views(16)[0].rgb, b.reference_views(16)[0].rgb)


def test_mesh_up_axis_option(tmp_path):
    import trimesh

    slab = trimesh.creation.box((4.0, 4.0, 0.1))  # a floor in a Z-up file
    f = tmp_path / "floor.ply"
    slab.export(str(f))
    scene = load_scene(f"mesh:{f}", up="+z")
    lo, hi = scene.bounds
    assert hi[1] - lo[1] < 0.2 and not scene.has_ground  # flat in y: it is the floor
    with pytest.raises(ValueError, match="`up`"):
        load_scene(f"mesh:{f}", up="x")


def test_capture_scene_has_no_oracle(tmp_path):
    from worldenv.scenes.shards import write_shard

    N, T, S = 1, 3, 8
    c2w = np.tile(np.eye(4), (N, T, 1, 1))
    c2w[0, :, 2, 3] = [0.0, 1.0, 2.0]
    write_shard(
        tmp_path / "one.npz",
        np.zeros((N, T, S, S, 3), np.uint8),
        np.ones((N, T, S, S), np.float32),
        c2w,
        np.tile(intrinsics_from_fov(S, S, 90.0), (N, T, 1, 1)),
        np.zeros(N),
        np.zeros(N),
        {"spec": "rooms"},
    )
    scene = load_scene(f"capture:worldenv:{tmp_path / 'one.npz'}")
    assert not scene.has_oracle and scene.occupancy is None
    with pytest.raises(NoOracleError, match="captured"):
        scene.render(np.eye(4), intrinsics_from_fov(8, 8, 90.0), 8)
    assert scene.collide(np.zeros(3), np.ones(3)) is False
    start, goal, d = scene.sample_start_goal(np.random.default_rng(0), 1.5, 2.5)
    assert d == pytest.approx(2.0)
    assert len(scene.reference_views()) == 3 and scene.reference_views(4)[0].rgb.shape == (4, 4, 3)
