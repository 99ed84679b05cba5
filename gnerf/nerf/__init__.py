"""NeRF components of gnerf: dataparsers, models and method configurations for nerfstudio."""
