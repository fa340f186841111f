"""Synthetic spinal phantom: transverse lumbar ultrasound frames with seed-format annotations.

The real spinal images are private, so the project ships its own data set. Each frame is built the
way a scanner forms one: an echogenicity map of the anatomy (skin, fat, striated paraspinal
muscle, bone surfaces, posterior and anterior complex) is sampled along the beams, bone casts
acoustic shadows along each beam, random scatterers are blurred by an anisotropic point-spread
function (Rayleigh speckle), depth attenuation is partly undone by time-gain compensation, the
envelope is log-compressed and scan-converted into a linear or sector field of view.

Annotations are not guessed from the pixels: they come from the same geometry that drew the frame,
so the MID line runs along the midline stripe (or spinous shadow), the EPI line along the bright
posterior complex and the VTB rectangle around the bright anterior-complex band.

Units: anatomy is laid out in "depth units" (1.0 = the image height at the nominal depth setting),
u lateral (0 on the midline, positive to the image right), v depth below the skin.

Modules: config (limits and scene draw), geometry (pose, beams), draw (primitives), anatomy (tissue
maps), imaging (image formation), annotate (shapes), generate (frames, cine, data set), sheet
(contact sheet).
"""

from .config import LABELS, PhantomConfig, Scene, Shape
from .generate import frame_name, generate_cine, generate_frame, phantom_frames, write_dataset
from .sheet import contact_sheet, overlay_shapes

__all__ = [
    "LABELS",
    "PhantomConfig",
    "Scene",
    "Shape",
    "contact_sheet",
    "frame_name",
    "generate_cine",
    "generate_frame",
    "overlay_shapes",
    "phantom_frames",
    "write_dataset",
]
