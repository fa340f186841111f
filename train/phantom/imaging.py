"""Image formation: speckle scatterers, acoustic shadows, point-spread blur, attenuation and TGC,
log compression and scan conversion to an 8-bit frame."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .config import PhantomConfig, Scene
from .draw import from_db
from .geometry import Beams

_LOOKS = 3  # compounded speckle looks: real scanners show less speckle contrast than one look


def scatterer_field(rng: np.random.Generator, cfg: PhantomConfig) -> np.ndarray:
    """Complex Gaussian scatterer field, (looks, re/im, H, W), unit mean intensity."""
    shape = (_LOOKS, 2, cfg.height, cfg.width)
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(0.5))


def _gauss_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian; explicit so that the speckle normalisation knows the exact taps."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _psf(field: np.ndarray, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
    """Separable blur: kx across the beams, ky along them."""
    return cv2.sepFilter2D(field, cv2.CV_32F, kx, ky, borderType=cv2.BORDER_REFLECT)


def form_image(sc: Scene, beams: Beams, echo: np.ndarray, spec: np.ndarray, opacity: np.ndarray,
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
    scatter = np.sqrt(echo * trans * trans + np.float32(from_db(sc.clutter_db)) + electronic * electronic)
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
