"""Hashing speed: compute_hashes against the naive pHash and against the JPEG decode alone.

For each photo of ../shared/corpus/fullsize (camera-size JPEGs) and reference/, in the same run
and all from bytes in memory (no disk in any timing):

- naive: ``imagehash.phash(Image.open(data))`` -- a full decode, then pHash;
- ours: :func:`monitor.hashing.compute_hashes` (SHA-256, reduced-scale decode, EXIF, PDQ, pHash
  and the content-box check);
- decode 1/8: the JPEG decoded at 1/8 scale and nothing else, in colour (``draft("RGB")``, what
  ours needs: the content box looks at colour) and, for comparison, luma only (``draft("L")``).

It prints ours/naive as a speed-up (aim >= 4x on camera-size JPEGs, one core), ours / decode 1/8
RGB (aim <= 1.3x) and ours / decode 1/8 L, and the Hamming distances from full decoding: of the
naive pHash to ours, and of PDQ of the fully decoded picture (box-reduced to PDQ's 256-px input)
to ours. Then the throughput of compute_hashes on one core and on two (a process pool, as a scan
uses it).

    python benchmarks/hash_speed.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import imagehash  # noqa: E402
from PIL import Image  # noqa: E402

from monitor.hashing import PDQ, compute_hashes, hamming  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus"


def _median_s(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _naive(data: bytes) -> imagehash.ImageHash:
    return imagehash.phash(Image.open(io.BytesIO(data)))


def _decode_eighth(data: bytes, mode: str = "RGB") -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.draft(mode, (im.width // 8, im.height // 8))
    im.load()
    return im


def _full_pdq(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as im:
        return PDQ().compute(im.convert("RGB")).value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    groups = {
        name: sorted(p for p in (CORPUS / name).iterdir() if p.is_file())
        for name in ("fullsize", "reference")
    }
    print(
        f"{'file':<36} {'size':>10} {'naive ms':>9} {'ours ms':>8} {'1/8 ms':>7} {'1/8 L':>6} "
        f"{'speed-up':>8} {'vs 1/8':>7} {'vs L':>6} {'pHash d':>7} {'PDQ d':>5}"
    )
    for group, paths in groups.items():
        ratios, overheads, overheads_l, d_phash, d_pdq = [], [], [], [], []
        for path in paths:
            data = path.read_bytes()
            size = "x".join(map(str, Image.open(io.BytesIO(data)).size))
            t_naive = _median_s(lambda d=data: _naive(d), args.repeats)
            t_ours = _median_s(lambda d=data: compute_hashes(d), args.repeats)
            t_eighth = _median_s(lambda d=data: _decode_eighth(d), args.repeats)
            t_eighth_l = _median_s(lambda d=data: _decode_eighth(d, "L"), args.repeats)
            ours = compute_hashes(data)
            d_phash.append(hamming(str(_naive(data)), ours.get("phash").value))
            d_pdq.append(hamming(_full_pdq(data), ours.get("pdq").value))
            ratios.append(t_naive / t_ours)
            overheads.append(t_ours / t_eighth)
            overheads_l.append(t_ours / t_eighth_l)
            print(
                f"{path.name[:36]:<36} {size:>10} {t_naive * 1e3:>9.1f} {t_ours * 1e3:>8.1f} "
                f"{t_eighth * 1e3:>7.1f} {t_eighth_l * 1e3:>6.1f} {t_naive / t_ours:>7.1f}x "
                f"{t_ours / t_eighth:>6.2f}x {t_ours / t_eighth_l:>5.2f}x {d_phash[-1]:>7} "
                f"{d_pdq[-1]:>5}"
            )
        print(
            f"{group}: speed-up over naive median {statistics.median(ratios):.1f}x "
            f"(min {min(ratios):.1f}x, max {max(ratios):.1f}x); ours / decode 1/8 median "
            f"{statistics.median(overheads):.2f}x (max {max(overheads):.2f}x), / decode 1/8 L "
            f"median {statistics.median(overheads_l):.2f}x; distance from full decoding: "
            f"pHash <= {max(d_phash)}, PDQ <= {max(d_pdq)} bits\n"
        )

    bodies = [p.read_bytes() for paths in groups.values() for p in paths] * 3
    t0 = time.perf_counter()
    for body in bodies:
        compute_hashes(body)
    one = len(bodies) / (time.perf_counter() - t0)
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(compute_hashes, bodies[:4]))  # start the workers
        t0 = time.perf_counter()
        list(pool.map(compute_hashes, bodies, chunksize=2))
        two = len(bodies) / (time.perf_counter() - t0)
    print(
        f"throughput over {len(bodies)} images (fullsize + reference, 3 times): one core "
        f"{one:.1f}/s, two processes {two:.1f}/s ({two / one:.2f}x)"
    )


if __name__ == "__main__":
    main()
