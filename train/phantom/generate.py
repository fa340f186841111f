"""The public generators: one frame, a probe sweep (cine), a seed-format data set on disk."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..io import write_json, write_png
from .anatomy import draw_anatomy, skin_layers
from .annotate import annotate
from .config import PhantomConfig, Scene, Shape, sample_scene
from .geometry import Beams, Pose
from .imaging import form_image, scatterer_field

log = logging.getLogger(__name__)


def _render(cfg: PhantomConfig, sc: Scene, noise: np.ndarray) -> tuple[np.ndarray, list[Shape]]:
    """Draw the scene, form the ultrasound image and annotate what is in view."""
    pose, beams = Pose(cfg, sc), Beams(cfg, sc)
    maps, geo = draw_anatomy(cfg, sc, pose)
    layer_rng = np.random.default_rng([sc.texture_seed, 1])
    l_echo, l_spec, fascia_row = skin_layers(sc, beams, layer_rng)
    deep = np.arange(cfg.height, dtype=np.float32)[:, None] >= fascia_row[None, :]
    echo = np.where(deep, beams.to_beams(maps.echo), l_echo)
    spec = np.where(deep, beams.to_beams(maps.spec), l_spec)
    opacity = np.where(deep, beams.to_beams(maps.opacity), 0.0).astype(np.float32)
    image = form_image(sc, beams, echo, spec, opacity, noise)
    return image, annotate(cfg, pose, beams, geo)


def generate_frame(cfg: PhantomConfig, seed: int, index: int) -> tuple[np.ndarray, list[Shape]]:
    """One frame and its seed-format shapes; the same (seed, index) always gives the same bytes."""
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(cfg, rng)
    return _render(cfg, scene, scatterer_field(rng, cfg))


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
    base = replace(sample_scene(replace(cfg, missing_rate=0.0, spinous_rate=0.0, epi_missing_rate=0.0,
                                        vtb_missing_rate=0.0), rng), view="interlaminar", show_epi=True)
    scale = cfg.height / base.depth
    extent = sweep * (0.5 * cfg.width / scale + base.vtb_hw + 0.1)
    rock = rng.uniform(0, 2 * math.pi)
    noise = scatterer_field(rng, cfg)
    beams = Beams(cfg, base)
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
            fresh = scatterer_field(rng, cfg)
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


def phantom_frames(count: int, seed: int, height: int = PhantomConfig.height,
                   width: int = PhantomConfig.width) -> list[np.ndarray]:
    """The grey images of frames 0..count-1 of ``seed`` at height x width: realistic model input for
    checks and benchmarks that need no annotations (the same as generate_frame's images)."""
    if count < 0:
        raise ValueError("count must be >= 0")
    cfg = PhantomConfig(height=height, width=width)
    return [generate_frame(cfg, seed, index)[0] for index in range(count)]
