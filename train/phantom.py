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
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .io import read_grey8, write_json, write_png

log = logging.getLogger(__name__)

LABELS = ("MID", "VTB", "EPI")  # the seed's classes, in the order shapes are listed

Shape = list  # [label, "line" | "rect", [[x1, y1], [x2, y2]]]

_FIX = 4  # fractional bits for cv2 drawing: sub-pixel accurate geometry
_ONE = float(1 << _FIX)


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


# --------------------------------------------------------------------------- scene sampling


def _sample_scene(cfg: PhantomConfig, rng: np.random.Generator) -> Scene:
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


# --------------------------------------------------------------------------- geometry


class _Pose:
    """Maps anatomy (u, v) in depth units to image pixels: scale, lateral shift, tilt."""

    def __init__(self, cfg: PhantomConfig, sc: Scene):
        self.scale = cfg.height / sc.depth
        self.cx = (cfg.width - 1) / 2.0
        self.pivot = 0.35  # the probe rocks about a point a third of the way down
        self.c, self.s = math.cos(sc.tilt), math.sin(sc.tilt)
        self.shift = sc.shift

    def px(self, pts: np.ndarray) -> np.ndarray:
        """Anatomy points (..., 2) -> image pixel coordinates (..., 2) as float."""
        pts = np.asarray(pts, np.float64)
        u = pts[..., 0] + self.shift
        v = pts[..., 1] - self.pivot
        x = self.cx + self.scale * (self.c * u - self.s * v)
        y = self.scale * (self.pivot + self.s * u + self.c * v)
        return np.stack([x, y], axis=-1)

    def matrix(self) -> np.ndarray:
        """The same map as a 2x3 affine matrix, for warping fields laid out in anatomy units."""
        o = self.px(np.array([0.0, 0.0]))
        ex = self.px(np.array([1.0, 0.0])) - o
        ey = self.px(np.array([0.0, 1.0])) - o
        return np.array([[ex[0], ey[0], o[0]], [ex[1], ey[1], o[1]]])


class _Beams:
    """The probe's beam grid (rows = depth samples, cols = beams) and the scan conversion."""

    def __init__(self, cfg: PhantomConfig, sc: Scene):
        h, w = cfg.height, cfg.width
        self.h, self.w, self.sector = h, w, sc.sector
        self.cx = (w - 1) / 2.0
        self.scale = h / sc.depth
        if not sc.sector:
            self.fov = np.ones((h, w), np.uint8)
            self.col_px = np.ones(1, np.float32)  # lateral pixels per beam, per row
            return
        r0, a = sc.apex_radius, sc.half_angle
        self.r0, self.dtheta, self.theta0 = r0, 2 * a / (w - 1), -a
        radius = r0 + np.arange(h, dtype=np.float32)
        theta = (self.theta0 + self.dtheta * np.arange(w)).astype(np.float32)
        self.fwd_x = (self.cx + radius[:, None] * np.sin(theta)[None, :]).astype(np.float32)
        self.fwd_y = (radius[:, None] * np.cos(theta)[None, :] - r0).astype(np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        dx, dy = xx - self.cx, yy + r0
        self.inv_x = ((np.arctan2(dx, dy) - self.theta0) / self.dtheta).astype(np.float32)
        self.inv_y = (np.hypot(dx, dy) - r0).astype(np.float32)
        inside = (self.inv_x >= 0) & (self.inv_x <= w - 1) & (self.inv_y >= 0) & (self.inv_y <= h - 1)
        self.fov = inside.astype(np.uint8)
        self.col_px = (radius * self.dtheta).astype(np.float32)

    def to_beams(self, image: np.ndarray) -> np.ndarray:
        """Sample a Cartesian map along the beams (identity for a linear probe)."""
        if not self.sector:
            return image
        return cv2.remap(image, self.fwd_x, self.fwd_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def to_image(self, beams: np.ndarray) -> np.ndarray:
        """Scan-convert beam data to the display grid; black outside the field of view."""
        if not self.sector:
            return beams
        out = cv2.remap(beams, self.inv_x, self.inv_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return out * self.fov

    def lateral_of_cols(self, shift: float) -> np.ndarray:
        """Tissue lateral coordinate (depth units) under each beam at the skin, for the skin layers."""
        cols = np.arange(self.w, dtype=np.float64)
        if not self.sector:
            return (cols - self.cx) / self.scale - shift
        return self.r0 * (self.theta0 + self.dtheta * cols) / self.scale - shift

    def col_of_lateral(self, u: np.ndarray, shift: float) -> np.ndarray:
        """Inverse of lateral_of_cols."""
        if not self.sector:
            return self.cx + (u + shift) * self.scale
        return ((u + shift) * self.scale / self.r0 - self.theta0) / self.dtheta


# --------------------------------------------------------------------------- drawing helpers


def _db(x: float) -> float:
    """Intensity ratio of a level given in dB relative to muscle."""
    return 10.0 ** (x / 10.0)


def _fix(pts_px: np.ndarray) -> np.ndarray:
    """Pixel coordinates as cv2 fixed-point integers (keeps sub-pixel geometry at any image size)."""
    return np.round(np.asarray(pts_px) * _ONE).astype(np.int32)


def _polyline(img: np.ndarray, pts_px: np.ndarray, value: float, thickness: float, closed: bool = False) -> None:
    """Set the pixels of a thick polyline to `value` (at least one pixel thick, so small frames keep it)."""
    cv2.polylines(img, [_fix(pts_px)], closed, float(value), max(1, int(round(thickness))), cv2.LINE_8, _FIX)


def _fill(img: np.ndarray, pts_px: np.ndarray, value: float) -> None:
    """Set the pixels inside a polygon to `value`."""
    cv2.fillPoly(img, [_fix(pts_px)], float(value), cv2.LINE_8, _FIX)


def _ellipse(center: tuple[float, float], a: float, b: float, angle: float = 0.0,
             start: float = 0.0, stop: float = 2 * math.pi, n: int = 48) -> np.ndarray:
    """Points of an ellipse (arc) in anatomy units."""
    t = np.linspace(start, stop, n)
    x, y = a * np.cos(t), b * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], axis=-1)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float, db: float) -> np.ndarray:
    """Low-frequency multiplicative variation (tissue inhomogeneity), +-db roughly."""
    f = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    f /= f.std() + 1e-6
    return (10.0 ** (db * f / 10.0)).astype(np.float32)


# --------------------------------------------------------------------------- anatomy


@dataclass
class _Maps:
    """Cartesian maps of the deep anatomy: diffuse backscatter, specular amplitude, opacity."""

    echo: np.ndarray
    spec: np.ndarray
    opacity: np.ndarray


def _smooth_curve(pts: np.ndarray, passes: int = 2) -> np.ndarray:
    """Corner cutting, so that interfaces bend instead of kinking."""
    for _ in range(passes):
        a, b = pts[:-1], pts[1:]
        mid = np.stack([0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b], axis=1).reshape(-1, 2)
        pts = np.concatenate([pts[:1], mid, pts[-1:]])
    return pts


def _bright_line(maps: _Maps, pose: _Pose, rng: np.random.Generator, pts: np.ndarray, level_db: float,
                 thick: float, coherent: float = 0.5) -> None:
    """A reflecting interface: bright, uneven along its length, partly specular and partly speckled."""
    s = pose.scale
    px = pose.px(pts)
    n = len(px)
    step = max(1, n // 8)
    for i in range(0, n - 1, step):
        seg = px[i:min(n, i + step + 1)]
        t = abs((i + 0.5 * step) / (n - 1) - 0.5) * 2  # 0 in the middle, 1 at the ends
        level = level_db + rng.normal(0, 2.5) - 6.0 * max(0.0, t - 0.7) / 0.3
        _polyline(maps.echo, seg, _db(level) * (1 - coherent), thick * s)
        _polyline(maps.spec, seg, 10 ** (level / 20) * math.sqrt(coherent), max(1.0, 0.7 * thick * s))


def _bone(maps: _Maps, pose: _Pose, rng: np.random.Generator, surface: np.ndarray, bright_db: float,
          thick: float, tau: float) -> None:
    """A bone surface: a bright interface, and an opaque body just below it casting a shadow."""
    s = pose.scale
    surface = _smooth_curve(surface)
    halo = surface - np.array([0.0, 0.6 * thick])
    _polyline(maps.echo, pose.px(halo), _db(bright_db - 12), 2.5 * thick * s)  # periosteum / fascia
    _bright_line(maps, pose, rng, surface, bright_db, thick)
    body_t = max(2.0, 0.03 * s)
    body = surface + np.array([0.0, 0.5 * body_t / s + 0.4 * thick])
    _polyline(maps.opacity, pose.px(body), tau / body_t, body_t)


def _streak(rng: np.random.Generator, center: np.ndarray, angle: float, length: float) -> np.ndarray:
    """A short, slightly curved fibre streak (perimysium) in anatomy units."""
    t = np.linspace(-0.5, 0.5, 7)
    bow = rng.uniform(-0.12, 0.12) * length
    x = t * length
    y = bow * (1 - 4 * t * t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], axis=-1)


def _draw_streak(img: np.ndarray, pts_px: np.ndarray, level_db: float, thick_px: float) -> None:
    """Draw a streak brightest in its middle and fading towards both ends, like a fibre septum
    that leaves the scan plane."""
    n = len(pts_px)
    for i in range(n - 1):
        t = abs((i + 0.5) / (n - 1) - 0.5) * 2  # 0 in the middle, 1 at the ends
        thick = thick_px * (1.0 - 0.5 * t)
        _polyline(img, pts_px[i:i + 2], _db(level_db - 8 * t * t), thick)


def _muscle(maps: _Maps, pose: _Pose, rng: np.random.Generator, sc: Scene, v_floor: float) -> None:
    """Paraspinal compartments on both sides: lobular outlines, darker bellies, bright fibre streaks."""
    s = pose.scale
    top = sc.fat
    fibres = np.zeros_like(maps.echo)
    compartments = []
    for side in (-1.0, 1.0):
        b_mf = 0.5 * (v_floor - top) * rng.uniform(0.8, 0.95)
        compartments += [
            ((side * (sc.mid_hw + rng.uniform(0.14, 0.18)), top + b_mf + 0.015), rng.uniform(0.13, 0.17), b_mf),
            ((side * rng.uniform(0.45, 0.52), top + rng.uniform(0.17, 0.22)), rng.uniform(0.16, 0.22),
             rng.uniform(0.13, 0.18)),
            ((side * rng.uniform(0.8, 0.92), top + rng.uniform(0.15, 0.2)), rng.uniform(0.18, 0.24),
             rng.uniform(0.12, 0.16)),
            ((side * rng.uniform(0.55, 0.75), v_floor + rng.uniform(0.25, 0.32)), rng.uniform(0.18, 0.25),
             rng.uniform(0.14, 0.2)),
        ]
    for k, ((cu, cv_), a, b) in enumerate(compartments):
        deep = k % 4 == 3  # psoas: deep, darker, fewer visible septa
        angle = rng.uniform(-0.15, 0.15)
        c, s_ = math.cos(angle), math.sin(angle)
        _fill(maps.echo, pose.px(_ellipse((cu, cv_), a, b, angle)), _db(rng.uniform(-4, -1) - 3 * deep))
        for _ in range(int(math.pi * a * b * rng.uniform(160, 260) * (0.4 if deep else 1.0))):
            rho, phi = math.sqrt(rng.uniform(0.02, 0.85)), rng.uniform(0, 2 * math.pi)
            pu, pv = rho * a * math.cos(phi), rho * b * math.sin(phi)
            tangent = math.atan2(b * math.cos(phi), -a * math.sin(phi))
            tangent = (tangent + math.pi / 2) % math.pi - math.pi / 2  # fold to (-90, 90] degrees
            ang = 0.6 * float(np.clip(tangent, -0.5, 0.5)) + angle + rng.normal(0, 0.08)
            centre = np.array([cu + c * pu - s_ * pv, cv_ + s_ * pu + c * pv])
            pts = _streak(rng, centre, ang, rng.uniform(0.04, 0.13))
            _draw_streak(fibres, pose.px(pts), rng.uniform(12, 21), rng.uniform(0.004, 0.009) * s)
        # fascia: a bright outline over part of the compartment, mostly along its lower edge
        start = rng.uniform(-0.4, 0.5)
        arc = _ellipse((cu, cv_), a * 1.02, b * 1.02, angle, start, start + rng.uniform(1.0, 2.2), 30)
        _draw_streak(fibres, pose.px(arc), rng.uniform(7, 12), rng.uniform(0.004, 0.007) * s)
    for _ in range(int(rng.uniform(25, 40))):  # loose streaks between the compartments
        centre = np.array([rng.uniform(-1.6, 1.6), rng.uniform(top + 0.02, v_floor)])
        pts = _streak(rng, centre, rng.normal(0, 0.2), rng.uniform(0.04, 0.12))
        _draw_streak(fibres, pose.px(pts), rng.uniform(10, 18), rng.uniform(0.003, 0.006) * s)
    maps.echo += cv2.GaussianBlur(fibres, (0, 0), max(0.4, 0.0012 * s))


def _lamina(rng: np.random.Generator, side: float, u0: float, v0: float) -> tuple[np.ndarray, np.ndarray]:
    """Articular process / lamina surface rising from the window edge then sloping down laterally,
    and the transverse process further out and deeper."""
    du = np.array([-0.01, 0.0, 0.04, 0.09, 0.15, 0.21, 0.28])
    dv = np.array([0.03, 0.0, -0.012, -0.008, 0.012, 0.04, 0.07]) + rng.normal(0, 0.005, 7)
    lamina = np.stack([side * (u0 + du), v0 + dv], axis=-1)
    tu = u0 + 0.24 + np.array([0.0, 0.06, 0.12, 0.18])
    tv = v0 + rng.uniform(0.09, 0.13) + np.array([0.0, -0.01, -0.005, 0.012])
    return lamina, np.stack([side * tu, tv], axis=-1)


def _soft_band(maps: _Maps, pose: _Pose, quad: np.ndarray, level_db: float, soft_px: float) -> None:
    """Multiply the echo inside a polygon by a level, with blurred edges (no drawn-looking borders)."""
    mask = np.zeros_like(maps.echo)
    _fill(mask, pose.px(quad), 1.0)
    if soft_px > 0.3:
        mask = cv2.GaussianBlur(mask, (0, 0), soft_px)
    maps.echo *= 1.0 + (_db(level_db) - 1.0) * mask


def _draw_anatomy(cfg: PhantomConfig, sc: Scene, pose: _Pose) -> tuple[_Maps, dict]:
    """Draw the deep anatomy (below the fascia) and return the drawn structures' geometry."""
    h, w = cfg.height, cfg.width
    rng = np.random.default_rng(sc.texture_seed)
    s = pose.scale
    # tissue inhomogeneity laid out in anatomy units so that it moves with the probe
    res = 24.0
    shape = (int(1.6 * res), int(4.0 * res))
    field = _smooth_field(rng, shape, 1.5, 2.0) * _smooth_field(rng, shape, 0.7, 2.0) * np.float32(_db(-3))
    to_anat = np.array([[1 / res, 0, -2.0], [0, 1 / res, -0.1], [0, 0, 1]])
    m = pose.matrix() @ to_anat
    echo = cv2.warpAffine(field, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    maps = _Maps(echo, np.zeros((h, w), np.float32), np.zeros((h, w), np.float32))
    geo: dict = {}

    v_lam = sc.v_epi - rng.uniform(0.0, 0.035)
    _muscle(maps, pose, rng, sc, v_floor=v_lam)
    # deep to the laminae the tissue (and what reaches it) is darker than the paraspinal muscles
    _soft_band(maps, pose, np.array([[-2.5, v_lam + 0.06], [2.5, v_lam + 0.06], [2.5, 2.0], [-2.5, 2.0]]),
               -5, 0.03 * s)
    mid_bottom = sc.v_vtb + 0.5 * sc.vtb_th

    if sc.view == "spinous":
        # spinous process tip: a bright cap, convex upwards, with a dense shadow straight below
        cap_hw = rng.uniform(0.05, 0.075)
        t = np.linspace(-1, 1, 9)
        cap = np.stack([cap_hw * t, sc.v_cap + 0.022 * t * t], axis=-1)
        _soft_band(maps, pose, np.array([[-cap_hw * 1.3, sc.fat], [cap_hw * 1.3, sc.fat],
                                         [cap_hw * 1.3, sc.v_cap], [-cap_hw * 1.3, sc.v_cap]]), -6, 0.01 * s)
        _bright_line(maps, pose, rng, cap, rng.uniform(24, 29), 0.012)
        column = np.array([[-cap_hw, sc.v_cap + 0.012], [cap_hw, sc.v_cap + 0.012],
                           [cap_hw * 0.9, sc.v_epi + 0.1], [-cap_hw * 0.9, sc.v_epi + 0.1]])
        _fill(maps.opacity, pose.px(column), rng.uniform(3.0, 4.0) / max(2.0, 0.03 * s))
        geo["MID"] = (np.array([0.0, sc.v_cap - 0.01]), np.array([0.0, mid_bottom]))
        for side in (-1.0, 1.0):
            du = np.array([0.0, 0.08, 0.2, 0.32, 0.44])
            dv = np.array([0.0, 0.02, 0.05, 0.09, 0.11]) + rng.normal(0, 0.006, 5)
            lam = np.stack([side * (cap_hw * 0.9 + du), v_lam - 0.06 + dv], axis=-1)
            _bone(maps, pose, rng, lam, rng.uniform(21, 26), 0.01, rng.uniform(1.1, 1.8))
        return maps, geo

    # interspinous ligament: a hypoechoic band on the midline between the multifidus muscles
    top, bottom = sc.fat, sc.v_epi - 0.5 * sc.epi_th
    hw = sc.mid_hw
    stripe = np.array([[-hw * 0.8, top], [hw * 0.8, top], [hw * 1.1, bottom], [-hw * 1.1, bottom]])
    _soft_band(maps, pose, stripe, rng.uniform(-15, -10), 0.25 * hw * s)
    geo["MID"] = (np.array([0.0, sc.fat + 0.01]), np.array([0.0, mid_bottom]))

    # spinal canal (anechoic CSF) seen through the interlaminar window
    wh = sc.window_hw + 0.04
    canal = np.array([[-wh, sc.v_epi], [wh, sc.v_epi], [wh, sc.v_vtb], [-wh, sc.v_vtb]])
    _soft_band(maps, pose, canal, -16, 0.005 * s)

    # posterior complex (ligamentum flavum + posterior dura): a bright horizontal line
    if sc.show_epi:
        ends = np.array([[-sc.epi_hw, sc.v_epi], [sc.epi_hw, sc.v_epi]])
        line = np.stack([np.linspace(-sc.epi_hw, sc.epi_hw, 13), np.full(13, sc.v_epi)], axis=-1)
        inner = line.copy()
        inner[[0, -1], 0] += np.array([0.5, -0.5]) * sc.epi_th  # round caps stay within the ends
        _bright_line(maps, pose, rng, inner, rng.uniform(23, 27), sc.epi_th, coherent=0.4)
        _polyline(maps.opacity, pose.px(line), 0.25 / max(1.0, sc.epi_th * s), sc.epi_th * s)
        geo["EPI"] = (ends[0], ends[1])

    # anterior complex (posterior longitudinal ligament + vertebral body): bright band, shadow below
    top_v, th, hw_v = sc.v_vtb, sc.vtb_th, sc.vtb_hw
    band = np.array([[-hw_v, top_v], [hw_v, top_v], [hw_v, top_v + th], [-hw_v, top_v + th]])
    level = rng.uniform(11, 15)
    edges = np.linspace(-hw_v, hw_v, 9)
    for j in range(8):  # patchy along its length, dimmer at the ends
        end = abs(j - 3.5) > 3
        for k in range(4):  # brightest at the surface, fading into the bone
            v0, v1 = top_v + th * k / 4, top_v + th * (k + 1) / 4
            cell = np.array([[edges[j], v0], [edges[j + 1], v0], [edges[j + 1], v1], [edges[j], v1]])
            _fill(maps.echo, pose.px(cell), _db(level - 1.5 * k - 4 * end + rng.normal(0, 1.5)))
    surf_t = 0.45 * th
    surface = np.stack([np.linspace(-hw_v, hw_v, 13), np.full(13, top_v + 0.5 * surf_t)], axis=-1)
    surface[[0, -1], 0] += np.array([0.5, -0.5]) * surf_t
    _bright_line(maps, pose, rng, surface, rng.uniform(22, 27), surf_t, coherent=0.4)
    body_w = sc.window_hw + 0.2  # the vertebral body is wider than what the window shows
    body_top, body_bottom = top_v + 0.75 * th, top_v + th + 0.04
    body = np.array([[-body_w, body_top], [body_w, body_top], [body_w, body_bottom], [-body_w, body_bottom]])
    _fill(maps.opacity, pose.px(body), rng.uniform(2.2, 3.0) / max(2.0, (body_bottom - body_top) * s))
    geo["VTB"] = band

    # articular processes / laminae on both sides of the window, transverse processes further out
    for side in (-1.0, 1.0):
        lamina, transverse = _lamina(rng, side, sc.window_hw, v_lam)
        _bone(maps, pose, rng, lamina, rng.uniform(21, 26), 0.01, rng.uniform(1.1, 1.8))
        _bone(maps, pose, rng, transverse, rng.uniform(19, 24), 0.009, rng.uniform(1.0, 1.6))
    return maps, geo


def _skin_layers(sc: Scene, beams: _Beams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skin, subcutaneous fat with septa and the fascia line, laid out along the beams."""
    h, w = beams.h, beams.w
    s = beams.scale
    u = beams.lateral_of_cols(sc.shift)
    phase = rng.uniform(0, 2 * math.pi, 2)
    fascia = sc.fat + 0.006 * np.sin(3.1 * u + phase[0]) + 0.004 * np.sin(7.3 * u + phase[1])
    fascia_row = (fascia * s).astype(np.float32)
    rows = np.arange(h, dtype=np.float32)[:, None]
    echo = np.full((h, w), _db(rng.uniform(-9, -6)), np.float32)
    skin_rows = rng.uniform(0.025, 0.045) * s
    echo[rows[:, 0] < skin_rows] = _db(rng.uniform(9, 13))
    spec = np.zeros((h, w), np.float32)
    # septa: thin wavy bright lines inside the fat
    for _ in range(int(rng.integers(1, 5))):
        depth = rng.uniform(0.5, 0.9) * sc.fat + 0.01
        start = rng.uniform(-1.6, 1.2)
        uu = np.linspace(start, start + rng.uniform(0.15, 0.5), 20)
        vv = depth + 0.006 * np.sin(14 * uu + rng.uniform(0, 6))
        pts = np.stack([beams.col_of_lateral(uu, sc.shift), vv * s], axis=-1)
        _polyline(echo, pts, _db(rng.uniform(5, 10)), max(1.0, 0.004 * s))
    # skin entry echo and the thoracolumbar fascia: bright, fairly smooth lines
    spec[: max(1, int(round(0.006 * s)))] = 10 ** (18 / 20)
    fascia_pts = np.stack([np.arange(w, dtype=np.float32), fascia_row], axis=-1)
    level = rng.uniform(13, 18)
    for i in range(0, w - 1, max(2, w // 24)):  # uneven along its length
        seg = fascia_pts[i:i + max(2, w // 24) + 1]
        gain = rng.normal(0, 2.5)
        _polyline(spec, seg, 10 ** ((level + gain - 4) / 20), max(1.0, 0.006 * s))
        _polyline(echo, seg + np.array([0, 0.006 * s], np.float32), _db(level + gain - 6), max(1.0, 0.012 * s))
    return echo, spec, fascia_row


# --------------------------------------------------------------------------- image formation


def _gauss_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian; explicit so that the speckle normalisation knows the exact taps."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _psf(field: np.ndarray, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
    """Separable blur: kx across the beams, ky along them."""
    return cv2.sepFilter2D(field, cv2.CV_32F, kx, ky, borderType=cv2.BORDER_REFLECT)


def _form_image(sc: Scene, beams: _Beams, echo: np.ndarray, spec: np.ndarray, opacity: np.ndarray,
                noise: np.ndarray) -> np.ndarray:
    """Shadowing, speckle, attenuation/TGC, log compression and scan conversion -> uint8 image."""
    h = beams.h
    col_px = float(beams.col_px[h // 2]) if beams.sector else 1.0  # lateral pixels per beam
    # acoustic shadow: amplitude transmission accumulated down each beam (excluding the sample itself);
    # the beam has a width, so shadows behind an edge are soft rather than cut with a knife
    tau = np.cumsum(opacity, axis=0) - 0.5 * opacity
    k_shadow = _gauss_kernel(max(0.5, 0.02 * beams.scale / max(1e-3, col_px)))
    trans = _psf(np.exp(-tau).astype(np.float32), k_shadow, np.ones(1, np.float32))
    depth = np.arange(h, dtype=np.float32) / beams.scale
    att = (10 ** (-sc.atten_db * depth / 20)).astype(np.float32)[:, None]
    gain = att * (10 ** (sc.tgc_fraction * sc.atten_db * depth / 20)).astype(np.float32)[:, None]
    # clutter (reverberation, side lobes) is not shadowed; receiver noise is constant after the
    # attenuation, so before it it grows with depth; both are band-limited like the echoes
    electronic = np.float32(10 ** (-40 / 20)) / att
    scatter = np.sqrt(echo * trans * trans + np.float32(_db(sc.clutter_db)) + electronic * electronic)
    # speckle: complex Gaussian scatterers blurred by an anisotropic PSF (wider across the beam)
    kx, ky = _gauss_kernel(sc.sigma_lateral / max(1e-3, col_px)), _gauss_kernel(sc.sigma_axial)
    norm = np.float32(1.0 / math.sqrt(float((kx**2).sum() * (ky**2).sum())))  # unit echo -> unit intensity
    coherent = _psf(spec * trans, kx, ky)
    power = np.zeros_like(echo)
    for look in noise:  # spatial compounding: average the intensity of independent speckle looks
        re = _psf(look[0] * scatter, kx, ky) * norm + coherent
        im = _psf(look[1] * scatter, kx, ky) * norm
        power += re * re + im * im
    db = 10 * np.log10(power * (gain * gain / len(noise)) + 1e-12)
    muscle_grey = 0.23  # where muscle (0 dB) sits on the display scale
    low = sc.gain - muscle_grey * sc.dynamic_range
    grey = np.clip((db - low) * (255.0 / sc.dynamic_range), 0, 255).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), max(0.35, h / 480.0))  # the scanner's display smoothing
    return np.clip(beams.to_image(grey) + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- annotations


def _line_in_view(p: np.ndarray, q: np.ndarray, view: np.ndarray, min_fraction: float) -> list | None:
    """Integer end points of the longest run of segment p-q inside the field of view, or None when
    less than `min_fraction` of it is seen (a structure cut by the sector edge is not annotated)."""
    h, w = view.shape
    t = np.linspace(0.0, 1.0, 97)
    pts = p[None, :] + t[:, None] * (q - p)[None, :]
    xi, yi = np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)
    ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    ok[ok] = view[yi[ok], xi[ok]] > 0
    best, start = (0, 0), None
    for i, inside in enumerate(np.append(ok, False)):
        if inside and start is None:
            start = i
        elif not inside and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    n = best[1] - best[0]
    if n / len(t) < min_fraction or n < 2:
        return None
    a, b = pts[best[0]], pts[best[1] - 1]
    return [[int(round(a[0])), int(round(a[1]))], [int(round(b[0])), int(round(b[1]))]]


def _annotate(cfg: PhantomConfig, pose: _Pose, beams: _Beams, geo: dict) -> list[Shape]:
    """Seed-format shapes for the structures that are drawn and inside the field of view."""
    h, w = cfg.height, cfg.width
    view = cv2.erode(beams.fov, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    if "MID" not in geo:
        return []
    p, q = (pose.px(x) for x in geo["MID"])
    mid = _line_in_view(p, q, view, 0.5)
    if mid is None or math.dist(*mid) < 0.25 * h:
        return []  # the seed's anatomical rule: no midline, no VTB or EPI either
    shapes: list[Shape] = [["MID", "line", mid]]
    if "VTB" in geo:
        corners = pose.px(geo["VTB"])
        full = np.zeros((h + 2 * h, w + 2 * w), np.uint8)  # big canvas: the unclipped area
        _fill(full, corners + np.array([w, h]), 1)
        seen = full[h:2 * h, w:2 * w] & view
        if full.sum() and seen.sum() >= 0.6 * full.sum():
            x, y, bw, bh = cv2.boundingRect(seen)
            shapes.append(["VTB", "rect", [[x, y], [x + bw - 1, y + bh - 1]]])
    if "EPI" in geo:
        p, q = (pose.px(x) for x in geo["EPI"])
        epi = _line_in_view(p, q, view, 0.7)
        if epi is not None:
            shapes.append(["EPI", "line", epi])
    return shapes


# --------------------------------------------------------------------------- public API


def _render(cfg: PhantomConfig, sc: Scene, noise: np.ndarray) -> tuple[np.ndarray, list[Shape]]:
    """Draw the scene, form the ultrasound image and annotate what is in view."""
    pose, beams = _Pose(cfg, sc), _Beams(cfg, sc)
    maps, geo = _draw_anatomy(cfg, sc, pose)
    layer_rng = np.random.default_rng([sc.texture_seed, 1])
    l_echo, l_spec, fascia_row = _skin_layers(sc, beams, layer_rng)
    deep = np.arange(cfg.height, dtype=np.float32)[:, None] >= fascia_row[None, :]
    echo = np.where(deep, beams.to_beams(maps.echo), l_echo)
    spec = np.where(deep, beams.to_beams(maps.spec), l_spec)
    opacity = np.where(deep, beams.to_beams(maps.opacity), 0.0).astype(np.float32)
    image = _form_image(sc, beams, echo, spec, opacity, noise)
    return image, _annotate(cfg, pose, beams, geo)


_LOOKS = 3  # compounded speckle looks: real scanners show less speckle contrast than one look


def _noise(rng: np.random.Generator, cfg: PhantomConfig) -> np.ndarray:
    """Complex Gaussian scatterer field, (looks, re/im, H, W), unit mean intensity."""
    shape = (_LOOKS, 2, cfg.height, cfg.width)
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(0.5))


def generate_frame(cfg: PhantomConfig, seed: int, index: int) -> tuple[np.ndarray, list[Shape]]:
    """One frame and its seed-format shapes; the same (seed, index) always gives the same bytes."""
    rng = np.random.default_rng([seed, index])
    scene = _sample_scene(cfg, rng)
    return _render(cfg, scene, _noise(rng, cfg))


def generate_cine(cfg: PhantomConfig, seed: int, n_frames: int, sweep: float = 1.0,
                  correlation: float = 0.75) -> list[tuple[np.ndarray, list[Shape]]]:
    """A probe sweep across the midline: one anatomy, the lateral offset eased from one side to the
    other (``sweep`` scales its extent; 1.0 takes the midline out of view at both ends), slight
    rocking, and speckle that moves with the tissue but partly decorrelates (``correlation``)."""
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    if not 0.0 <= correlation <= 1.0:
        raise ValueError("correlation must be in [0, 1]")
    rng = np.random.default_rng([seed, 0x63696E65, n_frames])
    base = replace(_sample_scene(replace(cfg, missing_rate=0.0, spinous_rate=0.0, epi_missing_rate=0.0,
                                         vtb_missing_rate=0.0), rng), view="interlaminar", show_epi=True)
    scale = cfg.height / base.depth
    extent = sweep * (0.5 * cfg.width / scale + base.vtb_hw + 0.1)
    rock = rng.uniform(0, 2 * math.pi)
    noise = _noise(rng, cfg)
    beams = _Beams(cfg, base)
    col_px = float(beams.col_px[cfg.height // 2]) if base.sector else 1.0
    frames: list[tuple[np.ndarray, list[Shape]]] = []
    previous_shift, carried = None, 0.0
    for i in range(n_frames):
        phase = i / max(1, n_frames - 1)
        shift = -extent * math.cos(math.pi * phase)
        tilt = base.tilt + math.radians(1.0) * math.sin(2 * math.pi * phase + rock)
        if previous_shift is not None:
            carried += (shift - previous_shift) * scale / col_px
            step = int(round(carried))
            carried -= step
            fresh = _noise(rng, cfg)
            noise = correlation * np.roll(noise, step, axis=-1) + math.sqrt(1 - correlation**2) * fresh
        previous_shift = shift
        frames.append(_render(cfg, replace(base, shift=shift, tilt=tilt), noise))
    return frames


def frame_name(index: int, count: int) -> str:
    """Image key for frame `index` of `count`, zero-padded so that names sort in frame order."""
    return f"phantom_{index:0{max(4, len(str(max(count - 1, 0))))}d}"


def write_dataset(out_dir: str | Path, count: int, seed: int,
                  cfg: PhantomConfig | None = None) -> dict[str, list[Shape]]:
    """Write `count` frames as a seed-format data set (images/<name>.png, then annotations.json)."""
    if count < 1:
        raise ValueError("count must be >= 1")
    cfg = cfg or PhantomConfig()
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    annotations: dict[str, list[Shape]] = {}
    for index in range(count):
        image, shapes = generate_frame(cfg, seed, index)
        name = frame_name(index, count)
        write_png(images / f"{name}.png", image)
        annotations[name] = shapes
    stale = sorted(p.name for p in images.glob("*.png") if p.stem not in annotations)
    if stale:
        log.warning("%s holds %d PNG files not in this data set (e.g. %s)", images, len(stale), stale[0])
    write_json(out / "annotations.json", annotations)
    return annotations


# --------------------------------------------------------------------------- contact sheet

_COLOURS = {"MID": (255, 80, 80), "VTB": (80, 220, 80), "EPI": (80, 160, 255)}  # RGB


def overlay_shapes(image: np.ndarray, shapes: Sequence[Shape], alpha: float = 0.4) -> np.ndarray:
    """RGB copy of a grey frame with the shapes drawn the way masks are drawn (10-px lines, filled rects)."""
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    layer = rgb.copy()
    for label, kind, (p, q) in shapes:
        if kind == "rect":
            cv2.rectangle(layer, tuple(p), tuple(q), _COLOURS[label], -1)
        else:
            cv2.line(layer, tuple(p), tuple(q), _COLOURS[label], 10)
    out = cv2.addWeighted(layer, alpha, rgb, 1 - alpha, 0)
    for label, kind, (p, q) in shapes:  # crisp outline on top
        if kind == "rect":
            cv2.rectangle(out, tuple(p), tuple(q), _COLOURS[label], 2)
        else:
            cv2.line(out, tuple(p), tuple(q), _COLOURS[label], 2)
    return out


def _label(tile: np.ndarray, text: str) -> None:
    """Caption in the tile's top-left corner, outlined so that it reads on any background."""
    scale = tile.shape[1] / 400
    org = (6, int(18 * scale) + 4)
    cv2.putText(tile, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale, (255, 255, 0), 1, cv2.LINE_AA)


def _fit(image: np.ndarray, tw: int, th: int) -> np.ndarray:
    """Resize to fit tw x th keeping the aspect ratio, centred on black."""
    h, w = image.shape[:2]
    f = min(tw / w, th / h)
    small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    tile = np.zeros((th, tw) + image.shape[2:], image.dtype)
    y, x = (th - small.shape[0]) // 2, (tw - small.shape[1]) // 2
    tile[y:y + small.shape[0], x:x + small.shape[1]] = small
    return tile


def contact_sheet(path: str | Path, cfg: PhantomConfig | None = None, seed: int = 0,
                  sample: str | Path | None = None, cols: int = 4, rows: int = 3, tile_width: int = 320) -> Path:
    """A grid of phantom frames (every other one with its annotation drawn) and, if given, the real
    sample frame in the first tile, for judging the phantom by eye. Written as an RGB PNG."""
    cfg = cfg or PhantomConfig()
    tile_h = round(tile_width * cfg.height / cfg.width)
    n = rows * cols - (1 if sample else 0)
    frames = [(i, *generate_frame(cfg, seed, i)) for i in range(n)]
    # show the rarer kinds too: an off-midline frame ([]) and a spinous-process view (MID only)
    slot, index = n - 1, n
    for wanted in ([], ["MID"]):
        if n < 4 or any([s[0] for s in shapes] == wanted for _, _, shapes in frames):
            continue
        for index in range(index, index + 500):
            image, shapes = generate_frame(cfg, seed, index)
            if [s[0] for s in shapes] == wanted:
                frames[slot] = (index, image, shapes)
                slot -= 1
                break
        index += 1
    tiles = []
    if sample:
        real = _fit(cv2.cvtColor(read_grey8(sample), cv2.COLOR_GRAY2RGB), tile_width, tile_h)
        _label(real, f"REAL sample {Path(sample).stem}")
        tiles.append(real)
    for k, (i, image, shapes) in enumerate(frames):
        annotated = k % 2 == 1
        rgb = overlay_shapes(image, shapes) if annotated else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        tile = _fit(rgb, tile_width, tile_h)
        labels = [label for label, _, _ in shapes]
        present = {0: "none (off-midline)", 1: "MID only"}.get(len(labels), " ".join(labels))
        _label(tile, f"phantom {i}: {present}" + (" [drawn]" if annotated else ""))
        tiles.append(tile)
    grid = np.concatenate([np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(rows)], axis=0)
    path = Path(path)
    write_png(path, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path
