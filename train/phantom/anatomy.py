"""The tissue: echogenicity, specular and opacity maps of the deep anatomy (muscle, laminae, posterior
and anterior complex, spinous process) with the geometry that the annotations follow, and the skin
and fat layers laid out along the beams."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .config import PhantomConfig, Scene
from .draw import ellipse, fill, from_db, polyline, smooth_field
from .geometry import Beams, Pose


@dataclass
class Maps:
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


def _bright_line(maps: Maps, pose: Pose, rng: np.random.Generator, pts: np.ndarray, level_db: float,
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
        polyline(maps.echo, seg, from_db(level) * (1 - coherent), thick * s)
        polyline(maps.spec, seg, 10 ** (level / 20) * math.sqrt(coherent), max(1.0, 0.7 * thick * s))


def _bone(maps: Maps, pose: Pose, rng: np.random.Generator, surface: np.ndarray, bright_db: float,
          thick: float, tau: float) -> None:
    """A bone surface: a bright interface, and an opaque body just below it casting a shadow."""
    s = pose.scale
    surface = _smooth_curve(surface)
    halo = surface - np.array([0.0, 0.6 * thick])
    polyline(maps.echo, pose.px(halo), from_db(bright_db - 12), 2.5 * thick * s)  # periosteum / fascia
    _bright_line(maps, pose, rng, surface, bright_db, thick)
    body_t = max(2.0, 0.03 * s)
    body = surface + np.array([0.0, 0.5 * body_t / s + 0.4 * thick])
    polyline(maps.opacity, pose.px(body), tau / body_t, body_t)


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
        polyline(img, pts_px[i:i + 2], from_db(level_db - 8 * t * t), thick)


def _muscle(maps: Maps, pose: Pose, rng: np.random.Generator, sc: Scene, v_floor: float) -> None:
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
        fill(maps.echo, pose.px(ellipse((cu, cv_), a, b, angle)), from_db(rng.uniform(-4, -1) - 3 * deep))
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
        arc = ellipse((cu, cv_), a * 1.02, b * 1.02, angle, start, start + rng.uniform(1.0, 2.2), 30)
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


def _soft_band(maps: Maps, pose: Pose, quad: np.ndarray, level_db: float, soft_px: float) -> None:
    """Multiply the echo inside a polygon by a level, with blurred edges (no drawn-looking borders)."""
    mask = np.zeros_like(maps.echo)
    fill(mask, pose.px(quad), 1.0)
    if soft_px > 0.3:
        mask = cv2.GaussianBlur(mask, (0, 0), soft_px)
    maps.echo *= 1.0 + (from_db(level_db) - 1.0) * mask


def draw_anatomy(cfg: PhantomConfig, sc: Scene, pose: Pose) -> tuple[Maps, dict]:
    """Draw the deep anatomy (below the fascia) and return the drawn structures' geometry."""
    h, w = cfg.height, cfg.width
    rng = np.random.default_rng(sc.texture_seed)
    s = pose.scale
    # tissue inhomogeneity laid out in anatomy units so that it moves with the probe
    res = 24.0
    shape = (int(1.6 * res), int(4.0 * res))
    field = smooth_field(rng, shape, 1.5, 2.0) * smooth_field(rng, shape, 0.7, 2.0) * np.float32(from_db(-3))
    to_anat = np.array([[1 / res, 0, -2.0], [0, 1 / res, -0.1], [0, 0, 1]])
    m = pose.matrix() @ to_anat
    echo = cv2.warpAffine(field, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    maps = Maps(echo, np.zeros((h, w), np.float32), np.zeros((h, w), np.float32))
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
        fill(maps.opacity, pose.px(column), rng.uniform(3.0, 4.0) / max(2.0, 0.03 * s))
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
        polyline(maps.opacity, pose.px(line), 0.25 / max(1.0, sc.epi_th * s), sc.epi_th * s)
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
            fill(maps.echo, pose.px(cell), from_db(level - 1.5 * k - 4 * end + rng.normal(0, 1.5)))
    surf_t = 0.45 * th
    surface = np.stack([np.linspace(-hw_v, hw_v, 13), np.full(13, top_v + 0.5 * surf_t)], axis=-1)
    surface[[0, -1], 0] += np.array([0.5, -0.5]) * surf_t
    _bright_line(maps, pose, rng, surface, rng.uniform(22, 27), surf_t, coherent=0.4)
    body_w = sc.window_hw + 0.2  # the vertebral body is wider than what the window shows
    body_top, body_bottom = top_v + 0.75 * th, top_v + th + 0.04
    body = np.array([[-body_w, body_top], [body_w, body_top], [body_w, body_bottom], [-body_w, body_bottom]])
    fill(maps.opacity, pose.px(body), rng.uniform(2.2, 3.0) / max(2.0, (body_bottom - body_top) * s))
    geo["VTB"] = band

    # articular processes / laminae on both sides of the window, transverse processes further out
    for side in (-1.0, 1.0):
        lamina, transverse = _lamina(rng, side, sc.window_hw, v_lam)
        _bone(maps, pose, rng, lamina, rng.uniform(21, 26), 0.01, rng.uniform(1.1, 1.8))
        _bone(maps, pose, rng, transverse, rng.uniform(19, 24), 0.009, rng.uniform(1.0, 1.6))
    return maps, geo


def skin_layers(sc: Scene, beams: Beams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skin, subcutaneous fat with septa and the fascia line, laid out along the beams."""
    h, w = beams.h, beams.w
    s = beams.scale
    u = beams.lateral_of_cols(sc.shift)
    phase = rng.uniform(0, 2 * math.pi, 2)
    fascia = sc.fat + 0.006 * np.sin(3.1 * u + phase[0]) + 0.004 * np.sin(7.3 * u + phase[1])
    fascia_row = (fascia * s).astype(np.float32)
    rows = np.arange(h, dtype=np.float32)[:, None]
    echo = np.full((h, w), from_db(rng.uniform(-9, -6)), np.float32)
    skin_rows = rng.uniform(0.025, 0.045) * s
    echo[rows[:, 0] < skin_rows] = from_db(rng.uniform(9, 13))
    spec = np.zeros((h, w), np.float32)
    # septa: thin wavy bright lines inside the fat
    for _ in range(int(rng.integers(1, 5))):
        depth = rng.uniform(0.5, 0.9) * sc.fat + 0.01
        start = rng.uniform(-1.6, 1.2)
        uu = np.linspace(start, start + rng.uniform(0.15, 0.5), 20)
        vv = depth + 0.006 * np.sin(14 * uu + rng.uniform(0, 6))
        pts = np.stack([beams.col_of_lateral(uu, sc.shift), vv * s], axis=-1)
        polyline(echo, pts, from_db(rng.uniform(5, 10)), max(1.0, 0.004 * s))
    # skin entry echo and the thoracolumbar fascia: bright, fairly smooth lines
    spec[: max(1, int(round(0.006 * s)))] = 10 ** (18 / 20)
    fascia_pts = np.stack([np.arange(w, dtype=np.float32), fascia_row], axis=-1)
    level = rng.uniform(13, 18)
    for i in range(0, w - 1, max(2, w // 24)):  # uneven along its length
        seg = fascia_pts[i:i + max(2, w // 24) + 1]
        gain = rng.normal(0, 2.5)
        polyline(spec, seg, 10 ** ((level + gain - 4) / 20), max(1.0, 0.006 * s))
        polyline(echo, seg + np.array([0, 0.006 * s], np.float32), from_db(level + gain - 6), max(1.0, 0.012 * s))
    return echo, spec, fascia_row
