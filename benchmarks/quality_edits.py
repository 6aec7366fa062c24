"""Random edits and look-alike negatives for ``benchmarks/quality.py``.

Edit parameters are drawn at random (a ``numpy`` generator seeded per copy), NOT from the grid
of enrolment variants (``monitor.hashing.CROP_WINDOWS``, ``ROTATIONS``): crop fractions,
anchors, angles, padding ratios, filters and qualities are uniform in ranges. Each family is a
function ``(image, rng) -> (edited image, JPEG quality, description)``.

Negatives are made in code from the corpus at run time, in memory: near-duplicates of the
distractors (the same scene a moment later: the camera moved or zoomed 2-5%, a different
exposure, another crop of the same wide scene, a burst pair), and synthetic photos of people
(figures in skin tones on a bed, sofa or wall, each drawn twice as a burst pair).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from monitor.demo import transforms as tf

Rng = np.random.Generator
Made = tuple[Image.Image, int, str]

CORNERS = {"tl": (0.0, 0.0), "tr": (1.0, 0.0), "bl": (0.0, 1.0), "br": (1.0, 1.0)}
SIDES = {"t": (0.5, 0.0), "b": (0.5, 1.0), "l": (0.0, 0.5), "r": (1.0, 0.5)}
ANCHORS = {**CORNERS, **SIDES, "c": (0.5, 0.5)}


def _u(rng: Rng, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _pick(rng: Rng, options: dict) -> tuple[str, object]:
    key = list(options)[int(rng.integers(len(options)))]
    return key, options[key]


def _colour(rng: Rng) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))  # type: ignore[return-value]


def _final_q(rng: Rng) -> int:
    return int(rng.integers(70, 96))


# ---------------------------------------------------------------- single edits


def crop(im: Image.Image, rng: Rng, lo: float = 0.05, hi: float = 0.30, anchors=ANCHORS) -> Made:
    f = _u(rng, lo, hi)
    name, anchor = _pick(rng, anchors)
    return tf.crop(im, f, anchor=anchor), _final_q(rng), f"crop {f:.1%} {name}"


def rotation(im: Image.Image, rng: Rng, lo: float = 1.0, hi: float = 10.0) -> Made:
    d = _u(rng, lo, hi) * (1 if rng.random() < 0.5 else -1)
    how = ("black", "white", "colour", "straighten")[int(rng.integers(4))]
    if how == "straighten":
        out = tf.straighten(im, d)
    else:
        fill = {"black": (0, 0, 0), "white": (255, 255, 255)}.get(how) or _colour(rng)
        out = tf.rotate(im, d, fill=fill)
    return out, _final_q(rng), f"rotate {d:+.1f} deg {how}"


def padding(im: Image.Image, rng: Rng) -> Made:
    kind = ("pad", "letterbox", "blurred letterbox")[int(rng.integers(3))]
    colour = ((0, 0, 0), (255, 255, 255), _colour(rng))[int(rng.integers(3))]
    if kind == "pad":
        f = _u(rng, 0.05, 0.35)
        return tf.pad(im, f, colour), _final_q(rng), f"pad {f:.0%} {colour}"
    aspect = math.exp(_u(rng, math.log(0.5), math.log(2.0)))
    if kind == "letterbox":
        return tf.letterbox(im, aspect, colour), _final_q(rng), f"letterbox {aspect:.2f} {colour}"
    return tf.blurred_letterbox(im, aspect), _final_q(rng), f"blurred letterbox {aspect:.2f}"


FILTERS: dict[str, Callable[[Image.Image, Rng], tuple[Image.Image, str]]] = {
    "brightness": lambda im, r: (tf.brightness(im, v := _u(r, 0.6, 1.4)), f"brightness {v:.2f}"),
    "contrast": lambda im, r: (tf.contrast(im, v := _u(r, 0.6, 1.5)), f"contrast {v:.2f}"),
    "saturation": lambda im, r: (tf.saturation(im, v := _u(r, 0.0, 1.8)), f"saturation {v:.2f}"),
    "hue": lambda im, r: (tf.hue(im, v := _u(r, -0.12, 0.12)), f"hue {v:+.2f}"),
    "sepia": lambda im, r: (tf.sepia(im, v := _u(r, 0.4, 1.0)), f"sepia {v:.2f}"),
    "vignette": lambda im, r: (tf.vignette(im, v := _u(r, 0.3, 0.8)), f"vignette {v:.2f}"),
}


def colour(im: Image.Image, rng: Rng) -> Made:
    """Two different random filters, one after the other (an app's "look")."""
    names = rng.choice(list(FILTERS), size=2, replace=False)
    said = []
    for n in names:
        im, text = FILTERS[str(n)](im, rng)
        said.append(text)
    return im, _final_q(rng), " + ".join(said)


def jpeg(im: Image.Image, rng: Rng) -> Made:
    q = int(rng.integers(40, 96))
    return im, q, f"JPEG q{q}"


def resize(im: Image.Image, rng: Rng) -> Made:
    s = _u(rng, 0.3, 1.0)
    return tf.resize(im, s), _final_q(rng), f"resize {s:.2f}"


STICKER_KINDS = ("emoji", "heart", "star", "bar", "label")


def stickers(im: Image.Image, rng: Rng) -> Made:
    """1-3 stickers covering 5-20% of the photo together, at random places."""
    total = _u(rng, 0.05, 0.20)
    n = int(rng.integers(1, 4))
    for _ in range(n):
        kind = STICKER_KINDS[int(rng.integers(len(STICKER_KINDS)))]
        im = tf.sticker(
            im, total / n, (_u(rng, 0.1, 0.9), _u(rng, 0.1, 0.9)), kind=kind,
            colour=_colour(rng), text="@someone",
        )  # fmt: skip
    return im, _final_q(rng), f"{n} sticker(s) over {total:.0%}"


def _font(size: int):
    return tf._font(size)


def screenshot(im: Image.Image, rng: Rng, mirrored: bool | None = None) -> Made:
    """The photo (mirrored half the time, as front cameras and some apps show it) in a random
    app frame: a post, a chat bubble or a story, light or dark, with a status bar, header,
    caption and footer of random sizes; the screenshot then scaled 40-90%."""
    if mirrored is None:
        mirrored = bool(rng.random() < 0.5)
    photo = tf.mirror(im) if mirrored else im
    dark = bool(rng.random() < 0.5)
    bg = tuple(int(v) for v in (rng.integers(0, 40, 3) if dark else rng.integers(225, 256, 3)))
    fg = (235, 235, 235) if dark else (20, 20, 20)
    muted = (140, 150, 160) if dark else (110, 118, 125)
    width = int(rng.integers(720, 1441))
    frame = ("post", "chat", "story")[int(rng.integers(3))]
    share = _u(rng, 0.35, 0.95) if frame != "story" else 1.0
    pw = round(width * share)
    ph = round(pw * photo.height / photo.width)
    status = int(rng.integers(40, 90))
    top = status + (int(rng.integers(80, 300)) if frame != "story" else int(rng.integers(0, 60)))
    bottom = int(rng.integers(60, 300))
    canvas = Image.new("RGB", (width, top + ph + bottom), bg)
    draw = ImageDraw.Draw(canvas)
    s = width / 1080
    draw.text((20 * s, 8 * s), "9:41", font=_font(round(28 * s)), fill=fg)
    draw.rectangle((width - 90 * s, 12 * s, width - 30 * s, 34 * s), outline=fg, width=2)
    if frame == "post":
        draw.ellipse((30 * s, status + 10 * s, 110 * s, status + 90 * s), fill=_colour(rng))
        draw.text((130 * s, status + 20 * s), "Someone Posting", font=_font(round(32 * s)), fill=fg)
        if top - status > 160:
            draw.text((30 * s, status + 110 * s), "can't believe this lol", font=_font(round(30 * s)),
                      fill=fg)  # fmt: skip
    elif frame == "chat":
        draw.text(
            (30 * s, status + 20 * s), "< Chats", font=_font(round(32 * s)), fill=(29, 155, 240)
        )
    x = {
        "post": int(rng.integers(0, max(1, width - pw + 1))),
        "chat": width - pw - int(rng.integers(10, 40)) if rng.random() < 0.5 else int(rng.integers(10, 40)),
        "story": 0,
    }[frame]  # fmt: skip
    x = max(0, min(x, width - pw))
    bubble = _colour(rng) if frame == "chat" else None
    if bubble is not None:
        draw.rounded_rectangle((x - 8, top - 8, x + pw + 8, top + ph + 8), radius=20, fill=bubble)
    canvas.paste(photo.resize((pw, ph), Image.Resampling.LANCZOS), (x, top))
    y = top + ph + 20 * s
    for i, label in enumerate(("12", "48", "1.2K")[: int(rng.integers(1, 4))]):
        draw.text((30 * s + i * 250 * s, y), label, font=_font(round(28 * s)), fill=muted)
    draw.text((30 * s, y + 50 * s), "View all 56 comments", font=_font(round(28 * s)), fill=muted)
    scale = _u(rng, 0.4, 0.9)
    return (
        tf.resize(canvas, scale),
        int(rng.integers(60, 96)),
        f"screenshot {frame} {'dark' if dark else 'light'} photo {share:.0%} wide"
        f"{' mirrored' if mirrored else ''} scaled {scale:.2f}",
    )


def mirror(im: Image.Image, rng: Rng) -> Made:
    return tf.mirror(im), _final_q(rng), "mirror"


# ---------------------------------------------------------------- two-edit chains


def _chain(first: Callable[[Image.Image, Rng], Made], second: Callable[[Image.Image, Rng], Made]):
    def run(im: Image.Image, rng: Rng) -> Made:
        a, _, da = first(im, rng)
        b, q, db = second(a, rng)
        return b, q, f"{da}, then {db}"

    return run


def small_crop(im: Image.Image, rng: Rng) -> Made:
    return crop(im, rng, 0.05, 0.20)


def corner_crop(im: Image.Image, rng: Rng) -> Made:
    return crop(im, rng, 0.25, 0.30, CORNERS)


def small_rotation(im: Image.Image, rng: Rng) -> Made:
    return rotation(im, rng, 1.0, 5.0)


def square_crop(im: Image.Image, rng: Rng) -> Made:
    """The largest square (or 85-100% of it), at a random place along the long side."""
    w, h = im.size
    side = min(w, h) * _u(rng, 0.85, 1.0)
    ax, ay = _u(rng, 0, 1), _u(rng, 0, 1)
    left, top = (w - side) * ax, (h - side) * ay
    box = (left / w, top / h, (left + side) / w, (top + side) / h)
    return (
        tf.crop_box(im, box),
        _final_q(rng),
        f"square {side / min(w, h):.0%} at ({ax:.2f}, {ay:.2f})",
    )


def mirrored_screenshot(im: Image.Image, rng: Rng) -> Made:
    return screenshot(im, rng, mirrored=True)


@dataclass(frozen=True)
class Family:
    name: str
    chain: bool  # a two-edit chain
    make: Callable[[Image.Image, Rng], Made]


FAMILIES: list[Family] = [
    Family("crop 5-20% (corner/side/centre)", False, small_crop),
    Family("crop 5-30% (corner/side/centre)", False, crop),
    Family("rotation 1-10 deg", False, rotation),
    Family("padding/letterbox", False, padding),
    Family("colour filters (2)", False, colour),
    Family("JPEG q40-95", False, jpeg),
    Family("resize 0.3-1.0", False, resize),
    Family("stickers 5-20%", False, stickers),
    Family("screenshot (half mirrored)", False, screenshot),
    Family("mirror", False, mirror),
    Family("mirror + crop 5-20%", True, _chain(mirror, small_crop)),
    Family("crop 25-30% from a corner", True, corner_crop),
    Family("crop 5-20% + rotation 1-5 deg", True, _chain(small_crop, small_rotation)),
    Family("mirror + rotation 1-5 deg", True, _chain(mirror, small_rotation)),
    Family("square crop", True, square_crop),
    Family("colour filters + crop 5-20%", True, _chain(colour, small_crop)),
    Family("stickers + resize 0.3-1.0", True, _chain(stickers, resize)),
    Family("screenshot of a mirrored photo", True, mirrored_screenshot),
]
"""Single edits first, then two-edit chains (``crop 25-30% from a corner`` and ``square crop``
are one edit each, but listed with the chains: they are the hard crops the review asked for;
``mirror + rotation`` is one the review measured too)."""


# ---------------------------------------------------------------- negatives


def _window(im: Image.Image, keep: float, cx: float, cy: float) -> Image.Image:
    """A window keeping ``keep`` of each side, centred at (cx, cy) (fractions), kept inside."""
    half = keep / 2
    cx, cy = min(max(cx, half), 1 - half), min(max(cy, half), 1 - half)
    return tf.crop_box(im, (cx - half, cy - half, cx + half, cy + half))


def near_duplicate(im: Image.Image, rng: Rng, kind: int) -> tuple[Image.Image, str]:
    """The same scene a moment later, as a second photo or a video frame a second on would be."""
    base_keep = 0.9
    if kind == 0:  # the camera moved 2-5%
        d, a = _u(rng, 0.02, 0.05), _u(rng, 0, 2 * math.pi)
        return _window(im, base_keep, 0.5 + d * math.cos(a), 0.5 + d * math.sin(a)), f"pan {d:.1%}"
    if kind == 1:  # zoomed 2-5%
        z = _u(rng, 0.02, 0.05)
        return _window(im, base_keep * (1 - z), 0.5, 0.5), f"zoom {z:.1%}"
    if kind == 2:  # exposure changed
        b, g = _u(rng, 0.75, 1.25), _u(rng, 0.8, 1.25)
        return tf.gamma(tf.brightness(_window(im, base_keep, 0.5, 0.5), b), g), f"exposure {b:.2f}"
    if kind == 3:  # another crop of the same wide scene
        keep = _u(rng, 0.55, 0.8)
        return _window(im, keep, _u(rng, 0, 1), _u(rng, 0, 1)), f"other crop {keep:.0%}"
    if kind == 4:  # burst pair: a small move, a slight turn, sensor noise
        d = _u(rng, 0.01, 0.03)
        moved = _window(im, base_keep, 0.5 + d, 0.5 - d / 2)
        turned = tf.straighten(moved, _u(rng, -1.5, 1.5))
        return tf.noise(turned, _u(rng, 2, 6), seed=int(rng.integers(1 << 30))), f"burst {d:.1%}"
    if kind == 5:  # a video frame a second on: moved, softer, smaller
        d = _u(rng, 0.02, 0.05)
        moved = _window(im, base_keep, 0.5 - d, 0.5 + d / 3)
        return tf.blur(tf.resize(moved, _u(rng, 0.4, 0.7)), 0.8), f"frame +1 s {d:.1%}"
    if kind == 6:  # turned a little and moved
        moved = _window(im, base_keep, 0.5 + _u(rng, -0.04, 0.04), 0.5 + _u(rng, -0.04, 0.04))
        return tf.straighten(moved, v := _u(rng, -4, 4)), f"turn {v:+.1f} deg"
    # zoomed out a little: a wider view of the same scene, shown as a smaller window moved
    keep = _u(rng, 0.8, 0.95)
    return _window(im, keep, _u(rng, 0.4, 0.6), _u(rng, 0.4, 0.6)), f"wider {keep:.0%}"


NEAR_DUPLICATE_KINDS = 8

SKIN = [(255, 224, 196), (234, 192, 134), (198, 134, 66), (141, 85, 36), (92, 56, 33),
        (241, 194, 125), (224, 172, 105)]  # fmt: skip


def _backdrop(rng: Rng, size: tuple[int, int], photo: Image.Image | None) -> Image.Image:
    w, h = size
    kind = int(rng.integers(3))
    if kind == 0 and photo is not None:  # a room: an unrelated photo, out of focus
        back = photo.resize((w, h), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(6))
        return back
    base = np.asarray(_colour(rng), dtype=np.float32)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    arr = np.broadcast_to(base * (0.7 + 0.5 * y), (h, w, 3)).copy()
    if kind == 1:  # bed sheets: soft folds
        x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        for _ in range(6):
            f, p = _u(rng, 2, 9), _u(rng, 0, 6.3)
            arr *= 1 + 0.06 * np.sin(2 * math.pi * f * (x + 0.3 * y) + p)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


@dataclass(frozen=True)
class Pose:
    cx: float
    cy: float
    scale: float
    lean: float
    arms: tuple[float, float]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    cloth: tuple[int, int, int] | None
    lying: bool


def _pose(rng: Rng) -> Pose:
    skin = SKIN[int(rng.integers(len(SKIN)))]
    return Pose(
        _u(rng, 0.3, 0.7), _u(rng, 0.4, 0.6), _u(rng, 0.6, 1.0), _u(rng, -0.3, 0.3),
        (_u(rng, -1.2, 0.4), _u(rng, -0.4, 1.2)), skin, _colour(rng),
        _colour(rng) if rng.random() < 0.4 else None, bool(rng.random() < 0.4),
    )  # fmt: skip


def _draw_person(im: Image.Image, p: Pose) -> Image.Image:
    w, h = im.size
    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    u = min(w, h) * 0.1 * p.scale
    cx, cy = p.cx * w, p.cy * h
    body = p.cloth or p.skin

    def limb(x0: float, y0: float, angle: float, length: float, width: float, fill) -> None:
        x1, y1 = x0 + length * math.sin(angle), y0 + length * math.cos(angle)
        d.line((x0, y0, x1, y1), fill=fill, width=max(2, round(width)))
        d.ellipse((x1 - width / 2, y1 - width / 2, x1 + width / 2, y1 + width / 2), fill=fill)

    if p.lying:  # lying across the picture
        d.ellipse((cx - 3 * u, cy - 1.1 * u, cx + 2 * u, cy + 1.1 * u), fill=(*body, 255))
        d.ellipse((cx + 1.8 * u, cy - 0.9 * u, cx + 3.4 * u, cy + 0.7 * u), fill=(*p.skin, 255))
        d.ellipse((cx + 2.2 * u, cy - 1.1 * u, cx + 3.6 * u, cy - 0.2 * u), fill=(*p.hair, 255))
        limb(cx - 2.6 * u, cy, -1.5 + p.lean, 3.5 * u, 0.8 * u, (*p.skin, 255))
        limb(cx + 1.2 * u, cy - 0.6 * u, 2.0 + p.arms[0], 2.2 * u, 0.5 * u, (*p.skin, 255))
    else:
        top = cy - 2.2 * u
        d.ellipse((cx - 0.7 * u, top - 1.6 * u, cx + 0.7 * u, top), fill=(*p.skin, 255))
        d.chord((cx - 0.75 * u, top - 1.75 * u, cx + 0.75 * u, top - 0.4 * u), 180, 360,
                fill=(*p.hair, 255))  # fmt: skip
        d.rounded_rectangle((cx - 1.2 * u, top, cx + 1.2 * u, cy + 1.2 * u), radius=u * 0.6,
                            fill=(*body, 255))  # fmt: skip
        limb(cx - 1.0 * u, top + 0.3 * u, p.arms[0], 2.6 * u, 0.5 * u, (*p.skin, 255))
        limb(cx + 1.0 * u, top + 0.3 * u, p.arms[1], 2.6 * u, 0.5 * u, (*p.skin, 255))
        for side in (-0.6, 0.6):
            limb(cx + side * u, cy + 1.1 * u, p.lean * side, 3.2 * u, 0.8 * u, (*p.skin, 255))
    shade = layer.filter(ImageFilter.GaussianBlur(u * 0.15))
    out = im.convert("RGBA")
    out.alpha_composite(shade)
    return out.convert("RGB")


def person_pair(
    rng: Rng, size: tuple[int, int], photo: Image.Image | None
) -> tuple[Image.Image, Image.Image]:
    """A synthetic photo of one or two people, and a burst-like second frame of it (the people
    moved a little, the camera 1-3%, the exposure changed)."""
    back = _backdrop(rng, size, photo)
    poses = [_pose(rng) for _ in range(int(rng.integers(1, 3)))]
    first = back
    for p in poses:
        first = _draw_person(first, p)
    moved = [
        Pose(
            p.cx + _u(rng, -0.03, 0.03),
            p.cy + _u(rng, -0.02, 0.02),
            p.scale * _u(rng, 0.97, 1.03),
            p.lean + _u(rng, -0.1, 0.1),
            (p.arms[0] + _u(rng, -0.3, 0.3), p.arms[1] + _u(rng, -0.3, 0.3)),
            p.skin,
            p.hair,
            p.cloth,
            p.lying,
        )  # fmt: skip
        for p in poses
    ]
    second = back
    for p in moved:
        second = _draw_person(second, p)
    second = _window(tf.brightness(second, _u(rng, 0.85, 1.15)), 0.96, _u(rng, 0.48, 0.52), 0.5)
    seed = int(rng.integers(1 << 30))
    return tf.noise(tf.blur(first, 0.7), 5, seed), tf.noise(tf.blur(second, 0.7), 5, seed + 1)
