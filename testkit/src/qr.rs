//! Reading a QR code back from a PNG, with `rqrr` (an independent decoder): for
//! tests that check an email's QR holds the ticket's code.

/// The text of the one QR code in `bytes` (8-bit greyscale or RGB(A) PNG).
pub fn decode_png(bytes: &[u8]) -> Result<String, String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).map_err(|e| e.to_string())?;
    if info.bit_depth != png::BitDepth::Eight {
        return Err(format!("not 8 bits a sample: {:?}", info.bit_depth));
    }
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
        // The first channel stands for the grey of a black-and-white code.
        pixels[(y * w + x) * channels]
    });
    let grids = image.detect_grids();
    let grid = grids.first().ok_or("no QR code in the image")?;
    grid.decode()
        .map(|(_, content)| content)
        .map_err(|e| e.to_string())
}
