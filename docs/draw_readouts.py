"""Draw docs/readouts.png: what each readout measures (README: Readouts).

    python docs/draw_readouts.py            # from the repository root

The geometry is an example; the numbers printed in the drawing are computed from it by
usseg.runtime.measurements, at 0.1 mm per pixel.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from usseg.runtime.measurements import box_top_midpoint, line_midpoint, measure
from usseg.runtime.overlay import COLOURS

H, W, SPACING = 460, 560, 0.1
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, GREY, YELLOW = (255, 255, 255), (150, 150, 150), (0, 215, 255)


def arrow(img, p, q, colour, label, at, scale=0.5):
    cv2.arrowedLine(img, p, q, colour, 2, cv2.LINE_AA, tipLength=0.04)
    cv2.arrowedLine(img, q, p, colour, 2, cv2.LINE_AA, tipLength=0.04)
    cv2.putText(img, label, at, FONT, scale, colour, 1, cv2.LINE_AA)


def dashed(img, p, q, colour, dash=8):
    length = int(math.dist(p, q))
    for s in range(0, length, 2 * dash):
        a = np.add(p, np.subtract(q, p) * s / length).astype(int)
        b = np.add(p, np.subtract(q, p) * min(s + dash, length) / length).astype(int)
        cv2.line(img, tuple(a), tuple(b), colour, 1, cv2.LINE_AA)


OUT = Path(__file__).with_name("readouts.png")


def main(out: Path = OUT) -> None:
    skin_y = 50.0
    mid = np.array([[318.0, 90.0], [362.0, 300.0]])
    epi = np.array([[290.0, 220.0], [390.0, 224.0]])
    vtb = np.array([[250.0, 340.0], [430.0, 340.0], [430.0, 390.0], [250.0, 390.0]])
    r = measure({"MID": mid, "EPI": epi}, vtb, (H, W), SPACING, skin_y=skin_y)
    img = np.full((H, W, 3), 30, np.uint8)
    img[: int(skin_y)] = 12
    cv2.rectangle(img, (0, 0), (W - 1, H - 1), GREY, 1)
    cv2.putText(img, "above the field of view (a DICOM file's header band)", (10, 20), FONT, 0.45, GREY, 1, cv2.LINE_AA)
    cv2.line(img, (0, int(skin_y)), (W - 1, int(skin_y)), YELLOW, 2)
    cv2.putText(img, "skin line: top of the field of view (skin_y)", (10, int(skin_y) - 8), FONT, 0.5, YELLOW, 1,
                cv2.LINE_AA)
    centre = (W - 1) / 2
    dashed(img, (int(centre), int(skin_y) + 4), (int(centre), H - 30), GREY)
    cv2.putText(img, "image centre (W-1)/2", (int(centre) + 6, int(skin_y) + 18), FONT, 0.42, GREY, 1, cv2.LINE_AA)
    # Structures.
    cv2.line(img, tuple(mid[0].astype(int)), tuple(mid[1].astype(int)), COLOURS["MID"], 3, cv2.LINE_AA)
    cv2.line(img, tuple(epi[0].astype(int)), tuple(epi[1].astype(int)), COLOURS["EPI"], 3, cv2.LINE_AA)
    cv2.polylines(img, [vtb.astype(np.int32)], True, COLOURS["VTB"], 2, cv2.LINE_AA)
    for name, pos in (("MID", (340, 84)), ("EPI", (396, 228)), ("VTB", (438, 370))):
        cv2.putText(img, name, pos, FONT, 0.5, WHITE, 1, cv2.LINE_AA)
    # Depths: straight down from the skin line to the EPI midpoint and to the box's upper side.
    e, b = line_midpoint(epi).astype(int), box_top_midpoint(vtb).astype(int)
    x_epi, x_vtb = 200, 120
    arrow(img, (x_epi, int(skin_y)), (x_epi, int(e[1])), COLOURS["EPI"], f"epidural_depth {r['epidural_depth'].text()}",
          (x_epi - 180, 150))
    dashed(img, (x_epi, int(e[1])), tuple(e), COLOURS["EPI"])
    cv2.circle(img, tuple(e), 5, WHITE, 2, cv2.LINE_AA)
    arrow(img, (x_vtb, int(skin_y)), (x_vtb, int(b[1])), COLOURS["VTB"],
          f"vertebral_body_depth {r['vertebral_body_depth'].text()}", (10, 310))
    dashed(img, (x_vtb, int(b[1])), tuple(b), COLOURS["VTB"])
    cv2.circle(img, tuple(b), 5, WHITE, 2, cv2.LINE_AA)
    # Midline angle from the vertical, at its shallow end.
    top = mid[0]
    dashed(img, tuple(top.astype(int)), (int(top[0]), int(top[1]) + 135), WHITE)
    angle = math.radians(r["midline_angle"].value)
    arc = [(top[0] + 120 * math.sin(t), top[1] + 120 * math.cos(t)) for t in np.linspace(0, angle, 12)]
    cv2.polylines(img, [np.round(arc).astype(np.int32)], False, WHITE, 1, cv2.LINE_AA)
    cv2.putText(img, f"midline_angle {r['midline_angle'].text()}", (372, 130), FONT, 0.5, WHITE, 1, cv2.LINE_AA)
    cv2.putText(img, "(+: deeper end to the right)", (372, 148), FONT, 0.42, GREY, 1, cv2.LINE_AA)
    # Midline offset: its midpoint against the image centre.
    m = line_midpoint(mid).astype(int)
    cv2.circle(img, tuple(m), 5, WHITE, 2, cv2.LINE_AA)
    y_off = int(m[1]) + 95
    arrow(img, (int(centre), y_off), (int(m[0]), y_off), COLOURS["MID"], f"midline_offset {r['midline_offset'].text()}",
          (int(m[0]) + 12, y_off + 5))
    dashed(img, tuple(m), (int(m[0]), y_off), COLOURS["MID"])
    cv2.putText(img, f"example geometry at {SPACING} mm per pixel", (10, H - 12), FONT, 0.45, GREY, 1, cv2.LINE_AA)
    cv2.imwrite(str(out), img)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
