//! A document's PDF, drawn with krilla from its snapshot in the fonts kept in the
//! repository (DejaVu Sans; `billing/fonts`), so it renders the same everywhere and
//! its text can be read back by any PDF reader. A4, amounts right-aligned, as many
//! pages as its lines need.

use std::sync::{Arc, OnceLock};

use krilla::Document as Pdf;
use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Rect};
use krilla::metadata::Metadata;
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::Fill;
use krilla::surface::Surface;
use krilla::text::{Font, TextDirection};

use crate::documents::{Content, Kind};
use crate::{BillingError, format_cents};

static REGULAR: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
static BOLD: &[u8] = include_bytes!("../fonts/DejaVuSans-Bold.ttf");

const WIDTH: f32 = 595.0;
const HEIGHT: f32 = 842.0;
const MARGIN: f32 = 56.0;
const LINES_PER_PAGE: usize = 28;

struct Fonts {
    regular: Font,
    bold: Font,
}

fn fonts() -> &'static Fonts {
    static FONTS: OnceLock<Fonts> = OnceLock::new();
    FONTS.get_or_init(|| Fonts {
        regular: Font::new(Arc::new(REGULAR.to_vec()).into(), 0).expect("the kept regular font"),
        bold: Font::new(Arc::new(BOLD.to_vec()).into(), 0).expect("the kept bold font"),
    })
}

/// How wide `text` is at `size` in DejaVu Sans: exact for the characters amounts
/// use (digits, `.`, `-`), a fair average for others. Enough to right-align.
fn width(text: &str, size: f32, bold: bool) -> f32 {
    let units: u32 = text
        .chars()
        .map(|c| match (c, bold) {
            ('0'..='9', false) => 1303,
            ('0'..='9', true) => 1425,
            ('.' | ',' | ' ', false) => 651,
            ('.' | ',' | ' ', true) => 780,
            ('-', false) => 739,
            ('-', true) => 850,
            (_, false) => 1240,
            (_, true) => 1380,
        })
        .sum();
    units as f32 / 2048.0 * size
}

struct Pen<'a, 'b> {
    surface: &'a mut Surface<'b>,
}

impl Pen<'_, '_> {
    fn text(&mut self, x: f32, y: f32, size: f32, bold: bool, text: &str) {
        let fonts = fonts();
        let font = if bold { &fonts.bold } else { &fonts.regular };
        self.surface.draw_text(
            Point::from_xy(x, y),
            font.clone(),
            size,
            text,
            false,
            TextDirection::Auto,
        );
    }

    fn right(&mut self, right_edge: f32, y: f32, size: f32, bold: bool, text: &str) {
        let x = right_edge - width(text, size, bold);
        self.text(x, y, size, bold, text);
    }

    fn rule(&mut self, y: f32) {
        let mut path = PathBuilder::new();
        if let Some(rect) = Rect::from_xywh(MARGIN, y, WIDTH - 2.0 * MARGIN, 0.6) {
            path.push_rect(rect);
        }
        if let Some(path) = path.finish() {
            self.surface.set_fill(Some(Fill {
                paint: rgb::Color::new(90, 90, 90).into(),
                opacity: NormalizedF32::ONE,
                rule: Default::default(),
            }));
            self.surface.draw_path(&path);
            self.surface.set_fill(Some(Fill::default()));
        }
    }
}

fn party_lines(party: &crate::Party, fallback: Option<&str>) -> Vec<String> {
    let mut lines = Vec::new();
    match (&party.name, fallback) {
        (Some(name), _) => lines.push(name.clone()),
        (None, Some(email)) => lines.push(email.to_owned()),
        (None, None) => {}
    }
    if let Some(address) = &party.address {
        lines.extend(
            address
                .split(['\n', ','])
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    if let Some(vat) = &party.vat_id {
        lines.push(format!("VAT ID {vat}"));
    }
    lines
}

fn rate(bp: i32) -> String {
    if bp % 100 == 0 {
        format!("{} %", bp / 100)
    } else {
        let decimals = format!("{:02}", bp % 100);
        format!("{}.{} %", bp / 100, decimals.trim_end_matches('0'))
    }
}

/// The document's PDF.
pub fn render(content: &Content) -> Result<Vec<u8>, BillingError> {
    let mut pdf = Pdf::new();
    pdf.set_metadata(
        Metadata::new()
            .title(format!("{} {}", content.kind.title(), content.number))
            .creator("onsale".into()),
    );
    let pages: Vec<_> = if content.lines.is_empty() {
        vec![&content.lines[..]]
    } else {
        content.lines.chunks(LINES_PER_PAGE).collect()
    };
    let page_count = pages.len();
    let settings = PageSettings::from_wh(WIDTH, HEIGHT)
        .ok_or_else(|| BillingError::Render("page size".into()))?;
    let columns = [
        WIDTH - MARGIN - 170.0,
        WIDTH - MARGIN - 85.0,
        WIDTH - MARGIN,
    ];
    for (index, lines) in pages.into_iter().enumerate() {
        let mut page = pdf.start_page_with(settings.clone());
        let mut surface = page.surface();
        let mut pen = Pen {
            surface: &mut surface,
        };
        let mut y = MARGIN + 10.0;
        pen.text(MARGIN, y, 22.0, true, content.kind.title());
        pen.right(WIDTH - MARGIN, y, 12.0, true, &content.number);
        y += 22.0;
        let issued = content.issued_at.format("%Y-%m-%d").to_string();
        pen.right(WIDTH - MARGIN, y, 9.0, false, &format!("Issued {issued}"));
        if let Some(invoice) = &content.refers_to {
            y += 12.0;
            pen.right(
                WIDTH - MARGIN,
                y,
                9.0,
                false,
                &format!("Refers to invoice {invoice}"),
            );
        }
        y += 12.0;
        pen.right(
            WIDTH - MARGIN,
            y,
            8.0,
            false,
            &format!("Order {}", content.order_id),
        );
        if index == 0 {
            y += 30.0;
            pen.text(MARGIN, y, 8.0, true, "FROM");
            pen.text(WIDTH / 2.0, y, 8.0, true, "TO");
            let seller = party_lines(&content.seller, None);
            let buyer = party_lines(&content.buyer, content.fan_email.as_deref());
            for (i, line) in seller.iter().enumerate() {
                pen.text(MARGIN, y + 14.0 + 12.0 * i as f32, 9.5, i == 0, line);
            }
            for (i, line) in buyer.iter().enumerate() {
                pen.text(WIDTH / 2.0, y + 14.0 + 12.0 * i as f32, 9.5, i == 0, line);
            }
            y += 14.0 + 12.0 * seller.len().max(buyer.len()) as f32 + 18.0;
            pen.text(MARGIN, y, 10.0, true, &content.event.name);
            y += 13.0;
            let starts = content.event.starts_at.format("%A %-d %B %Y, %H:%M UTC");
            pen.text(MARGIN, y, 9.0, false, &format!("Event on {starts}"));
            if let Some(reason) = &content.reason {
                y += 13.0;
                pen.text(MARGIN, y, 9.0, false, &format!("Reason: {reason}"));
            }
        }
        y += 26.0;
        pen.text(MARGIN, y, 8.5, true, "Description");
        let currency = &content.currency;
        pen.right(columns[0], y, 8.5, true, &format!("Net {currency}"));
        pen.right(columns[1], y, 8.5, true, &format!("Tax {currency}"));
        pen.right(columns[2], y, 8.5, true, &format!("Total {currency}"));
        y += 5.0;
        pen.rule(y);
        for line in lines {
            y += 15.0;
            pen.text(MARGIN, y, 9.5, false, &line.description);
            pen.right(columns[0], y, 9.5, false, &format_cents(line.net_cents));
            pen.right(columns[1], y, 9.5, false, &format_cents(line.tax_cents));
            pen.right(columns[2], y, 9.5, false, &format_cents(line.total_cents));
        }
        if index + 1 == page_count {
            y += 8.0;
            pen.rule(y);
            let tax = format!(
                "Tax {} ({})",
                rate(content.tax_rate_bp),
                if content.tax_included {
                    "included in the prices"
                } else {
                    "added to the prices"
                }
            );
            let totals = [
                ("Net".to_owned(), content.net_cents),
                (tax, content.tax_cents),
            ];
            for (label, cents) in totals {
                y += 15.0;
                pen.right(columns[1], y, 9.5, false, &label);
                pen.right(columns[2], y, 9.5, false, &format_cents(cents));
            }
            y += 18.0;
            let total = match content.kind {
                Kind::Invoice => "Total paid",
                Kind::CreditNote => "Total refunded",
            };
            pen.right(columns[1], y, 11.0, true, &format!("{total} {currency}"));
            pen.right(
                columns[2],
                y,
                11.0,
                true,
                &format_cents(content.total_cents),
            );
        }
        pen.text(
            MARGIN,
            HEIGHT - MARGIN + 20.0,
            8.0,
            false,
            &format!(
                "{} {} · page {} of {page_count}",
                content.kind.title(),
                content.number,
                index + 1
            ),
        );
        surface.finish();
        page.finish();
    }
    pdf.finish()
        .map_err(|e| BillingError::Render(format!("{e:?}")))
}
