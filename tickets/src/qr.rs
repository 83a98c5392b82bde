//! A ticket's QR, drawn by the `qrcode` crate as SVG.

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// The QR of `code` as an SVG document: medium error correction (a scuffed phone
/// screen still scans), a quiet zone, black on white whatever the page's colours.
pub fn svg(code: &str) -> Result<String, qrcode::types::QrError> {
    let qr = QrCode::with_error_correction_level(code.as_bytes(), EcLevel::M)?;
    Ok(qr
        .render::<svg::Color<'_>>()
        .min_dimensions(320, 320)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The drawn QR decodes (with `rqrr`, an independent decoder) to the code.
    #[test]
    fn the_qr_decodes_to_the_code() {
        let code = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJ0aWQiOiIwMTkzIn0.c2lnbmF0dXJl";
        let qr = QrCode::with_error_correction_level(code.as_bytes(), EcLevel::M).expect("fits");
        let width = qr.width();
        let colors = qr.to_colors();
        // Rasterize at 4 px a module with a 4-module quiet zone.
        let (scale, quiet) = (4, 4);
        let side = (width + 2 * quiet) * scale;
        let mut image = rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| {
            let (mx, my) = (x / scale, y / scale);
            if mx < quiet || my < quiet || mx >= width + quiet || my >= width + quiet {
                return 255;
            }
            match colors[(my - quiet) * width + (mx - quiet)] {
                qrcode::Color::Dark => 0,
                qrcode::Color::Light => 255,
            }
        });
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, decoded) = grids[0].decode().expect("decodes");
        assert_eq!(decoded, code);
        assert!(svg(code).expect("draws").starts_with("<?xml"));
    }
}
