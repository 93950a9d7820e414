//! Reading image files: header probes, full decodes with the colour conversions recorded, and
//! the sorting of decoder failures into [`SkipReason`]s.

use std::io::{BufReader, Cursor, Read};
use std::path::Path;

use image::{DynamicImage, ExtendedColorType, ImageDecoder, ImageError, ImageFormat, ImageReader};

use crate::report::{Conversion, SkipReason};

/// The channels a dataset serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColorMode {
    /// Three channels; gray images are replicated, alpha is dropped.
    Rgb,
    /// One channel; colour images are reduced to luma.
    Gray,
}

impl ColorMode {
    /// The number of channels served.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Gray => 1,
        }
    }
}

/// File name extensions treated as images (the formats this crate's `image` build reads).
pub const IMAGE_EXTENSIONS: &[&str] =
    &["png", "jpg", "jpeg", "jpe", "bmp", "gif", "tif", "tiff", "webp", "pbm", "pgm", "ppm", "pnm"];

/// Extensions of image formats this build does not read: such files are reported, not ignored.
pub const UNSUPPORTED_IMAGE_EXTENSIONS: &[&str] = &[
    "heic", "heif", "avif", "jxl", "jp2", "j2k", "svg", "psd", "xcf", "cr2", "nef", "arw", "dng",
    "raw", "exr", "hdr", "ico", "tga", "dds", "qoi",
];

/// Names formats that are recognisable from their first bytes but not decodable here.
fn sniff_foreign(head: &[u8]) -> Option<&'static str> {
    let starts = |m: &[u8]| head.starts_with(m);
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return Some(match &head[8..12] {
            b"avif" | b"avis" => "AVIF",
            b"heic" | b"heix" | b"mif1" | b"msf1" | b"hevc" => "HEIF/HEIC",
            _ => "an ISO media file (HEIF, AVIF or video)",
        });
    }
    if starts(b"8BPS") {
        Some("Photoshop PSD")
    } else if starts(&[0xFF, 0x0A]) || starts(b"\0\0\0\x0cJXL ") {
        Some("JPEG XL")
    } else if starts(b"\0\0\0\x0cjP  ") || starts(&[0xFF, 0x4F, 0xFF, 0x51]) {
        Some("JPEG 2000")
    } else if starts(b"<svg") || starts(b"<?xml") {
        Some("SVG or XML (vector, not raster)")
    } else if starts(b"gimp xcf") {
        Some("GIMP XCF")
    } else if starts(b"%PDF") {
        Some("PDF")
    } else {
        None
    }
}

fn classify(err: ImageError) -> SkipReason {
    match err {
        ImageError::Unsupported(e) => SkipReason::Unsupported(e.to_string()),
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            SkipReason::Corrupt("file ends early".into())
        }
        ImageError::IoError(e) => SkipReason::Unreadable(e.to_string()),
        ImageError::Limits(e) => SkipReason::Corrupt(format!("beyond decoder limits: {e}")),
        other => SkipReason::Corrupt(other.to_string()),
    }
}

/// The format of a file from its first bytes, with a friendly reason for foreign and
/// unrecognised content: a name's extension proves nothing.
fn sniff(head: &[u8]) -> Result<ImageFormat, SkipReason> {
    if let Some(name) = sniff_foreign(head) {
        return Err(SkipReason::Unsupported(name.into()));
    }
    image::guess_format(head).map_err(|_| {
        SkipReason::Unsupported("the content is not in any image format this build reads".into())
    })
}

/// Opens `path` for a header read, its format taken from its content.
fn open(path: &Path) -> Result<ImageReader<BufReader<std::fs::File>>, SkipReason> {
    let meta = std::fs::metadata(path).map_err(|e| SkipReason::Unreadable(e.to_string()))?;
    if meta.len() == 0 {
        return Err(SkipReason::ZeroBytes);
    }
    let mut head = [0u8; 32];
    let n = std::fs::File::open(path)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .map_err(|e| SkipReason::Unreadable(e.to_string()))?;
    let format = sniff(&head[..n])?;
    let mut reader = ImageReader::open(path).map_err(|e| SkipReason::Unreadable(e.to_string()))?;
    reader.set_format(format);
    Ok(reader)
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The most pixels [`decode`] decodes (16384 × 16384, a 268-megapixel image: 1 GB as 8-bit
/// RGBA); larger headers are refused as [`SkipReason::TooLarge`] before any allocation.
pub const MAX_PIXELS: u64 = 1 << 28;

/// [`SkipReason::TooLarge`] for a header declaring more than [`MAX_PIXELS`].
fn within_limit(width: u32, height: u32) -> Result<(), SkipReason> {
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(SkipReason::TooLarge { width, height });
    }
    Ok(())
}

/// The image's width and height, from its header only.
/// Headers declaring more than [`MAX_PIXELS`] are refused as [`SkipReason::TooLarge`], as
/// [`decode`] would refuse them.
pub fn probe(path: &Path) -> Result<(u32, u32), SkipReason> {
    let (width, height) = open(path)?.into_dimensions().map_err(classify)?;
    within_limit(width, height)?;
    Ok((width, height))
}

/// A baseline or progressive JPEG's entropy-coded data cannot contain the bytes FF D9 (EOI):
/// a file with no EOI after its last start-of-scan was cut short. The `image` crate's JPEG
/// decoder fills the missing blocks silently, so this check is ours.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(p) => bytes[p..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// The number of colour components in a JPEG's start-of-frame header (4 for CMYK/YCCK).
fn jpeg_components(bytes: &[u8]) -> Option<u8> {
    let mut i = 2; // after SOI
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return None;
        }
        let marker = bytes[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        // SOF0–SOF15, except DHT (C4), JPG (C8) and DAC (CC).
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            return bytes.get(i + 9).copied();
        }
        if marker == 0xDA {
            return None;
        }
        i += 2 + len;
    }
    None
}

/// Decodes `path` fully. Returns the image (in its stored sample type) and the conversions that
/// serving it as `mode` in [0, 1] implies.
pub fn decode(path: &Path, mode: ColorMode) -> Result<(DynamicImage, Vec<Conversion>), SkipReason> {
    // One read: the format, the JPEG checks and the decoder all use these bytes.
    let bytes = std::fs::read(path).map_err(|e| SkipReason::Unreadable(e.to_string()))?;
    decode_bytes(&bytes, mode)
}

/// The image file at `path` as one `[1, C, H, W]` f32 tensor in [0, 1] on the CPU (C = 3 for
/// [`ColorMode::Rgb`], 1 for [`ColorMode::Gray`]), decoded as [`decode`] decodes it: the one
/// call to read an image for a comparator, a metric or a loss.
///
/// # Errors
/// [`crate::Error::BadImage`] naming the file and why it cannot be used (missing, a folder,
/// an unsupported format, corrupt or cut short, beyond [`MAX_PIXELS`]).
pub fn load_image(path: &Path, mode: ColorMode) -> crate::Result<candle::Tensor> {
    let (image, _) = decode(path, mode)
        .map_err(|reason| crate::Error::BadImage { path: path.to_path_buf(), reason })?;
    let (w, h) = (image.width() as usize, image.height() as usize);
    let chw = crate::transform::to_chw(&image, mode);
    Ok(candle::Tensor::from_vec(chw, (1, mode.channels(), h, w), &candle::Device::Cpu)?)
}

/// [`decode`] on a file's bytes, already in memory. Any input gives an image or a
/// [`SkipReason`]: never a panic, and never an allocation beyond [`MAX_PIXELS`]' worth.
pub fn decode_bytes(
    bytes: &[u8],
    mode: ColorMode,
) -> Result<(DynamicImage, Vec<Conversion>), SkipReason> {
    if bytes.is_empty() {
        return Err(SkipReason::ZeroBytes);
    }
    let format = sniff(&bytes[..bytes.len().min(32)])?;
    let mut cmyk = false;
    if format == ImageFormat::Jpeg {
        if !jpeg_is_complete(bytes) {
            return Err(SkipReason::Corrupt(
                "JPEG data ends before its end-of-image marker".into(),
            ));
        }
        // The JPEG decoder reports the converted type; the frame header tells CMYK apart.
        cmyk = jpeg_components(bytes) == Some(4);
    }
    let decoder =
        ImageReader::with_format(Cursor::new(bytes), format).into_decoder().map_err(classify)?;
    // The header is read; nothing is allocated for the pixels yet. A few bytes can declare
    // 100000×100000 pixels, and allocating that aborts the process: refuse it here.
    let (width, height) = decoder.dimensions();
    within_limit(width, height)?;
    cmyk |= matches!(
        decoder.original_color_type(),
        ExtendedColorType::Cmyk8 | ExtendedColorType::Cmyk16
    );
    let image = DynamicImage::from_decoder(decoder).map_err(classify)?;
    let mut conversions = Vec::new();
    if cmyk {
        conversions.push(Conversion::CmykToRgb);
    }
    let color = image.color();
    if color.has_alpha() {
        conversions.push(Conversion::AlphaDropped);
    }
    match (mode, color.has_color()) {
        (ColorMode::Rgb, false) => conversions.push(Conversion::GrayToRgb),
        (ColorMode::Gray, true) => conversions.push(Conversion::RgbToGray),
        _ => {}
    }
    match color.bytes_per_pixel() / color.channel_count() {
        2 => conversions.push(Conversion::SixteenBit),
        4 => conversions.push(Conversion::FloatClamped),
        _ => {}
    }
    Ok((image, conversions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_completeness() {
        // SOI, SOS, data, EOI.
        let whole = [0xFF, 0xD8, 0xFF, 0xDA, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD9];
        assert!(jpeg_is_complete(&whole));
        assert!(!jpeg_is_complete(&whole[..8]));
        // An EOI before the last scan (an EXIF thumbnail's) does not count.
        let thumb = [0xFF, 0xD8, 0xFF, 0xD9, 0xFF, 0xDA, 0x12, 0x34];
        assert!(!jpeg_is_complete(&thumb));
        assert!(!jpeg_is_complete(&[0xFF, 0xD8]));
    }

    #[test]
    fn foreign_formats_are_named() {
        assert_eq!(sniff_foreign(b"\0\0\0\x18ftypheic\0\0"), Some("HEIF/HEIC"));
        assert_eq!(sniff_foreign(b"\0\0\0\x1cftypavif\0\0"), Some("AVIF"));
        assert_eq!(sniff_foreign(b"8BPS\0\x01"), Some("Photoshop PSD"));
        assert_eq!(sniff_foreign(b"\x89PNG\r\n\x1a\n"), None);
    }
}
