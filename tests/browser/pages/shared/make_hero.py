"""Writes hero.png (760x420): coloured 8x8 blocks from a fixed seed, so the committed file is
reproducible. Its detail matters: Chromium ignores near-uniform images (under 0.05 bits per
displayed pixel) as largest-contentful-paint candidates, and the pages need this image to be
their largest paint. Run: python3 make_hero.py"""
import random
import struct
import zlib
from pathlib import Path

WIDTH, HEIGHT, BLOCK = 760, 420, 8
rng = random.Random(20240611)
blocks = [[(rng.randrange(40, 216), rng.randrange(80, 200), rng.randrange(120, 256))
           for _ in range(WIDTH // BLOCK + 1)] for _ in range(HEIGHT // BLOCK + 1)]
raw = b"".join(
    b"\x00" + b"".join(bytes(blocks[y // BLOCK][x // BLOCK]) for x in range(WIDTH)) for y in range(HEIGHT))


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", WIDTH, HEIGHT, 8, 2, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
Path(__file__).with_name("hero.png").write_bytes(png)
print(f"hero.png: {len(png)} bytes, {len(png) * 8 / (WIDTH * HEIGHT):.3f} bits per pixel")
