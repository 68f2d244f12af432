"""``process-image``: download -> resize -> upload, with progress and logs.

"Download" reads ``inbox/<filename>`` from the data directory, or, when there is no such file,
generates a deterministic test image for that name (no network). Images are binary PPM (P6), a
format simple enough to decode and resize in a few lines of Python. "Upload" copies the result to
``public/`` and returns a file:// URL.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from durably_sched import Step, define_job

from ._data import data_dir, write_atomically

SOURCE_SIZE = 192


class ImageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not a silent default

    filename: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    width: int = Field(default=48, ge=1, le=4096)


class ImageOut(BaseModel):
    url: str
    width: int
    height: int
    bytes: int


def _generated_ppm(name: str, size: int = SOURCE_SIZE) -> bytes:
    """A gradient whose colours depend on the file name: the same name gives the same image."""
    seed = hashlib.sha256(name.encode()).digest()
    r0, g0, b0 = seed[0], seed[1], seed[2]
    rows = []
    for y in range(size):
        g = (g0 + y) & 0xFF
        row = bytearray()
        for x in range(size):
            row += bytes(((r0 + x) & 0xFF, g, (b0 + x + y) & 0xFF))
        rows.append(bytes(row))
    return f"P6 {size} {size} 255\n".encode() + b"".join(rows)


def _read_ppm(data: bytes) -> tuple[int, int, bytes]:
    parts = data.split(maxsplit=4)
    if len(parts) < 5 or parts[0] != b"P6" or parts[3] != b"255":
        raise ValueError("not a binary PPM (P6, 8 bits) image")
    width, height = int(parts[1]), int(parts[2])
    pixels = parts[4]
    if len(pixels) < width * height * 3:
        raise ValueError(f"truncated image: {len(pixels)} bytes for {width}x{height} pixels")
    return width, height, pixels


def download(filename: str) -> dict[str, object]:
    source = data_dir("inbox") / filename
    if source.exists():
        data, origin = source.read_bytes(), "inbox"
    else:
        data, origin = _generated_ppm(filename), "generated"
    width, height, _ = _read_ppm(data)
    target = data_dir("work") / f"{filename}.src.ppm"
    write_atomically(target, data)
    return {"path": str(target), "width": width, "height": height, "bytes": len(data), "origin": origin}


def resize(path: str, filename: str, width: int) -> dict[str, object]:
    """Nearest-neighbour resize to ``width``, keeping the aspect ratio."""
    src_w, src_h, pixels = _read_ppm(Path(path).read_bytes())
    height = max(1, round(src_h * width / src_w))
    out = bytearray()
    for y in range(height):
        sy = y * src_h // height
        for x in range(width):
            i = (sy * src_w + x * src_w // width) * 3
            out += pixels[i : i + 3]
    data = f"P6 {width} {height} 255\n".encode() + bytes(out)
    target = data_dir("work") / f"{filename}.{width}.ppm"
    write_atomically(target, data)
    return {"path": str(target), "width": width, "height": height, "bytes": len(data)}


def upload(path: str, filename: str) -> dict[str, object]:
    data = Path(path).read_bytes()
    target = data_dir("public") / Path(path).name
    write_atomically(target, data)
    return {"url": target.resolve().as_uri(), "bytes": len(data)}


async def process_image(step: Step, payload: ImageIn) -> ImageOut:
    await step.progress(0, 3, "downloading")
    source = await step.run("download", lambda: download(payload.filename))
    step.log.info("downloaded", origin=source["origin"], bytes=source["bytes"])
    await step.progress(1, 3, "resizing")
    small = await step.run("resize", lambda: resize(source["path"], payload.filename, payload.width))
    step.log.info("resized", width=small["width"], height=small["height"])
    await step.progress(2, 3, "uploading")
    uploaded = await step.run("upload", lambda: upload(small["path"], payload.filename))
    await step.progress(3, 3, "done")
    return ImageOut(
        url=uploaded["url"], width=small["width"], height=small["height"], bytes=uploaded["bytes"]
    )


process_image_job = define_job(
    name="process-image",
    input=ImageIn,
    output=ImageOut,
    run=process_image,
    description="Download, resize and upload an image (local files only).",
)
