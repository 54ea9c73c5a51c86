//! The PNG canvas: plotters' bitmap backend with text drawn by us.
//!
//! plotters 0.3.7 rasterises `ab_glyph` text at whole-pixel pen positions
//! and drops each glyph's left side bearing, so letters sit unevenly
//! ("scenar ios"). This wrapper hands every shape to `BitMapBackend` and
//! draws text itself with the same embedded font and the same layout box
//! (so anchors, label areas and legends line up exactly as measured),
//! placing each glyph at its sub-pixel pen position with kerning.

use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use plotters::prelude::BitMapBackend;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind, FontStyle,
};

/// Where the baseline sits in plotters' text box, as a share of the box
/// height (the box is `size / 1.24` high). 0.76 is what plotters' SVG
/// backend uses (`dy="0.76em"` for top-anchored text), so PNG and SVG
/// place text alike.
const BASELINE_IN_BOX: f32 = 0.76;

struct Faces {
    regular: FontRef<'static>,
    bold: FontRef<'static>,
}

fn faces() -> Result<&'static Faces, String> {
    static FACES: OnceLock<Result<Faces, String>> = OnceLock::new();
    FACES
        .get_or_init(|| {
            let parse = |bytes: &'static [u8], name: &str| {
                FontRef::try_from_slice(bytes).map_err(|e| format!("the embedded {name} font does not parse: {e}"))
            };
            Ok(Faces {
                regular: parse(ttf_noto_sans::REGULAR, "Noto Sans Regular")?,
                bold: parse(ttf_noto_sans::BOLD, "Noto Sans Bold")?,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn font_error<E>(message: impl Into<String>) -> DrawingErrorKind<E>
where
    E: std::error::Error + Send + Sync,
{
    DrawingErrorKind::FontError(message.into().into())
}

pub(crate) struct PngCanvas<'a> {
    inner: BitMapBackend<'a>,
}

impl<'a> PngCanvas<'a> {
    pub(crate) fn new(inner: BitMapBackend<'a>) -> Self {
        PngCanvas { inner }
    }
}

type BitmapError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

impl DrawingBackend for PngCanvas<'_> {
    type ErrorType = BitmapError;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        (iw, ih): (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.blit_bitmap(pos, (iw, ih), src)
    }

    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        let color = style.color();
        if color.alpha == 0.0 || text.is_empty() {
            return Ok(());
        }
        let faces = faces().map_err(font_error)?;
        let font = match style.style() {
            FontStyle::Bold => &faces.bold,
            _ => &faces.regular,
        };
        // The same box plotters measured when it laid the text out.
        let ((min_x, min_y), (max_x, max_y)) =
            style.layout_box(text).map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let (width, height) = (max_x - min_x, max_y - min_y);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let transform = style.transform();
        let (w, h) = self.inner.get_size();
        let scaled = font.as_scaled(PxScale::from(style.size() as f32));
        let baseline = BASELINE_IN_BOX * height as f32;

        let mut pen = 0.0f32;
        let mut previous = None;
        let mut result = Ok(());
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = previous {
                pen += scaled.kern(p, id);
            }
            let glyph = id.with_scale_and_position(scaled.scale(), point(pen, baseline));
            if let Some(outline) = font.outline_glyph(glyph) {
                let bounds = outline.px_bounds();
                let (left, top) = (bounds.min.x as i32, bounds.min.y as i32);
                let inner = &mut self.inner;
                outline.draw(|gx, gy, coverage| {
                    let coverage = coverage.clamp(0.0, 1.0);
                    if result.is_err() || coverage < 1.0 / 255.0 {
                        return;
                    }
                    let (tx, ty) = transform.transform(left + gx as i32 + dx, top + gy as i32 + dy);
                    let (x, y) = (pos.0 + tx, pos.1 + ty);
                    if x >= 0 && y >= 0 && (x as u32) < w && (y as u32) < h {
                        let ink = BackendColor { alpha: color.alpha * f64::from(coverage), rgb: color.rgb };
                        result = inner.draw_pixel((x, y), ink);
                    }
                });
                std::mem::replace(&mut result, Ok(()))?;
            }
            pen += scaled.h_advance(id);
            previous = Some(id);
        }
        Ok(())
    }
}
