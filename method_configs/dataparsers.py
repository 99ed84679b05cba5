"""``llff-data``: forward-facing captures in LLFF format (``poses_bounds.npy`` + images), BLEFF included."""

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from gnerf.nerf.llff_dataparser import LLFFDataParserConfig

llff_data = DataParserSpecification(
    config=LLFFDataParserConfig(),
    description="LLFF / BLEFF forward-facing scenes: poses_bounds.npy with images/ or images_<factor>/ (gnerf)",
)
