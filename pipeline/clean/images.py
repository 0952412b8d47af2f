"""Images: JPEG, PNG, GIF, WebP and TIFF re-saved by Pillow in the same format, upright, with no
EXIF, XMP, ICC profile, text chunks or comments; HEIC/HEIF (pillow-heif) and AVIF photos
re-saved as JPEG the same way.

In: image bytes (and a `Deadline`). Out: the cleaned bytes, their content type and whether
metadata was found; or `Withhold` with the reason. Pillow's pixel cap is lowered to
`MAX_PIXELS` for the whole process when this module is imported: a decompression bomb is refused
before it is decoded.
"""

from __future__ import annotations

from io import BytesIO

import pillow_heif
from PIL import Image, ImageOps, PngImagePlugin, TiffImagePlugin

from pipeline.clean.common import METADATA, TOO_LARGE, UNREADABLE, Deadline, Withhold

MAX_FRAMES = 1_000
MAX_PIXELS = 40_000_000  # all frames of one image together; a 12-megapixel photo is far below

if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
Image.init()  # every plugin Pillow has, AVIF among them
pillow_heif.register_heif_opener()

# The format Pillow reports → the format we save (an MPO is a JPEG with extra frames).
_IMAGE_FORMATS = {
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "PNG": "PNG",
    "GIF": "GIF",
    "WEBP": "WEBP",
    "TIFF": "TIFF",
    "HEIF": "JPEG",
    "AVIF": "JPEG",
}
_OPENED_FORMATS = [name for name in _IMAGE_FORMATS if name != "MPO"]  # Pillow opens MPO as JPEG
_IMAGE_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_HEIF_BRANDS |= {b"mif1", b"mif2", b"msf1", b"avif", b"avis"}
_IMAGE_METADATA_KEYS = {"exif", "xmp", "XML:com.adobe.xmp", "icc_profile", "comment"}
_IMAGE_METADATA_KEYS |= {"photoshop", "extension"}
_KEPT_IMAGE_INFO = ("transparency", "duration", "background")
# TIFF tags that describe the pixels; any other tag (Artist, Make, GPS, XMP...) is metadata.
_TIFF_STRUCTURE_TAGS = {254, 255, 256, 257, 258, 259, 262, 266, 273, 274, 277, 278, 279, 280}
_TIFF_STRUCTURE_TAGS |= {281, 282, 283, 284, 292, 293, 296, 297, 317, 318, 319, 320, 322}
_TIFF_STRUCTURE_TAGS |= {323, 324, 325, 338, 339, 340, 341, 347, 529, 530, 531, 532}
_TIFF_COMPRESSIONS = {"raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits"}
_TIFF_COMPRESSIONS |= {"group3", "group4", "jpeg"}


def is_heif(data: bytes) -> bool:
    """HEIC/HEIF/AVIF: an ISO media file whose brand is an image brand."""
    return data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS


def open_image(data: bytes) -> Image.Image | None:
    """The image when the content is one of the formats we re-save, else None."""
    try:
        return Image.open(BytesIO(data), formats=_OPENED_FORMATS)
    except Image.UnidentifiedImageError:
        return None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise Withhold(UNREADABLE) from error


def converted(image: Image.Image) -> bool:
    """True when the image is re-saved in another format (HEIF and AVIF become JPEG)."""
    return image.format in {"HEIF", "AVIF"}


def clean_image(image: Image.Image, deadline: Deadline) -> tuple[bytes, str, bool]:
    """Re-save the image without metadata: (bytes, content type, whether metadata was found)."""
    if image.format not in _IMAGE_FORMATS:
        raise Withhold(METADATA)
    target = _IMAGE_FORMATS[image.format]
    try:
        frames = _clean_frames(image, target, deadline)
        removed = _has_image_metadata(image)
        out = BytesIO()
        frames[0].save(out, target, **_save_options(image, target, frames))
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise Withhold(UNREADABLE) from error
    result = out.getvalue()
    deadline.check()
    _verify_image(result, target)
    return result, _IMAGE_TYPES[target], removed


def _clean_frames(image: Image.Image, target: str, deadline: Deadline) -> list[Image.Image]:
    """Every frame upright, as a plain image whose info keeps only animation and transparency."""
    count = 1 if target == "JPEG" else getattr(image, "n_frames", 1)
    if count > MAX_FRAMES:
        raise Withhold(TOO_LARGE)
    limit = min(Image.MAX_IMAGE_PIXELS or MAX_PIXELS, MAX_PIXELS)
    frames, pixels = [], 0
    for index in range(count):
        deadline.check()
        image.seek(index)
        pixels += image.width * image.height
        if pixels > limit:
            raise Withhold(TOO_LARGE)
        frame = ImageOps.exif_transpose(image)
        if target == "JPEG" and frame.mode not in {"RGB", "L", "CMYK"}:
            frame = frame.convert("RGB")  # a HEIF or AVIF photo may carry alpha or 16 bits
        frame.info = {key: image.info[key] for key in _KEPT_IMAGE_INFO if key in image.info}
        frames.append(frame)
    image.seek(0)
    return frames


def _save_options(image: Image.Image, target: str, frames: list[Image.Image]) -> dict[str, object]:
    """Pillow save options: quality, compression and animation; never any metadata."""
    options: dict[str, object] = {}
    if target == "JPEG":
        options["quality"] = 95
    if target == "WEBP":
        options["quality"] = 90
    if target == "TIFF":
        compression = image.info.get("compression")
        options["compression"] = compression if compression in _TIFF_COMPRESSIONS else "tiff_lzw"
    if "dpi" in image.info and target in {"JPEG", "PNG", "TIFF"}:
        options["dpi"] = image.info["dpi"]
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:])
        if target != "TIFF":
            options["duration"] = [frame.info.get("duration", 0) for frame in frames]
            options["loop"] = image.info.get("loop", 0)
    return options


def _has_image_metadata(image: Image.Image) -> bool:
    """True when the image carries EXIF, XMP, ICC, comments, text chunks or descriptive tags."""
    found = _IMAGE_METADATA_KEYS & image.info.keys()
    if found == {"extension"} and _is_animation_extension(image.info["extension"]):
        found = set()
    if found:
        return True
    if isinstance(image, PngImagePlugin.PngImageFile) and image.text:
        return True
    if isinstance(image, TiffImagePlugin.TiffImageFile):
        return bool(set(image.tag_v2) - _TIFF_STRUCTURE_TAGS)
    return False


def _is_animation_extension(extension: object) -> bool:
    """The GIF application extension that only says how often to loop."""
    block = extension[0] if isinstance(extension, tuple) and extension else b""
    return isinstance(block, bytes) and block.startswith((b"NETSCAPE2.0", b"ANIMEXTS1.0"))


def _verify_image(data: bytes, target: str) -> None:
    """Reopen what we wrote: it must be readable, in the same format and carry no metadata."""
    with Image.open(BytesIO(data), formats=[target]) as image:
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            if _has_image_metadata(image):
                raise Withhold(METADATA)
