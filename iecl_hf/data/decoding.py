"""Turn whatever an image column holds into an RGB PIL image, or None when it cannot be decoded."""

import io
import warnings

from PIL import Image, ImageFile

# Very large images are legitimate in the wild (we resize them); refuse only absurd decompression bombs.
Image.MAX_IMAGE_PIXELS = 1 << 30


def decode_image(value) -> Image.Image | None:
    """RGB PIL image from a PIL image, a `{"bytes", "path"}` dict (datasets' undecoded Image), bytes or a path.

    Greyscale, palette, RGBA (composited on white) and CMYK images are converted. Truncated or corrupt data
    returns None so the caller can skip and count it.
    """
    try:
        if isinstance(value, Image.Image):
            image = value
        else:
            if isinstance(value, dict):
                data, path = value.get("bytes"), value.get("path")
            elif isinstance(value, (bytes, bytearray)):
                data, path = value, None
            else:
                data, path = None, value
            if not data and not path:
                return None
            previous = ImageFile.LOAD_TRUNCATED_IMAGES
            ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is corrupt, not half an image
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    image = Image.open(io.BytesIO(data) if data else path)
                    image.load()
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = previous
        if image.width < 1 or image.height < 1:
            return None
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            return background
        return image.convert("RGB") if image.mode != "RGB" else image
    except Exception:  # PIL raises many types for bad data (OSError, SyntaxError, ValueError, ...)
        return None
