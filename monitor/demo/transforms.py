"""In-memory edits that uploaders make to photos: resize, recompress, crop, mirror, overlays...

Every function is pure: it returns a new RGB image and leaves its input untouched (any input
mode is accepted; transparency is flattened onto white). Nothing touches the disk.

``EDITS`` names the "typical uploader edits" the demo and the end-to-end test plant; each is a
plain ``Image -> Image`` callable. :func:`encode` turns an image into the bytes a site serves.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

__all__ = [
    "EDITS",
    "Edit",
    "blur",
    "brightness",
    "compose",
    "crop_box",
    "contrast",
    "crop",
    "decode",
    "encode",
    "gamma",
    "greyscale",
    "hue",
    "letterbox",
    "mirror",
    "noise",
    "overlay_text",
    "pad",
    "recompress",
    "resize",
    "rotate",
    "saturation",
    "sepia",
    "sticker",
    "straighten",
    "stretch",
    "vignette",
    "watermark",
]

Edit = Callable[[Image.Image], Image.Image]
Colour = tuple[int, int, int]

_FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}


def _rgb(im: Image.Image) -> Image.Image:
    """``im`` as RGB; transparent pixels flattened onto white. Always a new image."""
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return im.convert("RGB")


def encode(im: Image.Image, format: str = "JPEG", quality: int = 85) -> bytes:
    """``im`` encoded as ``format`` ("JPEG", "PNG", "WEBP", "GIF"...) at ``quality`` (lossy ones).

    Modes a format cannot hold are converted (e.g. RGBA to RGB on white for JPEG).
    """
    fmt = _FORMAT_ALIASES.get(format.upper(), format.upper())
    if fmt == "JPEG":
        im = im if im.mode in ("RGB", "L") else _rgb(im)
    elif fmt == "WEBP":
        im = im if im.mode in ("RGB", "RGBA") else im.convert("RGBA" if "A" in im.mode else "RGB")
    buf = io.BytesIO()
    params: dict[str, object] = {}
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = quality
    im.save(buf, fmt, **params)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    """Image bytes to an RGB image, turned upright by its EXIF orientation."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return _rgb(ImageOps.exif_transpose(im))


def compose(*edits: Edit) -> Edit:
    """One edit that applies ``edits`` left to right."""

    def run(im: Image.Image) -> Image.Image:
        out = _rgb(im)
        for edit in edits:
            out = edit(out)
        return out

    return run


# -- geometry


def resize(im: Image.Image, scale: float) -> Image.Image:
    """Scale both sides by ``scale`` (Lanczos); at least 1x1."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    w, h = im.size
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return _rgb(im).resize(size, Image.LANCZOS)


def stretch(im: Image.Image, aspect: float) -> Image.Image:
    """Change the aspect ratio: the width is multiplied by ``aspect``, the height kept."""
    if aspect <= 0:
        raise ValueError(f"aspect must be positive, got {aspect}")
    w, h = im.size
    return _rgb(im).resize((max(1, round(w * aspect)), h), Image.LANCZOS)


def crop(
    im: Image.Image, fraction: float, *, anchor: tuple[float, float] = (0.5, 0.5)
) -> Image.Image:
    """Cut away ``fraction`` of the width and of the height (0.2 keeps 80% x 80%).

    ``anchor`` places the kept window: (0.5, 0.5) centred, (0, 0) top left, (1, 1) bottom right.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"crop fraction must be in [0, 1), got {fraction}")
    w, h = im.size
    kw, kh = max(1, round(w * (1 - fraction))), max(1, round(h * (1 - fraction)))
    ax, ay = (min(max(a, 0.0), 1.0) for a in anchor)
    left, top = round((w - kw) * ax), round((h - kh) * ay)
    return _rgb(im).crop((left, top, left + kw, top + kh))


def crop_box(im: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """The window ``box`` = (left, top, right, bottom) given as fractions of the width and
    height (e.g. (0.1, 0.0, 0.9, 0.75)); at least one pixel each way."""
    w, h = im.size
    left, top = round(box[0] * w), round(box[1] * h)
    right, bottom = max(left + 1, round(box[2] * w)), max(top + 1, round(box[3] * h))
    return _rgb(im).crop((left, top, min(right, w), min(bottom, h)))


def mirror(im: Image.Image) -> Image.Image:
    """Flip left to right."""
    return ImageOps.mirror(_rgb(im))


def rotate(
    im: Image.Image, degrees: float, *, expand: bool = True, fill: Colour = (0, 0, 0)
) -> Image.Image:
    """Rotate counter-clockwise by ``degrees``; ``expand`` grows the canvas to keep the corners."""
    return _rgb(im).rotate(degrees, resample=Image.BICUBIC, expand=expand, fillcolor=fill)


def pad(im: Image.Image, fraction: float, colour: Colour = (0, 0, 0)) -> Image.Image:
    """Add a border of ``fraction`` of the width (left, right) and height (top, bottom)."""
    if fraction < 0:
        raise ValueError(f"pad fraction must not be negative, got {fraction}")
    w, h = im.size
    bx, by = round(w * fraction), round(h * fraction)
    return ImageOps.expand(_rgb(im), border=(bx, by, bx, by), fill=colour)


def letterbox(im: Image.Image, aspect: float = 16 / 9, colour: Colour = (0, 0, 0)) -> Image.Image:
    """Centre ``im`` on a canvas of width/height ``aspect`` with bars of ``colour``."""
    if aspect <= 0:
        raise ValueError(f"aspect must be positive, got {aspect}")
    w, h = im.size
    cw, ch = (round(h * aspect), h) if w / h < aspect else (w, round(w / aspect))
    canvas = Image.new("RGB", (max(cw, w), max(ch, h)), colour)
    canvas.paste(_rgb(im), ((canvas.width - w) // 2, (canvas.height - h) // 2))
    return canvas


def straighten(im: Image.Image, degrees: float) -> Image.Image:
    """Turned by ``degrees`` and cropped to the largest upright rectangle of the same shape
    inside, as a phone's "straighten" tool does."""
    w, h = im.size
    c, s = math.cos(math.radians(abs(degrees))), math.sin(math.radians(abs(degrees)))
    k = min(w / (w * c + h * s), h / (w * s + h * c))
    turned = rotate(im, degrees)
    cx, cy, kw, kh = turned.width / 2, turned.height / 2, k * w / 2, k * h / 2
    return turned.crop((round(cx - kw), round(cy - kh), round(cx + kw), round(cy + kh)))


def blurred_letterbox(im: Image.Image, aspect: float, darken: float = 0.8) -> Image.Image:
    """Centred on a canvas of width/height ``aspect`` filled with itself enlarged, blurred
    (radius 4% of the canvas) and darkened to ``darken`` of its brightness, as phone apps fit
    a photo into a story."""
    w, h = im.size
    cw, ch = (round(h * aspect), h) if w / h < aspect else (w, round(w / aspect))
    cw, ch = max(cw, w), max(ch, h)
    scale = max(cw / w, ch / h)
    big = _rgb(im).resize((round(w * scale) + 1, round(h * scale) + 1), Image.Resampling.BILINEAR)
    left, top = (big.width - cw) // 2, (big.height - ch) // 2
    canvas = big.crop((left, top, left + cw, top + ch)).filter(
        ImageFilter.GaussianBlur(0.04 * max(cw, ch))
    )
    if darken != 1.0:
        canvas = brightness(canvas, darken)
    canvas.paste(_rgb(im), ((cw - w) // 2, (ch - h) // 2))
    return canvas


# -- tone and colour


def brightness(im: Image.Image, factor: float) -> Image.Image:
    """Brighten (> 1) or darken (< 1)."""
    return ImageEnhance.Brightness(_rgb(im)).enhance(factor)


def contrast(im: Image.Image, factor: float) -> Image.Image:
    """More (> 1) or less (< 1) contrast."""
    return ImageEnhance.Contrast(_rgb(im)).enhance(factor)


def saturation(im: Image.Image, factor: float) -> Image.Image:
    """More (> 1) or less (< 1) colour; 0 is grey."""
    return ImageEnhance.Color(_rgb(im)).enhance(factor)


def gamma(im: Image.Image, value: float) -> Image.Image:
    """Apply ``out = in ** (1 / value)`` on [0, 1]: ``value`` > 1 lifts the shadows."""
    if value <= 0:
        raise ValueError(f"gamma must be positive, got {value}")
    table = [round(255 * (i / 255) ** (1 / value)) for i in range(256)]
    return _rgb(im).point(table * 3)


def greyscale(im: Image.Image) -> Image.Image:
    """Grey pixels, still as an RGB image."""
    return _rgb(im).convert("L").convert("RGB")


def hue(im: Image.Image, shift: float) -> Image.Image:
    """Turn every hue by ``shift`` of the colour circle (0.5 is half way round)."""
    hsv = np.asarray(_rgb(im).convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + round(shift * 256)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def sepia(im: Image.Image, strength: float = 1.0) -> Image.Image:
    """The classic sepia matrix, mixed with the original at ``strength`` (0 to 1)."""
    arr = np.asarray(_rgb(im), dtype=np.float32)
    matrix = np.array(
        [[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=np.float32
    )
    toned = arr @ matrix.T
    out = arr * (1 - strength) + toned * strength
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def vignette(im: Image.Image, strength: float = 0.5) -> Image.Image:
    """Corners darkened towards ``strength`` of black (0: none), smoothly from the centre."""
    arr = np.asarray(_rgb(im), dtype=np.float32)
    h, w = arr.shape[:2]
    y, x = np.ogrid[-1 : 1 : complex(0, h), -1 : 1 : complex(0, w)]
    r = np.clip(np.sqrt(x * x + y * y) / math.sqrt(2), 0, 1)
    gain = 1 - strength * r**2
    return Image.fromarray(np.clip(arr * gain[..., None], 0, 255).astype(np.uint8), "RGB")


# -- quality


def recompress(im: Image.Image, quality: int, format: str = "JPEG") -> Image.Image:
    """Encode at ``quality`` and decode again, keeping the compression artefacts."""
    return decode(encode(im, format, quality))


def blur(im: Image.Image, radius: float) -> Image.Image:
    """Gaussian blur of ``radius`` pixels."""
    return _rgb(im).filter(ImageFilter.GaussianBlur(radius))


def noise(im: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    """Add Gaussian noise of standard deviation ``sigma`` grey levels (deterministic per seed)."""
    arr = np.asarray(_rgb(im), dtype=np.float32)
    rng = np.random.default_rng(seed)
    arr = arr + rng.standard_normal(arr.shape, dtype=np.float32) * sigma
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


# -- overlays


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(size, 8))


def overlay_text(
    im: Image.Image,
    text: str,
    *,
    position: tuple[float, float] = (0.05, 0.85),
    size: float = 0.07,
    colour: Colour = (255, 255, 255),
) -> Image.Image:
    """Caption ``text`` with a dark outline; ``position`` (of the top left corner) and ``size``
    (the text height) are fractions of the picture's size, like a meme caption or a username."""
    out = _rgb(im)
    w, h = out.size
    draw = ImageDraw.Draw(out)
    draw.text(
        (position[0] * w, position[1] * h),
        text,
        font=_font(round(size * h)),
        fill=colour,
        stroke_width=max(1, round(size * h / 12)),
        stroke_fill=(0, 0, 0),
    )
    return out


def watermark(
    im: Image.Image, text: str = "sample", *, opacity: float = 0.35, tiled: bool = True
) -> Image.Image:
    """A translucent white ``text`` mark: repeated diagonally across the picture (``tiled``)
    or once in the bottom right corner."""
    base = _rgb(im).convert("RGBA")
    w, h = base.size
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    alpha = round(255 * min(max(opacity, 0.0), 1.0))
    if tiled:
        font = _font(round(h / 12))
        step_x, step_y = max(w // 3, 1), max(h // 5, 1)
        for row, y in enumerate(range(0, h, step_y)):
            for x in range(-(row % 2) * step_x // 2, w, step_x):
                draw.text((x, y), text, font=font, fill=(255, 255, 255, alpha))
        layer = layer.rotate(20, resample=Image.BICUBIC)
    else:
        font = _font(round(h / 14))
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pos = (w - (right - left) - w // 40, h - (bottom - top) - h // 30)
        draw.text(pos, text, font=font, fill=(255, 255, 255, alpha))
    return Image.alpha_composite(base, layer).convert("RGB")


def sticker(
    im: Image.Image,
    share: float,
    position: tuple[float, float],
    *,
    kind: str = "emoji",
    colour: Colour = (255, 204, 51),
    text: str = "",
) -> Image.Image:
    """A sticker drawn in code covering about ``share`` of the picture's area, its centre at
    ``position`` (fractions of width and height): ``emoji`` (a smiley face), ``heart``,
    ``star``, ``bar`` (a censor bar) or ``label`` (a rounded tag with ``text``)."""
    out = _rgb(im)
    w, h = out.size
    draw = ImageDraw.Draw(out)
    area = share * w * h
    cx, cy = position[0] * w, position[1] * h
    if kind in ("bar", "label"):
        bw = min(w, math.sqrt(area * 4))
        bh = area / bw
        box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
        if kind == "bar":
            draw.rectangle(box, fill=colour)
        else:
            draw.rounded_rectangle(box, radius=bh / 3, fill=colour)
            draw.text(
                (box[0] + bh / 4, box[1] + bh / 6), text, font=_font(round(bh * 0.6)),
                fill=(255, 255, 255) if sum(colour) < 384 else (0, 0, 0),
            )  # fmt: skip
        return out
    r = math.sqrt(area / math.pi)
    if kind == "emoji":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour, outline=(0, 0, 0), width=2)
        e = r * 0.18
        for dx in (-0.35, 0.35):
            draw.ellipse((cx + dx * r - e, cy - 0.3 * r - e, cx + dx * r + e, cy - 0.3 * r + e),
                         fill=(40, 30, 20))  # fmt: skip
        draw.arc((cx - 0.55 * r, cy - 0.4 * r, cx + 0.55 * r, cy + 0.6 * r), 20, 160,
                 fill=(40, 30, 20), width=max(2, round(r / 10)))  # fmt: skip
    elif kind == "heart":
        q = r * 0.55
        draw.ellipse((cx - 2 * q, cy - 1.5 * q, cx, cy + 0.5 * q), fill=colour)
        draw.ellipse((cx, cy - 1.5 * q, cx + 2 * q, cy + 0.5 * q), fill=colour)
        draw.polygon([(cx - 1.9 * q, cy), (cx + 1.9 * q, cy), (cx, cy + 2 * q)], fill=colour)
    else:  # star
        points = [
            (cx + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / 5),
             cy - (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / 5))
            for i in range(10)
        ]  # fmt: skip
        draw.polygon(points, fill=colour, outline=(0, 0, 0))
    return out


#: Named "typical uploader edits" planted by the demo and the end-to-end test.
EDITS: dict[str, Edit] = {
    "resize_half": lambda im: resize(im, 0.5),
    "resize_up": lambda im: resize(im, 1.5),
    "recompress_q50": lambda im: recompress(im, 50),
    "resize_0.75_q70": lambda im: recompress(resize(im, 0.75), 70),
}
