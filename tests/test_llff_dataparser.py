"""Tests for the LLFF-format dataparser (gnerf.nerf.llff_dataparser) on generated poses_bounds.npy fixtures."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from gnerf.errors import InputError
from gnerf.nerf.llff_dataparser import LLFF, LLFFDataParserConfig, average_pose

N_VIEWS = 17  # held out with holdout_every=8: 0, 8, 16
H0, W0, FOCAL0 = 24, 32, 30.0  # "full-resolution" hwf column stored in poses_bounds.npy
NEAR_RANGE, FAR_RANGE = (2.0, 3.0), (8.0, 10.0)


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _make_opengl_poses() -> np.ndarray:
    """N x 3 x 4 OpenGL camera-to-world poses: a jittered grid of cameras looking down -z, then moved by a global
    rigid transform so that recentring has something to undo."""
    rng = np.random.default_rng(0)
    g_rot = _rot("z", 0.4) @ _rot("x", -0.3) @ _rot("y", 0.2)
    g_t = np.array([1.5, -2.0, 0.7])
    poses = []
    for i in range(N_VIEWS):
        gx, gy = i % 5 - 2.0, i // 5 - 1.5
        rot = (
            _rot("x", rng.uniform(-0.1, 0.1)) @ _rot("y", rng.uniform(-0.1, 0.1)) @ _rot("z", rng.uniform(-0.05, 0.05))
        )
        t = np.array([0.3 * gx, 0.3 * gy, rng.uniform(-0.05, 0.05)])
        poses.append(np.concatenate([g_rot @ rot, (g_rot @ t + g_t)[:, None]], axis=1))
    return np.stack(poses)


def _to_llff_rows(c2w: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """OpenGL [right, up, back] -> LLFF [down, right, back] 3x5 rows (written independently of the parser)."""
    rows = []
    for pose, bd in zip(c2w, bounds):
        right, up, back, t = pose[:, 0], pose[:, 1], pose[:, 2], pose[:, 3]
        m = np.stack([-up, right, back, t, np.array([H0, W0, FOCAL0])], axis=1)  # 3 x 5
        rows.append(np.concatenate([m.reshape(-1), bd]))
    return np.stack(rows)


def _write_images(folder: Path, h: int, w: int, n: int = N_VIEWS, ext: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((h, w, 3), (i * 13) % 256, dtype=np.uint8)
        img[0, 0] = [255, 0, 0]
        imageio.imwrite(folder / f"IMG_{i:04d}{ext}", img, extension=ext.lower())


@pytest.fixture
def scene(tmp_path):
    """Scene with images/ (full res 24x32) and images_2/ (12x16); returns (path, c2w_opengl, bounds)."""
    c2w = _make_opengl_poses()
    rng = np.random.default_rng(1)
    bounds = np.stack([rng.uniform(*NEAR_RANGE, N_VIEWS), rng.uniform(*FAR_RANGE, N_VIEWS)], axis=1)
    np.save(tmp_path / "poses_bounds.npy", _to_llff_rows(c2w, bounds))
    _write_images(tmp_path / "images", H0, W0)
    _write_images(tmp_path / "images_2", H0 // 2, W0 // 2)
    return tmp_path, c2w, bounds


def _parse(data: Path, split: str = "train", **kw):
    parser = LLFFDataParserConfig(data=data, **kw).setup()
    assert isinstance(parser, LLFF)
    return parser.get_dataparser_outputs(split=split)


# ---------------------------------------------------------------------------------------------------------------


def test_split_every_8th_view_held_out(scene):
    data, _, _ = scene
    train = _parse(data, "train", downscale_factor=2)
    test = _parse(data, "test", downscale_factor=2)
    val = _parse(data, "val", downscale_factor=2)
    assert [p.name for p in test.image_filenames] == ["IMG_0000.png", "IMG_0008.png", "IMG_0016.png"]
    assert [p.name for p in val.image_filenames] == [p.name for p in test.image_filenames]
    expected_train = [i for i in range(N_VIEWS) if i % 8 != 0]
    assert [p.name for p in train.image_filenames] == [f"IMG_{i:04d}.png" for i in expected_train]
    assert train.metadata["image_indices"].tolist() == expected_train
    assert len(train.cameras) == 14 and len(test.cameras) == 3
    assert all(p.parent.name == "images_2" for p in train.image_filenames)
    # the holdout can be disabled
    assert len(_parse(data, "train", holdout_every=0).image_filenames) == N_VIEWS


def test_intrinsics_from_downscaled_folder(scene):
    data, _, _ = scene
    out = _parse(data, downscale_factor=2)
    cams = out.cameras
    assert torch.allclose(cams.fx, torch.full_like(cams.fx, FOCAL0 / 2))
    assert torch.allclose(cams.fy, torch.full_like(cams.fy, FOCAL0 / 2))
    assert torch.allclose(cams.cx, torch.full_like(cams.cx, W0 / 4))
    assert torch.allclose(cams.cy, torch.full_like(cams.cy, H0 / 4))
    assert (cams.width == W0 // 2).all() and (cams.height == H0 // 2).all()
    assert cams.camera_type.unique().tolist() == [1]  # CameraType.PERSPECTIVE


def test_intrinsics_fallback_to_full_images(scene, capsys):
    data, _, _ = scene
    out = _parse(data, downscale_factor=4)  # images_4/ does not exist -> images/ at full size
    assert "images_4" in capsys.readouterr().out
    assert all(p.parent.name == "images" for p in out.image_filenames)
    cams = out.cameras
    assert torch.allclose(cams.fx, torch.full_like(cams.fx, FOCAL0))
    assert torch.allclose(cams.cx, torch.full_like(cams.cx, W0 / 2))
    assert (cams.width == W0).all() and (cams.height == H0).all()
    # factor 1 reads images/ directly
    out1 = _parse(data, downscale_factor=1)
    assert all(p.parent.name == "images" for p in out1.image_filenames)


def test_intrinsics_follow_arbitrary_image_size(tmp_path):
    """BLEFF-like: only images/, at a size unrelated to 4032x3024 or factor 8, uppercase .JPG, hidden junk."""
    c2w = _make_opengl_poses()
    bounds = np.tile([2.0, 9.0], (N_VIEWS, 1))
    np.save(tmp_path / "poses_bounds.npy", _to_llff_rows(c2w, bounds))
    _write_images(tmp_path / "images", 18, 24, ext=".JPG")  # 0.75 x the hwf size
    imageio.imwrite(tmp_path / "images" / "._IMG_0000.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "images" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    out = _parse(tmp_path, holdout_every=0)
    assert len(out.image_filenames) == N_VIEWS and out.image_filenames[0].name == "IMG_0000.JPG"
    assert torch.allclose(out.cameras.fx, torch.full_like(out.cameras.fx, FOCAL0 * 0.75))
    assert torch.allclose(out.cameras.cy, torch.full_like(out.cameras.cy, 9.0))


def test_intrinsics_non_uniform_rescale(tmp_path, capsys):
    """Images whose aspect differs from the hwf column: fx follows the width ratio, fy the height ratio."""
    c2w = _make_opengl_poses()
    np.save(tmp_path / "poses_bounds.npy", _to_llff_rows(c2w, np.tile([2.0, 9.0], (N_VIEWS, 1))))
    _write_images(tmp_path / "images", 12, 24)  # sy = 0.5, sx = 0.75
    cams = _parse(tmp_path, downscale_factor=1).cameras
    assert "aspect ratio" in capsys.readouterr().out
    assert torch.allclose(cams.fx, torch.full_like(cams.fx, FOCAL0 * 0.75))
    assert torch.allclose(cams.fy, torch.full_like(cams.fy, FOCAL0 * 0.5))
    assert torch.allclose(cams.cx, torch.full_like(cams.cx, 12.0))
    assert torch.allclose(cams.cy, torch.full_like(cams.cy, 6.0))


def test_bounds_scale_and_near_far(scene):
    data, _, bounds = scene
    out = _parse(data, "train", downscale_factor=2)
    scale = 1.0 / (bounds.min() * 0.75)
    assert out.dataparser_scale == pytest.approx(scale)
    assert out.metadata["near_plane"] == pytest.approx(0.9 * bounds.min() * scale) == pytest.approx(0.9 / 0.75)
    assert out.metadata["far_plane"] == pytest.approx(bounds.max() * scale)
    assert out.metadata["forward_facing"] is True
    idx = out.metadata["image_indices"].numpy()
    np.testing.assert_allclose(out.metadata["bounds"].numpy(), bounds[idx] * scale, rtol=1e-5)
    # near/far are global (identical for every split)
    test = _parse(data, "test", downscale_factor=2)
    assert test.metadata["near_plane"] == out.metadata["near_plane"]
    assert test.metadata["far_plane"] == out.metadata["far_plane"]
    # bd_factor=None disables rescaling
    assert _parse(data, bd_factor=None).dataparser_scale == 1.0


def test_recentred_poses(scene):
    data, _, _ = scene
    c2w = _parse(data, holdout_every=0).cameras.camera_to_worlds.double().numpy()
    avg = average_pose(c2w)
    np.testing.assert_allclose(avg[:, :3], np.eye(3), atol=1e-5)
    np.testing.assert_allclose(c2w[:, :, 3].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(avg, np.eye(4)[:3], atol=1e-5)
    # rotations stay orthonormal and proper
    rot = c2w[:, :, :3]
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)


def test_relative_geometry_preserved(scene):
    data, c2w_gt, bounds = scene
    out = _parse(data, holdout_every=0)
    c2w = out.cameras.camera_to_worlds.double().numpy()
    scale = 1.0 / (bounds.min() * 0.75)
    d_new = np.linalg.norm(c2w[:, None, :, 3] - c2w[None, :, :, 3], axis=-1)
    d_gt = np.linalg.norm(c2w_gt[:, None, :, 3] - c2w_gt[None, :, :, 3], axis=-1)
    np.testing.assert_allclose(d_new, scale * d_gt, atol=1e-5)
    rel_new = np.einsum("iba,jbc->ijac", c2w[:, :, :3], c2w[:, :, :3])  # R_i^T R_j
    rel_gt = np.einsum("iba,jbc->ijac", c2w_gt[:, :, :3], c2w_gt[:, :, :3])
    np.testing.assert_allclose(rel_new, rel_gt, atol=1e-5)


def test_dataparser_transform_inverts_to_original_opengl_poses(scene):
    """Checks the [down,right,back] -> [right,up,back] conversion and the recorded transform/scale."""
    data, c2w_gt, _ = scene
    out = _parse(data, "test", downscale_factor=2)
    orig = out.transform_poses_to_original_space(out.cameras.camera_to_worlds, camera_convention="opengl")
    idx = out.metadata["image_indices"].numpy()
    np.testing.assert_allclose(orig.numpy(), c2w_gt[idx], atol=1e-5)
    # without recentring / scaling the poses are exactly the (converted) input poses
    raw = _parse(data, "test", recenter=False, bd_factor=None).cameras.camera_to_worlds.numpy()
    np.testing.assert_allclose(raw, c2w_gt[idx], atol=1e-6)


def test_scene_box_contains_cameras_and_far_frustum(scene):
    data, _, _ = scene
    out = _parse(data, holdout_every=0, downscale_factor=2)
    aabb = out.scene_box.aabb
    c2w = out.cameras.camera_to_worlds
    far = out.metadata["far_plane"]
    eps = 1e-4
    centres = c2w[:, :, 3]
    assert ((centres >= aabb[0] - eps) & (centres <= aabb[1] + eps)).all()
    # principal-axis points at depth far (inside the far-plane rectangle, hence inside the box)
    far_pts = centres - far * c2w[:, :, 2]
    assert ((far_pts >= aabb[0] - eps) & (far_pts <= aabb[1] + eps)).all()
    # the camera-space frustum corners at depth far land on the box faces for some camera
    cams = out.cameras
    dirs = torch.stack(
        [(0 - cams.cx[:, 0]) / cams.fx[:, 0], (cams.cy[:, 0] - 0) / cams.fy[:, 0], -torch.ones(len(cams))], -1
    )
    corner = centres + far * torch.einsum("nij,nj->ni", c2w[:, :, :3], dirs)
    assert ((corner >= aabb[0] - eps) & (corner <= aabb[1] + eps)).all()
    # same box for every split
    assert torch.equal(_parse(data, "test", downscale_factor=2).scene_box.aabb, aabb)


def test_input_dataset_loads_images(scene):
    from nerfstudio.data.datasets.base_dataset import InputDataset

    data, _, _ = scene
    out = _parse(data, "train", downscale_factor=2)
    ds = InputDataset(out)
    item = ds[0]
    assert item["image"].shape == (H0 // 2, W0 // 2, 3)
    assert item["image"].dtype == torch.float32
    assert tuple(item["image"][0, 0].tolist()) == (1.0, 0.0, 0.0)


def test_vanilla_datamanager_batch(scene):
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig

    data, _, _ = scene
    config = VanillaDataManagerConfig(
        dataparser=LLFFDataParserConfig(data=data, downscale_factor=2),
        train_num_rays_per_batch=64,
        eval_num_rays_per_batch=64,
    )
    dm = VanillaDataManager(config, device="cpu", test_mode="test")
    ray_bundle, batch = dm.next_train(0)
    assert ray_bundle.origins.shape == (64, 3) and batch["image"].shape == (64, 3)
    assert len(dm.eval_dataset) == 3


# --- bad input ---------------------------------------------------------------------------------------------------


def test_error_missing_data_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(InputError, match="nope"):
        _parse(missing)


def test_error_missing_poses_bounds(scene):
    data, _, _ = scene
    (data / "poses_bounds.npy").unlink()
    with pytest.raises(InputError) as err:
        _parse(data)
    assert str(data / "poses_bounds.npy") in str(err.value)


def test_error_wrong_shape(scene):
    data, _, _ = scene
    np.save(data / "poses_bounds.npy", np.zeros((N_VIEWS, 15)))
    with pytest.raises(InputError) as err:
        _parse(data)
    assert str(data / "poses_bounds.npy") in str(err.value) and "(17, 15)" in str(err.value)


def test_error_pose_image_count_mismatch(scene):
    data, _, _ = scene
    (data / "images_2" / "IMG_0003.png").unlink()
    with pytest.raises(InputError) as err:
        _parse(data, downscale_factor=2)
    msg = str(err.value)
    assert f"{N_VIEWS} pose rows" in msg and f"{N_VIEWS - 1} images" in msg and str(data / "images_2") in msg


def test_error_missing_image_folder(scene):
    data, _, _ = scene
    for folder in ("images", "images_2"):
        for f in (data / folder).iterdir():
            f.unlink()
        (data / folder).rmdir()
    with pytest.raises(InputError) as err:
        _parse(data, downscale_factor=8)
    msg = str(err.value)
    assert str(data / "images_8") in msg and str(data / "images") in msg


def test_error_unknown_split(scene):
    data, _, _ = scene
    with pytest.raises(ValueError, match="split") as err:  # nerfstudio asks for a split: a bug, not bad input
        _parse(data, "bogus")
    assert not isinstance(err.value, InputError)


def test_error_poses_bounds_not_a_numpy_file(scene):
    data, _, _ = scene
    (data / "poses_bounds.npy").write_text("not numpy at all")
    with pytest.raises(InputError, match=r"poses_bounds.npy is not a readable .npy array .*imgs2poses"):
        _parse(data)


def test_error_blender_scene_gets_a_hint(tmp_path):
    (tmp_path / "transforms_train.json").write_text("{}")
    with pytest.raises(InputError, match=r"Blender-format scene\. Drop llff-data"):
        _parse(tmp_path)


@pytest.mark.parametrize("holdout_every, views", [(1, N_VIEWS), (8, 1)])
def test_error_no_view_left_to_train_on(scene, holdout_every, views):
    data, _, _ = scene
    if views == 1:
        np.save(data / "poses_bounds.npy", np.load(data / "poses_bounds.npy")[:1])
        for f in sorted((data / "images_2").iterdir())[1:]:
            f.unlink()
    with pytest.raises(InputError, match=rf"--holdout-every {holdout_every} holds out every one of the {views} view"):
        _parse(data, downscale_factor=2, holdout_every=holdout_every)


def test_error_images_of_different_sizes(scene):
    data, _, _ = scene
    imageio.imwrite(data / "images_2" / "IMG_0005.png", np.zeros((10, 16, 3), dtype=np.uint8))
    with pytest.raises(InputError, match=r"differ in size: IMG_0000.png is 16x12 but IMG_0005.png is 16x10"):
        _parse(data, downscale_factor=2)


# --- image_size: resized copies in a cache folder -----------------------------------------------------------------


def _write_noise_images(folder: Path, h: int, w: int, seed: int) -> None:
    """Random images, so that copies of different folders differ and a resize of one is recognisable."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(N_VIEWS):
        imageio.imwrite(folder / f"IMG_{i:04d}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


@pytest.fixture
def sized_scene(tmp_path):
    """(scene, cache): images/ at 30 x 40 and images_2/ at 15 x 20 (height x width) with different content, the
    hwf column at 24 x 32; the cache folder is next to the scene, not in it."""
    data = tmp_path / "scene"
    data.mkdir()
    np.save(data / "poses_bounds.npy", _to_llff_rows(_make_opengl_poses(), np.tile([2.0, 9.0], (N_VIEWS, 1))))
    _write_noise_images(data / "images", 30, 40, seed=1)
    _write_noise_images(data / "images_2", 15, 20, seed=2)
    return data, tmp_path / "cache"


@pytest.mark.parametrize(
    "size, factor, source",
    [((12, 16), 2, (15, 20)), ((29, 39), 1, (30, 40))],  # the second: per-axis ratios 29/30 and 39/40 differ
)
def test_image_size_scales_intrinsics_by_the_size_ratios(sized_scene, size, factor, source):
    data, cache = sized_scene
    (h, w), (h0, w0) = size, source
    for split in ("train", "test"):
        ref = _parse(data, split, downscale_factor=factor)  # the source copy as it is
        out = _parse(data, split, image_size=size, image_cache_dir=cache)
        cams, ref_cams = out.cameras, ref.cameras
        assert torch.allclose(cams.fx, ref_cams.fx * (w / w0)) and torch.allclose(cams.cx, ref_cams.cx * (w / w0))
        assert torch.allclose(cams.fy, ref_cams.fy * (h / h0)) and torch.allclose(cams.cy, ref_cams.cy * (h / h0))
        assert torch.allclose(cams.fx, torch.full_like(cams.fx, FOCAL0 * w / W0))
        assert torch.allclose(cams.fy, torch.full_like(cams.fy, FOCAL0 * h / H0))
        assert (cams.width == w).all() and (cams.height == h).all()
        assert torch.equal(cams.camera_to_worlds, ref_cams.camera_to_worlds)
        assert out.metadata["image_indices"].tolist() == ref.metadata["image_indices"].tolist()
        assert [p.stem for p in out.image_filenames] == [p.stem for p in ref.image_filenames]


def test_image_size_resizes_the_nearest_larger_copy(sized_scene, capsys):
    from PIL import Image

    data, cache = sized_scene
    out = _parse(data, holdout_every=0, image_size=(12, 16), image_cache_dir=cache)
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and "cached in" in printed and str(cache) in printed.replace("\n", "")
    assert len(out.image_filenames) == N_VIEWS
    for i, path in enumerate(out.image_filenames):
        assert cache in path.parents and path.suffix == ".png"
        with Image.open(path) as im:
            assert im.size == (16, 12)
            got = np.asarray(im)
        with Image.open(data / "images_2" / f"IMG_{i:04d}.png") as src:  # 15 x 20: the nearest larger copy
            np.testing.assert_array_equal(got, np.asarray(src.resize((16, 12), Image.Resampling.LANCZOS)))
        with Image.open(data / "images" / f"IMG_{i:04d}.png") as big:
            assert not np.array_equal(got, np.asarray(big.resize((16, 12), Image.Resampling.LANCZOS)))
    # a size that images_2/ cannot give is resized from images/, and a size on disk is read as it is
    bigger = _parse(data, image_size=(18, 24), image_cache_dir=cache)
    with Image.open(bigger.image_filenames[0]) as im, Image.open(data / "images" / "IMG_0001.png") as src:
        np.testing.assert_array_equal(np.asarray(im), np.asarray(src.resize((24, 18), Image.Resampling.LANCZOS)))
    same = _parse(data, image_size=(15, 20), image_cache_dir=cache)
    assert all(p.parent == data / "images_2" for p in same.image_filenames)


def test_image_size_loads_through_the_input_dataset(sized_scene):
    from nerfstudio.data.datasets.base_dataset import InputDataset

    data, cache = sized_scene
    item = InputDataset(_parse(data, image_size=(12, 16), image_cache_dir=cache))[0]
    assert item["image"].shape == (12, 16, 3)


def test_image_size_cache_is_reused_and_follows_the_sources(sized_scene, capsys):
    data, cache = sized_scene
    first = _parse(data, image_size=(12, 16), image_cache_dir=cache)
    written = _tree(cache)
    capsys.readouterr()
    second = _parse(data, "test", image_size=(12, 16), image_cache_dir=cache)
    assert "reused from" in capsys.readouterr().out
    assert _tree(cache) == written  # nothing rewritten
    assert second.image_filenames[0].parent == first.image_filenames[0].parent
    folders = [p for p in cache.iterdir()]
    assert len(folders) == 1 and folders[0].name.startswith("scene-") and (folders[0] / "complete.json").is_file()
    # an interrupted write (no marker yet) is completed, keeping the files already there
    (folders[0] / "complete.json").unlink()
    (folders[0] / "IMG_0003.png").unlink()
    _parse(data, image_size=(12, 16), image_cache_dir=cache)
    after = _tree(cache)
    assert set(after) == set(written)
    assert all(after[k] == v for k, v in written.items() if k.endswith(".png") and "IMG_0003" not in k)
    # another size, or a changed source file, gets a folder of its own
    _parse(data, image_size=(9, 12), image_cache_dir=cache)
    imageio.imwrite(data / "images_2" / "IMG_0005.png", np.zeros((15, 20, 3), np.uint8))
    changed = _parse(data, holdout_every=0, image_size=(12, 16), image_cache_dir=cache)
    assert len(list(cache.iterdir())) == 3
    assert np.asarray(imageio.imread(changed.image_filenames[5])).max() == 0


def test_image_size_writes_nothing_into_the_scene_folder(sized_scene, tmp_path, monkeypatch):
    data, _ = sized_scene
    before = _tree(data)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the default location
    out = _parse(data, image_size=(12, 16))
    _parse(data, "test", image_size=(12, 16))
    assert _tree(data) == before
    assert (tmp_path / "xdg" / "gnerf" / "llff") in out.image_filenames[0].parents[1:]


@pytest.mark.parametrize(
    "size, match",
    [
        ((0, 16), r"--image-size 0 16 is not a size: give two positive integers"),
        ((12, -16), r"--image-size 12 -16 is not a size"),
        ((12, 16, 3), r"--image-size 12 16 3 is not a size"),
        (
            (31, 41),
            r"--image-size 31 41 is larger than every copy .*images/ 30 x 40, images_2/ 15 x 20.* at most 30 x 40",
        ),
        (
            (12, 20),
            r"--image-size 12 20 \(height x width\) has aspect ratio 1.667 but the images .* are 15 x 20 "
            r"\(images_2/\), aspect ratio 1.333.*--image-size 12 16",
        ),
    ],
)
def test_image_size_bad_values_refused_in_one_line(sized_scene, size, match):
    data, cache = sized_scene
    before = _tree(data.parent)
    with pytest.raises(InputError, match=match) as err:
        _parse(data, image_size=size, image_cache_dir=cache)
    assert "\n" not in str(err.value)
    assert _tree(data.parent) == before  # nothing written anywhere


def test_image_size_cache_inside_the_scene_refused(sized_scene):
    data, _ = sized_scene
    with pytest.raises(InputError, match=r"is inside the scene folder .*--image-cache-dir") as err:
        _parse(data, image_size=(12, 16), image_cache_dir=data / "cache")
    assert "\n" not in str(err.value) and not (data / "cache").exists()


@pytest.mark.parametrize(
    "factors, message",
    [
        ({"near_factor": -1.0}, r"--near-factor must be a finite number > 0 \(the near and far planes .*\), got -1.0"),
        ({"far_factor": float("nan")}, r"--far-factor must be a finite number > 0 .*, got nan"),
        (
            {"near_factor": 50.0},
            r"--near-factor 50.0 and --far-factor 1.0 put the near plane .* at or beyond the far "
            r"plane .*; lower --near-factor or raise --far-factor",
        ),
    ],
)
def test_error_near_and_far_factors_are_named(scene, factors, message):
    data, _, _ = scene
    with pytest.raises(InputError, match=message):
        _parse(data, **factors)
