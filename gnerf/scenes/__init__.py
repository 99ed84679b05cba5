"""Procedural scenes rendered by the project's own code, so demos and tests need no download."""

from gnerf.scenes.procedural import (
    CAMERA_ANGLE_X,
    CAMERA_RADIUS,
    SCENE_OBJECTS,
    camera_poses,
    look_at,
    make_blender_scene,
    render_view,
)

__all__ = [
    "CAMERA_ANGLE_X",
    "CAMERA_RADIUS",
    "SCENE_OBJECTS",
    "camera_poses",
    "look_at",
    "make_blender_scene",
    "render_view",
]
