"""What a phantom frame is made of: the data set's limits (PhantomConfig), one frame's random scene
(Scene) and the draw that picks it, view kind first so that the anatomy fits the view."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LABELS = ("MID", "VTB", "EPI")  # the seed's classes, in the order shapes are listed

Shape = list  # [label, "line" | "rect", [[x1, y1], [x2, y2]]]


@dataclass(frozen=True)
class PhantomConfig:
    """What kind of frames to make; every frame draws its own random scene within these limits."""

    height: int = 480
    width: int = 640
    missing_rate: float = 0.15  # off-midline frames: no MID, hence no VTB/EPI either -> []
    spinous_rate: float = 0.08  # of the midline frames: over a spinous process, MID only
    epi_missing_rate: float = 0.06  # of the interlaminar frames: posterior complex drops out
    vtb_missing_rate: float = 0.06  # of the interlaminar frames: depth too shallow to reach VTB
    sector_rate: float = 0.5  # curvilinear (sector) field of view, else linear
    max_tilt_deg: float = 5.0
    max_shift: float = 0.06  # lateral offset of the midline, fraction of the width
    depth_range: tuple[float, float] = (0.88, 1.12)  # depth setting, 1.0 = nominal
    gain_db: float = 4.0  # overall gain varies by +-gain_db

    def __post_init__(self) -> None:
        if self.height < 48 or self.width < 48:
            raise ValueError(f"phantom frames must be at least 48x48, got {self.height}x{self.width}")
        for name in ("missing_rate", "spinous_rate", "epi_missing_rate", "vtb_missing_rate", "sector_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        lo, hi = self.depth_range
        if not 0.5 <= lo <= hi <= 2.0:
            raise ValueError(f"depth_range must satisfy 0.5 <= lo <= hi <= 2, got {self.depth_range}")
        if not 0 <= self.max_tilt_deg <= 20 or not 0 <= self.max_shift <= 0.3 or self.gain_db < 0:
            raise ValueError("max_tilt_deg must be in [0, 20], max_shift in [0, 0.3], gain_db >= 0")


@dataclass(frozen=True)
class Scene:
    """Everything random about one frame: anatomy, probe, pose and acquisition settings."""

    view: str  # "interlaminar", "spinous" (over a spinous process) or "off" (off the midline)
    sector: bool
    apex_radius: float  # sector: distance from the virtual apex to the skin, in pixels
    half_angle: float  # sector: half opening angle, radians
    depth: float  # depth setting: the image shows `depth` depth units
    shift: float  # lateral position of the midline, depth units right of the image centre
    tilt: float  # radians
    fat: float  # skin-to-fascia thickness
    v_epi: float
    epi_hw: float
    epi_th: float
    show_epi: bool
    v_vtb: float  # top of the anterior-complex band
    vtb_hw: float
    vtb_th: float
    window_hw: float  # half width of the interlaminar window between the articular processes
    mid_hw: float  # half width of the hypoechoic interspinous stripe
    v_cap: float  # spinous view: depth of the spinous process tip
    sigma_axial: float  # PSF, pixels
    sigma_lateral: float
    atten_db: float  # two-way attenuation over one depth unit
    tgc_fraction: float  # part of it the TGC gives back
    gain: float  # dB
    dynamic_range: float  # dB
    clutter_db: float
    texture_seed: int


def sample_scene(cfg: PhantomConfig, rng: np.random.Generator) -> Scene:
    """Draw one scene: view kind first, then anatomy that fits it, then probe and settings."""
    h, w = cfg.height, cfg.width
    r = rng.random()
    if r < cfg.missing_rate:
        view = "off"
    elif rng.random() < cfg.spinous_rate:
        view = "spinous"
    else:
        view = "interlaminar"
    fat = rng.uniform(0.06, 0.10)
    v_epi = rng.uniform(0.42, 0.52)
    v_vtb = v_epi + rng.uniform(0.22, 0.30)
    vtb_th = rng.uniform(0.035, 0.055)
    vtb_hw = rng.uniform(0.12, 0.18)
    epi_hw = rng.uniform(0.06, 0.10)
    epi_th = rng.uniform(0.012, 0.018)
    window_hw = max(vtb_hw, epi_hw) + rng.uniform(0.015, 0.04)
    show_epi = view == "interlaminar" and rng.random() >= cfg.epi_missing_rate
    drop_vtb = view == "interlaminar" and rng.random() < cfg.vtb_missing_rate
    if drop_vtb:  # zoomed in: the band lies below the bottom of the image, EPI still well inside
        depth = rng.uniform(v_epi / 0.78, (v_vtb - 0.02) / 1.06)
    else:  # the band and a strip of its shadow fit
        depth = max(rng.uniform(*cfg.depth_range), (v_vtb + vtb_th + 0.05) / 0.97)
    scale = h / depth  # pixels per depth unit
    half_span = 0.5 * w / scale
    if view == "off":
        shift = float(rng.choice([-1, 1])) * (half_span + vtb_hw + rng.uniform(0.05, 0.2))
    else:
        shift = rng.uniform(-1, 1) * cfg.max_shift * w / scale
    sector = bool(rng.random() < cfg.sector_rate)
    apex_radius = rng.uniform(0.6, 1.4) * h
    half_angle = math.asin(min(0.95, 0.5 * w * rng.uniform(0.88, 1.0) / (apex_radius + h)))
    k = h / 480.0
    return Scene(
        view=view, sector=sector, apex_radius=apex_radius, half_angle=half_angle, depth=depth,
        shift=shift, tilt=math.radians(rng.uniform(-1, 1) * cfg.max_tilt_deg), fat=fat,
        v_epi=v_epi, epi_hw=epi_hw, epi_th=epi_th, show_epi=show_epi, v_vtb=v_vtb, vtb_hw=vtb_hw,
        vtb_th=vtb_th, window_hw=window_hw, mid_hw=rng.uniform(0.018, 0.028),
        v_cap=fat + rng.uniform(0.03, 0.07),
        sigma_axial=max(0.45, rng.uniform(1.3, 1.9) * k), sigma_lateral=max(0.7, rng.uniform(3.0, 4.5) * k),
        atten_db=rng.uniform(24, 34), tgc_fraction=rng.uniform(0.6, 0.85),
        gain=rng.uniform(-1, 1) * cfg.gain_db, dynamic_range=rng.uniform(44, 54),
        clutter_db=rng.uniform(-14, -9), texture_seed=int(rng.integers(2**62)),
    )
