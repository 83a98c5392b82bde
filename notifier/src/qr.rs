//! A ticket's QR as a PNG, for email (mail clients show PNG inline; few show SVG):
//! drawn by `qrcode`, encoded by `png`.

use qrcode::{Color, EcLevel, QrCode};

/// Pixels per QR module.
const SCALE: usize = 6;
/// Modules of white around the code (the QR standard asks for four).
const QUIET: usize = 4;

/// The QR of `code`: 8-bit greyscale, black on white, with its quiet zone.
pub fn png(code: &str) -> Result<Vec<u8>, String> {
    let qr = QrCode::with_error_correction_level(code.as_bytes(), EcLevel::M)
        .map_err(|e| format!("{e}"))?;
    let width = qr.width();
    let colors = qr.to_colors();
    let side = (width + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color == Color::Dark {
            let (mx, my) = (i % width + QUIET, i / width + QUIET);
            for y in my * SCALE..(my + 1) * SCALE {
                pixels[y * side + mx * SCALE..y * side + (mx + 1) * SCALE].fill(0);
            }
        }
    }
    let mut out = Vec::new();
    let side = u32::try_from(side).map_err(|e| e.to_string())?;
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_drawn_qr_reads_back_as_its_code() {
        let code = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJ0aWQiOiIwMTkzIn0.c2lnbmF0dXJl";
        let png = super::png(code).expect("draws");
        assert_eq!(&png[1..4], b"PNG");
        assert_eq!(testkit::qr::decode_png(&png).as_deref(), Ok(code));
    }
}
