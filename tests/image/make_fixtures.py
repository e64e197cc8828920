# Generates the small committed fixtures in tests/data/images/ with Pillow (run by hand with
# /usr/bin/python3; image_test.cc checks that every lossless one decodes to base.png's pixels).
import io
import os
import struct
import sys
import zlib

from PIL import Image

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "data", "images")
W, H = 23, 17
PALETTE = [((i * 37) % 256, (i * 91 + 13) % 256, (255 - i * 53) % 256) for i in range(64)]


def index_at(x, y):
    return (x * 3 + y * 5 + (x * y) % 7) % 64


def base_rgb():
    im = Image.new("RGB", (W, H))
    im.putdata([PALETTE[index_at(x, y)] for y in range(H) for x in range(W)])
    return im


def base_p():
    im = Image.new("P", (W, H))
    im.putpalette([c for rgb in PALETTE for c in rgb])
    im.putdata([index_at(x, y) for y in range(H) for x in range(W)])
    return im


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def raw_png(width, height, bit_depth, color_type, rows, interlace=0):
    """A PNG from already-packed scanlines (filter byte 0 added here)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    data = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", zlib.compress(data)) + png_chunk(b"IEND", b""))


def adam7_rows(width, height, pixel_bytes):
    """Scanlines of the 7 Adam7 passes (for raw_png with interlace=1)."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
              (0, 1, 1, 2)]
    rows = []
    for x0, y0, dx, dy in passes:
        xs = range(x0, width, dx)
        if not xs:
            continue
        for y in range(y0, height, dy):
            rows.append(b"".join(pixel_bytes(x, y) for x in xs))
    return rows


def save(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def encode(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def main():
    os.makedirs(OUT, exist_ok=True)
    rgb = base_rgb()
    px = list(rgb.getdata())
    save("base.png", encode(rgb, "PNG"))
    # 16-bit RGB: v * 257 (the high byte is v).
    rows16 = [b"".join(struct.pack(">HHH", *(c * 257 for c in px[y * W + x])) for x in range(W))
              for y in range(H)]
    save("rgb16.png", raw_png(W, H, 16, 2, rows16))
    # Adam7-interlaced 8-bit RGB (Pillow cannot write interlaced PNGs).
    save("interlaced.png", raw_png(W, H, 8, 2, adam7_rows(W, H, lambda x, y: bytes(px[y * W + x])),
                                   interlace=1))
    # RGBA with varying alpha: decoding drops alpha without compositing.
    rgba = rgb.copy()
    alpha = Image.new("L", (W, H))
    alpha.putdata([(x * 11 + y * 3) % 256 for y in range(H) for x in range(W)])
    rgba.putalpha(alpha)
    save("rgba.png", encode(rgba, "PNG"))
    p = base_p()
    save("palette.png", encode(p, "PNG"))
    save("palette_trns.png", encode(p, "PNG", transparency=5))
    save("lossless.webp", encode(rgb, "WEBP", lossless=True, quality=100))
    save("rgb24.bmp", encode(rgb, "BMP"))
    save("rgba32.bmp", encode(rgba, "BMP"))
    save("pal8.bmp", encode(p, "BMP"))
    save("palette.gif", encode(p, "GIF"))
    save("interlaced.gif", encode(p, "GIF", interlace=True))
    # Animated: the first frame is the base image.
    p2 = p.point(lambda i: (i + 7) % 64)
    save("animated.gif", encode(p, "GIF", save_all=True, append_images=[p2], duration=100))
    rgb2 = rgb.transpose(Image.FLIP_LEFT_RIGHT)
    save("animated.webp", encode(rgb, "WEBP", save_all=True, append_images=[rgb2],
                                 lossless=True, quality=100, duration=100))
    # Gray: 8-bit, 16-bit (v * 257), 2-bit, gray+alpha; expected RGB = replicated gray.
    gray = rgb.convert("L")
    save("gray.png", encode(gray, "PNG"))
    gpx = list(gray.getdata())
    save("gray16.png", raw_png(W, H, 16, 0, [b"".join(struct.pack(">H", gpx[y * W + x] * 257)
                                                      for x in range(W)) for y in range(H)]))
    la = gray.convert("LA")
    la.putalpha(alpha)
    save("gray_alpha.png", encode(la, "PNG"))
    save("gray_expected.png", encode(gray.convert("RGB"), "PNG"))
    # Interlaced (Adam7) 8-bit RGB made by hand is long; use Pillow's optimize instead: not
    # interlaced. A 2-bit gray PNG: values 0..3 -> 0, 85, 170, 255.
    rows2 = []
    for y in range(H):
        bits = [(x + y) % 4 for x in range(W)] + [0] * 3
        rows2.append(bytes((bits[i] << 6) | (bits[i + 1] << 4) | (bits[i + 2] << 2) | bits[i + 3]
                           for i in range(0, W, 4)))
    save("gray2.png", raw_png(W, H, 2, 0, rows2))
    # JPEGs with Pillow's decode as the expected RGB: CMYK (Adobe), gray, progressive.
    cmyk = rgb.convert("CMYK")
    for name, im, kw in [("cmyk", cmyk, {}), ("gray", gray, {}),
                         ("progressive", rgb, {"progressive": True})]:
        data = encode(im, "JPEG", quality=90, **kw)
        save(f"{name}.jpg", data)
        save(f"{name}_jpg_expected.png",
             encode(Image.open(io.BytesIO(data)).convert("RGB"), "PNG"))
    # A GIF whose only frame (4x3 at 2,2) is smaller than its 8x6 screen.
    small = Image.new("P", (4, 3))
    small.putpalette([c for rgb_ in PALETTE for c in rgb_])
    small.putdata([(i * 5 + 1) % 64 for i in range(12)])
    data = bytearray(encode(small, "GIF"))
    data[6:10] = struct.pack("<HH", 8, 6)
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while data[pos] == 0x21:  # skip extensions
        pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    assert data[pos] == 0x2C
    data[pos + 1:pos + 5] = struct.pack("<HH", 2, 2)
    save("small_frame.gif", bytes(data))
    save("small_frame_gif_expected.png",
         encode(Image.open(io.BytesIO(bytes(data))).convert("RGB"), "PNG"))


if __name__ == "__main__":
    main()
