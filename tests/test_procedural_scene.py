import json
import math

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

from gnerf.errors import InputError
from gnerf.scenes import CAMERA_ANGLE_X, SCENE_OBJECTS, make_blender_scene, procedural, render_view

SIZE = 48
COUNTS = {"train": 5, "val": 2, "test": 6}
PARAMS = dict(image_size=SIZE, num_train=COUNTS["train"], num_val=COUNTS["val"], num_test=COUNTS["test"], seed=3)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_blender_scene(tmp_path_factory.mktemp("scene") / "procedural", **PARAMS)


def _all_files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def _failing_writer(monkeypatch, after):
    """Make the PNG writer raise once ``after`` images have been written; returns the call log."""
    real, calls = procedural._write_png, []

    def write(path, rgba):
        calls.append(path)
        if len(calls) > after:
            raise RuntimeError("disk full (simulated)")
        real(path, rgba)

    monkeypatch.setattr(procedural, "_write_png", write)
    return calls


def test_layout_counts_and_rgba_images(scene):
    for split, count in COUNTS.items():
        meta = json.loads((scene / f"transforms_{split}.json").read_text())
        assert meta["camera_angle_x"] == pytest.approx(CAMERA_ANGLE_X)
        assert [f["file_path"] for f in meta["frames"]] == [f"./{split}/r_{i}" for i in range(count)]
        assert sorted(p.name for p in (scene / split).iterdir()) == sorted(f"r_{i}.png" for i in range(count))
        for frame in meta["frames"]:
            c2w = np.array(frame["transform_matrix"])
            assert c2w.shape == (4, 4)
            np.testing.assert_allclose(c2w[3], [0, 0, 0, 1])
            np.testing.assert_allclose(np.linalg.norm(c2w[:3, 3]), procedural.CAMERA_RADIUS)
            assert c2w[2, 3] > 0  # upper hemisphere
            # looks at the origin: the camera's -z axis points from its centre to the origin
            np.testing.assert_allclose(-c2w[:3, 2], -c2w[:3, 3] / np.linalg.norm(c2w[:3, 3]), atol=1e-12)
            image = imageio.imread(scene / (frame["file_path"][2:] + ".png"))
            assert image.shape == (SIZE, SIZE, 4) and image.dtype == np.uint8
            alpha = image[..., 3]
            assert alpha.min() == 0 and alpha.max() == 255
            assert 0.05 < (alpha > 0).mean() < 0.8
            assert ((alpha > 0) & (alpha < 255)).any()  # anti-aliased edges
    assert json.loads((scene / "scene.json").read_text())["seed"] == PARAMS["seed"]


def test_test_ring_is_distinct_from_training_views(scene):
    positions = {
        split: np.array(
            [f["transform_matrix"] for f in json.loads((scene / f"transforms_{split}.json").read_text())["frames"]]
        )[:, :3, 3]
        for split in COUNTS
    }
    elevation = np.degrees(np.arcsin(positions["test"][:, 2] / procedural.CAMERA_RADIUS))
    np.testing.assert_allclose(elevation, 30.0)
    gaps = np.linalg.norm(positions["test"][:, None] - positions["train"][None], axis=-1)
    assert gaps.min() > 0.1


def test_nerfstudio_blender_dataparser_loads_it(scene):
    parser = BlenderDataParserConfig(data=scene).setup()
    focal = 0.5 * SIZE / math.tan(0.5 * CAMERA_ANGLE_X)
    for split, count in COUNTS.items():
        outputs = parser.get_dataparser_outputs(split)
        assert len(outputs.image_filenames) == count and len(outputs.cameras) == count
        assert all(p.is_file() for p in outputs.image_filenames)
        torch.testing.assert_close(outputs.cameras.fx, torch.full((count, 1), focal), check_dtype=False)
        torch.testing.assert_close(outputs.cameras.cx, torch.full((count, 1), SIZE / 2.0), check_dtype=False)
        assert outputs.cameras.width.unique().tolist() == [SIZE]


def test_camera_convention_matches_nerfstudio(scene):
    """A pixel whose nerfstudio ray passes through the purple sphere's centre shows that sphere."""
    outputs = BlenderDataParserConfig(data=scene).setup().get_dataparser_outputs("test")
    purple = next(obj for obj in SCENE_OBJECTS if obj.name == "purple_sphere")
    centre = torch.tensor(purple.center, dtype=torch.float32)
    bound = max(obj.bounding_radius() for obj in SCENE_OBJECTS)
    pixel_size = 2 * procedural.CAMERA_RADIUS * math.tan(0.5 * CAMERA_ANGLE_X) / SIZE  # at the origin's depth
    for i, filename in enumerate(outputs.image_filenames):
        image = imageio.imread(filename).astype(np.float64)
        rays = outputs.cameras.generate_rays(camera_indices=i)  # pixel centres, [H, W]
        # distance from a point to every pixel-centre ray
        to_centre = centre - rays.origins
        along = (to_centre * rays.directions).sum(-1, keepdim=True)
        dist = (to_centre - along * rays.directions).norm(dim=-1)
        row, col = np.unravel_index(dist.argmin().item(), dist.shape)
        assert dist[row, col] < pixel_size  # the sphere centre projects into the image
        rgba = image[row, col]
        assert rgba[3] == 255
        shade = np.mean(rgba[:3] / 255 / np.array(purple.albedo))
        assert procedural.AMBIENT - 0.02 <= shade <= 1.02
        np.testing.assert_allclose(rgba[:3], shade * 255 * np.array(purple.albedo), atol=2.0)
        # pixels whose ray keeps well clear of every object are transparent
        to_origin = -rays.origins
        miss = (to_origin - (to_origin * rays.directions).sum(-1, keepdim=True) * rays.directions).norm(dim=-1)
        clear = (miss > bound + 2 * pixel_size).numpy()
        assert clear.sum() > 100
        assert (image[..., 3][clear] == 0).all()


def test_render_view_matches_written_images(scene):
    meta = json.loads((scene / "transforms_val.json").read_text())
    frame = meta["frames"][1]
    expected = imageio.imread(scene / "val" / "r_1.png")
    rgba = render_view(np.array(frame["transform_matrix"])[:3], width=SIZE, height=SIZE)
    assert rgba.shape == (SIZE, SIZE, 4) and rgba.dtype == np.float32
    np.testing.assert_array_equal(np.round(rgba * 255).astype(np.uint8), expected)
    # any pinhole camera: non-square image, another field of view; one ray per pixel gives binary alpha
    wide = render_view(np.array(frame["transform_matrix"]), width=40, height=24, camera_angle_x=1.2, supersample=1)
    assert wide.shape == (24, 40, 4) and set(np.unique(wide[..., 3])) == {0.0, 1.0}


def test_same_seed_gives_identical_bytes_other_seeds_move_cameras(scene, tmp_path):
    again = make_blender_scene(tmp_path / "again", **PARAMS)
    files = [p.relative_to(scene) for p in _all_files(scene)]
    assert files == [p.relative_to(again) for p in _all_files(again)]
    for rel in files:
        assert (scene / rel).read_bytes() == (again / rel).read_bytes(), rel
    for split, count in COUNTS.items():
        poses = procedural.camera_poses(split, count, PARAMS["seed"])
        assert np.abs(procedural.camera_poses(split, count, PARAMS["seed"] + 1) - poses).max() > 0.1


def test_existing_scene_is_reused_unless_overwrite(scene, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in _all_files(scene)}
    calls = _failing_writer(monkeypatch, after=0)  # any rendering would raise
    assert make_blender_scene(scene, **PARAMS) == scene
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in _all_files(scene)} == before


def test_overwrite_and_changed_parameters_re_render(tmp_path, monkeypatch):
    out = tmp_path / "s"
    small = dict(image_size=16, num_train=2, num_val=1, num_test=1)
    make_blender_scene(out, **small)
    calls = _failing_writer(monkeypatch, after=100)
    make_blender_scene(out, **small, overwrite=True)
    assert len(calls) == 4
    make_blender_scene(out, **{**small, "num_train": 3})
    assert len(calls) == 4 + 5
    assert sorted(p.name for p in (out / "train").iterdir()) == ["r_0.png", "r_1.png", "r_2.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary folders left


def test_failure_mid_write_leaves_no_scene(tmp_path, monkeypatch):
    out = tmp_path / "s"
    calls = _failing_writer(monkeypatch, after=3)
    with pytest.raises(RuntimeError, match="disk full"):
        make_blender_scene(out, image_size=16, num_train=5, num_val=1, num_test=1)
    assert len(calls) == 4
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary folder


def test_failure_while_replacing_keeps_the_old_scene(tmp_path, monkeypatch):
    out = make_blender_scene(tmp_path / "s", image_size=16, num_train=2, num_val=1, num_test=1)
    before = {p: p.read_bytes() for p in _all_files(out)}
    _failing_writer(monkeypatch, after=1)
    with pytest.raises(RuntimeError, match="disk full"):
        make_blender_scene(out, image_size=16, num_train=2, num_val=1, num_test=1, seed=1)
    assert {p: p.read_bytes() for p in _all_files(out)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_refuses_to_replace_a_folder_it_did_not_make(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(InputError, match="not a generated procedural scene"):
            make_blender_scene(out, image_size=16, num_train=1, num_val=1, num_test=1, overwrite=overwrite)
    assert (out / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (make_blender_scene(empty, image_size=16, num_train=1, num_val=1, num_test=1) / "scene.json").is_file()


@pytest.mark.parametrize(
    "option, value",
    [
        ("image_size", 4),
        ("num_train", 0),
        ("num_val", 0),
        ("num_test", -1),
        ("seed", -1),
        ("supersample", 0),
        ("image_size", 32.0),
    ],
)
def test_bad_options_are_named(tmp_path, option, value):
    kwargs = dict(image_size=16, num_train=1, num_val=1, num_test=1)
    with pytest.raises(ValueError, match=f"^{option} must be an integer >= "):
        make_blender_scene(tmp_path / "s", **{**kwargs, option: value})
    assert not (tmp_path / "s").exists()


def test_render_view_rejects_bad_cameras():
    with pytest.raises(ValueError, match="3x4 or 4x4"):
        render_view(np.eye(3), width=8, height=8)
    with pytest.raises(ValueError, match="camera_angle_x"):
        render_view(np.eye(4), width=8, height=8, camera_angle_x=4.0)
    with pytest.raises(ValueError, match="parallel to `up`"):
        procedural.look_at((0.0, 0.0, 4.0))
