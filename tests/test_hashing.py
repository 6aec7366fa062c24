"""Decoding and hashing image bytes in memory: formats, orientation, odd modes, bad input."""

from __future__ import annotations

import functools
import io
import multiprocessing
import pickle
import struct
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import imagehash
import numpy as np
import pdqhash
import pytest
from PIL import Image, ImageDraw

from monitor import hashing
from monitor.errors import NotAnImageError
from monitor.hashing import (
    PDQ,
    algorithms,
    compute_hashes,
    decode_image,
    get_algorithm,
    hamming,
    register_algorithm,
)
from monitor.types import HashValue
from tests.conftest import corpus_files

PDQ_THRESHOLD = 31


def synthetic_photo(seed: int, size: tuple[int, int] = (480, 320)) -> Image.Image:
    """A textured, photo-like RGB picture: smooth colour fields, shapes and grain."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8)).resize(
        size, Image.Resampling.BICUBIC
    )
    draw = ImageDraw.Draw(base)
    w, h = size
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(w // 10, w // 2)), y0 + int(rng.integers(h // 10, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    grain = rng.normal(0, 6, (h, w, 3))
    arr = np.clip(np.asarray(base, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def encode(im: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def pdq_of(im: Image.Image) -> str:
    return PDQ().compute(im.convert("RGB")).value


def pdq_distance(data: bytes, upright: Image.Image) -> int:
    return hamming(compute_hashes(data).get("pdq").value, pdq_of(upright))


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("JPEG", {"quality": 85}),
        ("PNG", {}),
        ("WEBP", {"quality": 80}),
        ("GIF", {}),
        ("BMP", {}),
        ("TIFF", {}),
    ],
)
def test_common_formats_decode_and_hash_like_the_original(fmt: str, params: dict) -> None:
    original = synthetic_photo(1)
    data = encode(original, fmt, **params)
    im = decode_image(data)
    assert im.mode == "RGB" and im.size == original.size
    hashes = compute_hashes(data)
    assert (hashes.width, hashes.height) == original.size
    assert [h.algorithm for h in hashes.hashes] == ["pdq", "phash"]
    assert hamming(hashes.get("pdq").value, pdq_of(original)) <= PDQ_THRESHOLD


def test_heic_decodes_when_pillow_heif_can_encode() -> None:
    if not hashing.HEIF_SUPPORTED:
        pytest.skip("pillow-heif is not installed")
    original = synthetic_photo(2)
    try:
        data = encode(original, "HEIF", quality=90)
    except Exception as exc:  # libheif built without an HEVC encoder
        pytest.skip(f"pillow-heif cannot encode HEIC here: {exc}")
    assert pdq_distance(data, original) <= PDQ_THRESHOLD


def test_hex_layout_matches_threatexchange_and_imagehash() -> None:
    im = synthetic_photo(3)
    hashes = compute_hashes(encode(im, "PNG"))
    small = hashing._hash_input(im)  # what the algorithms are given: <= 256 px
    assert max(small.size) == hashing.PDQ_INPUT == 256
    bits, quality = pdqhash.compute(np.asarray(small))
    expected = format(int("".join(str(int(b)) for b in bits), 2), "064x")  # MSB first
    pdq = hashes.get("pdq")
    assert pdq == HashValue("pdq", expected, int(quality))
    assert len(pdq.value) == 64 and pdq.bits == 256 and pdq.quality > 50
    phash = hashes.get("phash")
    assert phash == HashValue("phash", str(imagehash.phash(small)))
    assert len(phash.value) == 16
    assert hamming(phash.value, str(imagehash.phash(im))) <= 2  # as of the unreduced picture


def test_sha256_is_of_the_bytes() -> None:
    import hashlib

    data = encode(synthetic_photo(4), "PNG")
    assert compute_hashes(data).sha256 == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- orientation and modes


def test_exif_rotated_jpeg_hashes_like_the_upright_picture() -> None:
    upright = synthetic_photo(5, (480, 320))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a phone held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rotated = encode(stored, "JPEG", quality=90, exif=exif.tobytes())
    plain = encode(stored, "JPEG", quality=90)

    assert pdq_distance(rotated, upright) <= 10
    assert pdq_distance(plain, upright) > PDQ_THRESHOLD  # the tag is what makes the difference
    hashes = compute_hashes(rotated)
    assert (hashes.width, hashes.height) == (480, 320)
    assert decode_image(rotated).size == (480, 320)


def test_transparent_pixels_are_flattened_onto_white() -> None:
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # transparent black
    ImageDraw.Draw(rgba).rectangle((16, 16, 47, 47), fill=(200, 30, 30, 255))
    im = decode_image(encode(rgba, "PNG"))
    assert im.mode == "RGB"
    assert im.getpixel((2, 2)) == (255, 255, 255)
    assert im.getpixel((32, 32)) == (200, 30, 30)

    la = Image.new("LA", (32, 32), (0, 0))
    assert decode_image(encode(la, "PNG")).getpixel((5, 5)) == (255, 255, 255)

    half = Image.new("RGBA", (8, 8), (0, 0, 0, 128))
    assert decode_image(encode(half, "PNG")).getpixel((1, 1)) == (127, 127, 127)


def test_palette_images_with_and_without_transparency() -> None:
    pal = Image.new("P", (32, 32), 1)
    pal.putpalette([0, 0, 0, 10, 120, 200, 250, 250, 0] + [0] * (256 * 3 - 9))
    ImageDraw.Draw(pal).rectangle((0, 0, 15, 31), fill=2)
    im = decode_image(encode(pal, "PNG"))
    assert im.getpixel((20, 5)) == (10, 120, 200) and im.getpixel((2, 5)) == (250, 250, 0)

    gif = encode(pal, "GIF", transparency=1)  # index 1 is see-through
    im = decode_image(gif)
    assert im.getpixel((20, 5)) == (255, 255, 255) and im.getpixel((2, 5)) == (250, 250, 0)


def test_cmyk_jpeg_hashes_like_rgb() -> None:
    original = synthetic_photo(6)
    data = encode(original.convert("CMYK"), "JPEG", quality=92)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert pdq_distance(data, original) <= PDQ_THRESHOLD


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    ramp8 = np.tile(np.linspace(0, 255, 256).astype(np.uint8), (64, 1))
    ramp16 = ramp8.astype(np.uint16) * 257  # 0..65535
    data = encode(Image.fromarray(ramp16), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    im = decode_image(data)
    assert im.getpixel((0, 0)) == (0, 0, 0)
    assert im.getpixel((128, 0)) == (128, 128, 128)
    assert im.getpixel((255, 0)) == (255, 255, 255)
    eight_bit = compute_hashes(encode(Image.fromarray(ramp8), "PNG"))
    assert compute_hashes(data).get("pdq").value == eight_bit.get("pdq").value


def test_animated_gif_uses_the_first_frame() -> None:
    first, second = synthetic_photo(7), synthetic_photo(8)
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert pdq_distance(data, first) <= PDQ_THRESHOLD
    assert pdq_distance(data, second) > PDQ_THRESHOLD


def test_tiny_and_flat_images_hash_with_low_quality() -> None:
    hashes = compute_hashes(encode(Image.new("RGB", (10, 10), (90, 90, 90)), "PNG"))
    assert hashes.get("pdq").quality == 0
    assert (hashes.width, hashes.height) == (10, 10)


# ---------------------------------------------------------------- bad input


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares a size but holds no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is a text file\n",
        bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    ],
    ids=["empty", "text", "random", "svg"],
)
def test_non_images_raise_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImageError, match="not a decodable image"):
        compute_hashes(data)


def test_truncated_jpeg_raises_not_an_image() -> None:
    data = encode(synthetic_photo(9), "JPEG", quality=90)
    for cut in (len(data) // 2, 200):
        with pytest.raises(NotAnImageError, match="not a decodable image"):
            compute_hashes(data[:cut])


def test_decompression_bomb_is_refused_from_the_header() -> None:
    # No pixel data follows the header: had decoding started, the error would be another one.
    with pytest.raises(NotAnImageError, match="decompression bomb") as info:
        decode_image(_png_header(100_000, 100_000))
    assert "100000" in str(info.value).replace(",", "")

    with pytest.raises(NotAnImageError, match=r"3000x3000 pixels.*limit of 1,000,000"):
        decode_image(_png_header(3000, 3000), max_pixels=1_000_000)
    with pytest.raises(NotAnImageError, match="not a decodable image"):
        decode_image(_png_header(3000, 3000))  # allowed size: now decoding fails, as it must


def test_formats_outside_the_web_set_are_refused() -> None:
    ppm = b"P6\n2 2\n255\n" + bytes(12)  # Pillow reads PPM, but it is no web image format
    assert Image.open(io.BytesIO(ppm)).size == (2, 2)
    with pytest.raises(NotAnImageError, match="cannot identify image file"):
        decode_image(ppm)


# ---------------------------------------------------------------- reduced decoding


def _full_decode_hashes(path: Path) -> dict[str, str]:
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    return {alg.name: alg.compute(rgb).value for alg in algorithms()}


def test_reduced_decoding_stays_close_to_a_full_decode() -> None:
    files = corpus_files("fullsize") + corpus_files("reference", 6)
    for path in files:
        hashes = compute_hashes(path.read_bytes())
        with Image.open(path) as im:
            assert (hashes.width, hashes.height) == im.size, path.name  # full size, not draft
        full = _full_decode_hashes(path)
        # two box reductions (decoder, then PDQ's input) against one: a few bits apart
        assert hamming(hashes.get("pdq").value, full["pdq"]) <= 12, path.name
        assert hamming(hashes.get("phash").value, full["phash"]) <= 2, path.name


def test_large_jpeg_is_decoded_at_reduced_scale() -> None:
    big = synthetic_photo(10, (2560, 2048))
    im = decode_image(encode(big, "JPEG", quality=85))
    # decoded by the JPEG decoder at 1/8 scale: the short side stays at least WORKING_SIZE
    assert im.size == (320, 256) and hashing.WORKING_SIZE == 256
    hashes = compute_hashes(encode(big, "JPEG", quality=85))
    assert (hashes.width, hashes.height) == (2560, 2048)
    # a synthetic photo full of fine detail: 1/8 scale loses some (real photos: <= 8, above)
    assert hamming(hashes.get("pdq").value, pdq_of(big)) <= 20


def test_multi_picture_jpeg_uses_the_main_picture_at_reduced_scale() -> None:
    main, second = synthetic_photo(13, (2048, 1536)), synthetic_photo(14, (2048, 1536))
    data = encode(main, "MPO", save_all=True, append_images=[second], quality=90)
    assert Image.open(io.BytesIO(data)).format == "MPO"  # as many cameras and phones write
    assert decode_image(data).size == (512, 384)  # 1/4 scale: 1/8 would go below 256
    assert pdq_distance(data, main) <= 8


def _eighth(data: bytes) -> np.ndarray:
    """The JPEG decoded at 1/8 scale by Pillow (libjpeg-turbo), as RGB pixels."""
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (im.width // 8, im.height // 8))
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize(
    ("mode", "params"),
    [
        ("RGB", {"subsampling": 2}),  # 4:2:0, as cameras and most sites
        ("RGB", {"subsampling": 0}),  # 4:4:4
        ("RGB", {"subsampling": 1}),  # 4:2:2
        ("RGB", {"subsampling": 2, "restart_marker_blocks": 3}),
        ("L", {}),
        ("CMYK", {}),
    ],
    ids=["420", "444", "422", "restarts", "grey", "cmyk"],
)
def test_progressive_jpeg_dc_scans_alone_decode_like_the_whole_file(
    mode: str, params: dict
) -> None:
    picture = synthetic_photo(15, (389, 261)).convert(mode)  # sizes not multiples of 8 or 16
    data = encode(picture, "JPEG", quality=92, progressive=True, **params)
    dc_only = hashing._progressive_dc_only(data)
    assert dc_only is not None and len(dc_only) < len(data) // 2
    # at 1/8 scale only the DC coefficients count: pixel for pixel what the whole file gives
    # (were the AC scans just dropped, the decoder would smooth the blocks: up to 40 levels off)
    assert np.array_equal(_eighth(dc_only), _eighth(data))


def test_only_complete_progressive_jpegs_are_cut_down() -> None:
    picture = synthetic_photo(16, (200, 120))
    progressive = encode(picture, "JPEG", quality=90, progressive=True)
    assert hashing._progressive_dc_only(progressive) is not None
    assert hashing._progressive_dc_only(encode(picture, "JPEG", quality=90)) is None  # baseline
    assert hashing._progressive_dc_only(encode(picture, "PNG")) is None
    for cut in (len(progressive) - 2, len(progressive) // 2, 300, 3):  # no EOI: left to Pillow
        assert hashing._progressive_dc_only(progressive[:cut]) is None
    rng = np.random.default_rng(0)
    for _ in range(300):  # corrupt headers and scans: cut down or not, never an exception
        damaged = bytearray(progressive)
        for at in rng.integers(2, 700, 3):
            damaged[at] = int(rng.integers(0, 256))
        result = hashing._progressive_dc_only(bytes(damaged))
        assert result is None or result.startswith(b"\xff\xd8")


@functools.cache
def _large_photo() -> Image.Image:
    return synthetic_photo(17, (576, 512)).resize((2304, 2048), Image.Resampling.BICUBIC)


def test_large_progressive_jpeg_is_hashed_from_its_dc_scans(monkeypatch) -> None:
    big = _large_photo()
    data = encode(big, "JPEG", quality=90, progressive=True)
    results: list[bytes | None] = []
    original = hashing._progressive_dc_only

    def spy(body: bytes) -> bytes | None:
        results.append(original(body))
        return results[-1]

    monkeypatch.setattr(hashing, "_progressive_dc_only", spy)
    im = decode_image(data)
    assert len(results) == 1 and results[0] is not None  # the DC-only path was taken
    assert im.size == (288, 256)
    assert np.array_equal(np.asarray(im), _eighth(data))  # as decoding the whole file
    hashes = compute_hashes(data)
    assert (hashes.width, hashes.height) == (2304, 2048)
    assert hamming(hashes.get("pdq").value, pdq_of(big)) <= 12

    results.clear()
    decode_image(encode(big, "JPEG", quality=90))  # baseline JPEG: nothing to cut away
    decode_image(encode(big.resize((1200, 1000)), "JPEG", progressive=True))  # 1/4 scale
    assert results == []

    # truncated: refused like any truncated JPEG, not decoded from the DC scans it still has
    for cut in (len(data) - 2, len(data) * 2 // 3):
        with pytest.raises(NotAnImageError, match="not a decodable image"):
            compute_hashes(data[:cut])


def test_large_progressive_jpeg_keeps_its_exif_orientation() -> None:
    upright = _large_photo()
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    data = encode(stored, "JPEG", quality=90, progressive=True, exif=exif.tobytes())
    assert hashing._progressive_dc_only(data) is not None
    assert decode_image(data).size == (288, 256)
    hashes = compute_hashes(data)
    assert (hashes.width, hashes.height) == (2304, 2048)
    assert hamming(hashes.get("pdq").value, pdq_of(upright)) <= 12


# ---------------------------------------------------------------- hamming and registry


def test_hamming() -> None:
    assert hamming("00", "00") == 0
    assert hamming("ff", "00") == 8
    assert hamming("0f0f", "0e0f") == 1
    assert hamming("a" * 64, "5" * 64) == 256
    with pytest.raises(ValueError, match="differ in length"):
        hamming("00", "000")


class _MeanHash:
    """A 16-bit average hash: a stand-in for a third algorithm."""

    name = "mean16"
    label = "Mean16"
    bits = 16
    default_threshold = 2

    def compute(self, image: Image.Image) -> HashValue:
        small = np.asarray(image.convert("L").resize((4, 4)), dtype=np.float64)
        return HashValue(self.name, hashing._bits_to_hex((small > small.mean()).flatten()))


def test_a_new_algorithm_is_one_class_and_a_registration(monkeypatch) -> None:
    monkeypatch.setattr(hashing, "_REGISTRY", dict(hashing._REGISTRY))
    register_algorithm(_MeanHash())
    assert [a.name for a in algorithms()] == ["pdq", "phash", "mean16"]
    assert get_algorithm("mean16").bits == 16
    value = compute_hashes(encode(synthetic_photo(11), "PNG")).get("mean16")
    assert value is not None and len(value.value) == 4
    with pytest.raises(ValueError, match="already registered"):
        register_algorithm(_MeanHash())
    with pytest.raises(TypeError):
        register_algorithm(object())  # type: ignore[arg-type]


def test_unknown_algorithm_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown hash algorithm 'md5' \(known: pdq, phash\)"):
        get_algorithm("md5")


def test_compute_hashes_runs_in_a_process_pool() -> None:
    data = encode(synthetic_photo(12), "JPEG", quality=90)
    pickle.dumps(compute_hashes)
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        remote = pool.submit(compute_hashes, data).result()
        with pytest.raises(NotAnImageError):
            pool.submit(compute_hashes, b"junk").result()
    assert remote == compute_hashes(data)
