# Compares server/image (via the resize_dump tool) with Pillow: decoding, Image.resize BICUBIC
# and OpenCLIP's resize + center crop + normalize, on the reference images and synthetic sizes;
# and the opt-in fast JPEG decode with Pillow's draft() + resize(box=...).
"""usage: pil_compare.py RESIZE_DUMP TEST_DATA_DIR  (exit 1 on any mismatch)"""
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

DUMP, DATA = sys.argv[1], sys.argv[2]
REF = os.path.join(DATA, "openclip-reference", "images")
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
failures = []
stats = {"exact": 0, "total": 0}


def run(*args):
    subprocess.run([DUMP, *map(str, args)], check=True)


def read_ppm(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def compare(name, ours, theirs, allow_off_by_one=0.0):
    stats["total"] += 1
    if ours.shape != theirs.shape:
        failures.append(f"{name}: shape {ours.shape} != PIL {theirs.shape}")
        return
    diff = np.abs(ours.astype(np.int32) - theirs.astype(np.int32))
    if diff.max() == 0:
        stats["exact"] += 1
        return
    frac = float((diff > 0).mean())
    msg = f"{name}: max diff {diff.max()}, {frac:.6f} of values differ"
    print(msg)
    if diff.max() > 1 or frac > allow_off_by_one:
        failures.append(msg)


def clip_geometry(w, h, size):
    # torchvision Resize(int) + CenterCrop, as OpenCLIP uses them.
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    ow, oh = (size, new_long) if w <= h else (new_long, size)
    return ow, oh, int(round((ow - size) / 2.0)), int(round((oh - size) / 2.0))


def pil_clip(im, size):
    ow, oh, left, top = clip_geometry(im.width, im.height, size)
    r = im.resize((ow, oh), Image.BICUBIC)
    return np.asarray(r.crop((left, top, left + size, top + size)))


def check_image(name, im, tmp, resize_sizes, clip_sizes):
    """im: an RGB PIL image; it is written as PNG so both sides resize the same pixels."""
    src = os.path.join(tmp, name + ".png")
    im.save(src)
    for (w, h) in resize_sizes:
        out = os.path.join(tmp, "out.ppm")
        run("resize", src, w, h, out)
        compare(f"{name} resize {w}x{h}", read_ppm(out), np.asarray(im.resize((w, h), Image.BICUBIC)))
    for size in clip_sizes:
        out = os.path.join(tmp, "out.ppm")
        run("clip", src, size, out)
        theirs = pil_clip(im, size)
        compare(f"{name} clip {size}", read_ppm(out), theirs)
        f32 = os.path.join(tmp, "out.f32")
        run("preprocess", src, size, f32)
        ours = np.fromfile(f32, np.float32).reshape(3, size, size)
        t = (theirs.astype(np.float32) / np.float32(255.0) - MEAN) / STD
        ref = np.ascontiguousarray(t.transpose(2, 0, 1))
        stats["total"] += 1
        err = float(np.abs(ours - ref).max())
        if err > 1e-6:
            failures.append(f"{name} preprocess {size}: max abs err {err}")
        else:
            stats["exact"] += 1


def check_decode_variants(tmp, rng):
    noise = Image.fromarray(rng.integers(0, 256, (37, 41, 3), dtype=np.uint8), "RGB")
    pal = noise.quantize(200)
    gray = noise.convert("L")
    variants = [
        ("rgb.png", noise, {}), ("rgb_trns.png", noise, {"transparency": (1, 2, 3)}),
        ("l_trns.png", gray, {"transparency": 5}), ("l.png", gray, {}),
        ("1bit.png", gray.convert("1"), {}), ("p.png", pal, {}),
        ("p4.png", noise.quantize(16), {"bits": 4}),
        ("p_trns.png", pal, {"transparency": 7}), ("rgba.png", noise.convert("RGBA"), {}),
        ("q95.jpg", noise, {"quality": 95}), ("q50_444.jpg", noise, {"quality": 50, "subsampling": 0}),
        ("q75_422.jpg", noise, {"quality": 75, "subsampling": 1}),
        ("prog.jpg", noise, {"progressive": True}), ("gray.jpg", gray, {}),
        ("cmyk.jpg", noise.convert("CMYK"), {}),
        ("lossy.webp", noise, {"quality": 80}), ("lossless.webp", noise, {"lossless": True}),
        ("rgba_lossy.webp", noise.convert("RGBA"), {"quality": 70}),
        ("p.gif", pal, {}), ("l.gif", gray, {}), ("rgb.bmp", noise, {}), ("p.bmp", pal, {}),
        ("1bit.bmp", gray.convert("1"), {}), ("l.bmp", gray, {}),
    ]
    for name, im, kw in variants:
        path = os.path.join(tmp, "variant_" + name)
        im.save(path, **kw)
        out = os.path.join(tmp, "dec.ppm")
        run("decode", path, out)
        with Image.open(path) as pil:
            compare(f"decode variant {name}", read_ppm(out), np.asarray(pil.convert("RGB")))


def check_fast_jpeg(tmp, rng):
    """--image-decode fast against Pillow doing the same: draft() (libjpeg's DCT scaling) to
    1/d, then resize(box=...) of the full-size geometry, as Image.thumbnail does."""
    photo = Image.open(os.path.join(REF, "photo_800x600.jpg")).convert("RGB")
    sources = [os.path.join(REF, "photo_800x600.jpg"), os.path.join(REF, "odd_1999x1001.jpg")]
    for (w, h, q) in [(1999, 1001, 90), (1600, 1200, 85), (901, 1203, 95), (3001, 2001, 80)]:
        big = np.asarray(photo.resize((w, h), Image.BICUBIC)).astype(np.int32)
        big = np.clip(big + rng.integers(-8, 9, big.shape), 0, 255).astype(np.uint8)
        path = os.path.join(tmp, f"fast_{w}x{h}.jpg")
        Image.fromarray(big, "RGB").save(path, quality=q)
        sources.append(path)
    scaled = 0
    for path in sources:
        for size in [64, 224, 100]:
            with Image.open(path) as im:
                w, h = im.size
                d = next((d for d in (8, 4, 2) if -(-min(w, h) // d) >= 2 * size), 1)
                ow, oh, left, top = clip_geometry(w, h, size)
                if d > 1:
                    im.draft("RGB", (w // d, h // d))
                    assert im.size == (-(-w // d), -(-h // d)), (path, im.size, d)
                    scaled += 1
                rgb = im.convert("RGB")
                r = rgb.resize((ow, oh), Image.BICUBIC, box=(0, 0, w / d, h / d))
                theirs = np.asarray(r.crop((left, top, left + size, top + size)))
            out = os.path.join(tmp, "fast.ppm")
            run("clipfast", path, size, out)
            compare(f"fast decode {os.path.basename(path)} clip {size} (1/{d})", read_ppm(out), theirs)
    if scaled < 10:
        failures.append(f"fast decode: only {scaled} cases were DCT-scaled")


def main():
    rng = np.random.default_rng(1234)
    with tempfile.TemporaryDirectory() as tmp:
        # 1. Decoding equals Pillow's open().convert("RGB") on the reference images.
        for fname in sorted(os.listdir(REF)):
            path = os.path.join(REF, fname)
            out = os.path.join(tmp, "dec.ppm")
            run("decode", path, out)
            with Image.open(path) as im:
                pil = im.convert("RGB")
            compare(f"decode {fname}", read_ppm(out), np.asarray(pil))
            # 2. Resize and CLIP preprocessing on exactly the same pixels.
            w, h = pil.size
            check_image(os.path.splitext(fname)[0], pil, tmp,
                        [(224, 224), (max(1, w // 3), max(1, h // 5)), (w * 2 + 1, h + 3), (w, 17)],
                        [64, 224])
        # 2b. Decoding of encoder variants made here with Pillow (same pixels, many layouts).
        check_decode_variants(tmp, rng)
        # 3. Synthetic: noise and gradients, up/down scaling and extreme aspect ratios.
        shapes = [(1, 1), (2, 3), (7, 500), (500, 7), (3000, 20), (20, 3000), (333, 333),
                  (1023, 769), (64, 64), (65, 63), (9000, 30)]
        for (w, h) in shapes:
            noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            im = Image.fromarray(noise, "RGB")
            check_image(f"noise_{w}x{h}", im, tmp,
                        [(1, 1), (w + 1, h), (w, h + 1), (max(1, w // 7), max(1, h // 2)),
                         (w * 3, max(1, h // 3)), (97, 131)],
                        [1, 64, 224])
        # 4. Extreme values: a black/white checkerboard (ringing clips at 0 and 255).
        checker = (np.indices((101, 99)).sum(0) % 2 * 255).astype(np.uint8)
        im = Image.fromarray(np.stack([checker] * 3, -1), "RGB")
        check_image("checker", im, tmp, [(50, 50), (303, 297), (13, 200)], [224])
        # 5. The opt-in fast JPEG decode equals Pillow's draft() + resize(box).
        check_fast_jpeg(tmp, rng)
    print(f"{stats['exact']}/{stats['total']} comparisons exact")
    if failures:
        print("FAILURES:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
