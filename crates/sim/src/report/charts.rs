//! How a chart is drawn: one description (`Chart`), drawn the same way on
//! the SVG and the bitmap backend of plotters.
//!
//! Text (DESIGN §10): the SVG names the font family and leaves the glyphs
//! to the viewer; the bitmap draws them with the embedded Noto Sans,
//! registered with plotters' `ab_glyph` font table, so a PNG needs no
//! system font and no fontconfig. Text layout (legend flow, label sizes)
//! is measured with the embedded font for both backends, so the SVG and
//! the PNG have the same geometry.

use std::sync::OnceLock;

use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle, RGBColor};

use super::canvas::PngCanvas;
use super::stats::{BandPoint, Histogram};

/// The family every chart's text uses; the embedded font is registered
/// under it for the bitmap backend, and SVG viewers resolve it to their
/// own sans-serif face.
const FAMILY: &str = "sans-serif";

pub(crate) const TEXT: RGBColor = RGBColor(0x1f, 0x23, 0x28);
const MUTED: RGBColor = RGBColor(0x5f, 0x67, 0x70);
const AXIS: RGBColor = RGBColor(0x9a, 0xa1, 0xa9);
const GRID: RGBColor = RGBColor(0xe6, 0xe9, 0xed);
const BACKGROUND: RGBColor = RGBColor(0xff, 0xff, 0xff);

/// Matplotlib's "tab10": distinct, and readable on white.
pub(crate) const PALETTE: [RGBColor; crate::montecarlo::MAX_SWEEP_VALUES] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

pub(crate) fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Size of a single-plot chart and of a small-multiples chart, in pixels.
pub(crate) const SIZE: (u32, u32) = (1200, 680);
pub(crate) const GRID_SIZE: (u32, u32) = (1200, 860);

/// One line with its band.
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub color: RGBColor,
    pub dashed: bool,
    /// Draw the p10–p90 band (more than one run).
    pub banded: bool,
    pub points: Vec<BandPoint>,
}

/// One plot area of lines over days.
#[derive(Clone, Debug)]
pub(crate) struct Lines {
    pub y_label: String,
    pub series: Vec<Series>,
    /// Start the y axis at zero when the data are all positive.
    pub y_from_zero: bool,
    /// Never draw the axis above this (a share that cannot pass 100 %).
    pub y_ceiling: Option<f64>,
    /// Show at least down to this value (so a flat line at 100 % reads as
    /// "at the top", not as a line in the middle of a 99.9–100 axis).
    pub y_show_down_to: Option<f64>,
    pub y_ticks: Ticks,
    /// A logarithmic y axis (set only when every value is positive).
    pub y_log: bool,
}

/// How the y axis labels its ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ticks {
    /// "250k", "1.5M", "0.25".
    Number,
    /// "$0.25", "$1.5M".
    Usd,
    /// Values already in percent: "95%".
    Percent,
}

fn usd_tick(x: &f64) -> String {
    let sign = if *x < 0.0 { "-" } else { "" };
    format!("{sign}${}", super::human::compact(x.abs()))
}

fn percent_tick(x: &f64) -> String {
    format!("{}%", super::human::compact(*x))
}

#[derive(Clone, Debug)]
pub(crate) enum Body {
    Lines(Lines),
    /// Small multiples: one titled cell per entry, 2 rows.
    Grid(Vec<(String, Lines)>),
    Histogram {
        x_label: String,
        y_label: String,
        hist: Histogram,
        colors: Vec<RGBColor>,
    },
    /// Nothing to plot: the message, centred.
    Empty(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Swatch {
    Line,
    Dashed,
    /// The shaded p10–p90 band.
    Band,
    /// A filled histogram.
    Area,
}

#[derive(Clone, Debug)]
pub(crate) struct LegendEntry {
    pub label: String,
    pub color: RGBColor,
    pub swatch: Swatch,
}

/// Everything needed to draw one chart file pair.
#[derive(Clone, Debug)]
pub(crate) struct Chart {
    /// File name without extension: `price` → `price.png`, `price.svg`.
    pub stem: &'static str,
    pub title: String,
    pub subtitle: String,
    pub legend: Vec<LegendEntry>,
    pub body: Body,
    pub size: (u32, u32),
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Registers the embedded font with plotters once per process.
fn fonts_registered() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FAMILY, FontStyle::Normal, ttf_noto_sans::REGULAR)
                .map_err(|_| "the embedded Noto Sans Regular font does not parse".to_string())?;
            register_font(FAMILY, FontStyle::Bold, ttf_noto_sans::BOLD)
                .map_err(|_| "the embedded Noto Sans Bold font does not parse".to_string())
        })
        .clone()
}

/// The chart as an SVG document.
pub(crate) fn render_svg(chart: &Chart) -> Result<String, String> {
    fonts_registered()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, chart.size).into_drawing_area();
        draw(&root, chart)?;
        root.present().map_err(err)?;
    }
    Ok(svg.replace(&format!("font-family=\"{FAMILY}\""), SVG_FONT_FAMILY))
}

/// The chart as PNG bytes (8-bit RGB).
pub(crate) fn render_png(chart: &Chart) -> Result<Vec<u8>, String> {
    fonts_registered()?;
    let (w, h) = chart.size;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = PngCanvas::new(BitMapBackend::with_buffer(&mut rgb, (w, h))).into_drawing_area();
        draw(&root, chart)?;
        root.present().map_err(err)?;
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Balanced);
        let mut writer = encoder.write_header().map_err(err)?;
        writer.write_image_data(&rgb).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

fn font(size: f64) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&TEXT)
}

fn bold(size: f64) -> TextStyle<'static> {
    (FAMILY, size, FontStyle::Bold).into_font().color(&TEXT)
}

fn muted(size: f64) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&MUTED)
}

const PAD_X: i32 = 28;
/// How much wider than measured a legend label may come out in an SVG viewer.
const SVG_TEXT_SLACK: f64 = 1.2;

/// SVG text names fonts metrically close to the embedded Noto Sans first
/// (Open Sans is its parent design), then common fallbacks.
const SVG_FONT_FAMILY: &str =
    "font-family=\"'Noto Sans', 'Open Sans', Arial, 'Liberation Sans', Helvetica, sans-serif\"";
const LEGEND_TOP: i32 = 88;
const LEGEND_ROW: i32 = 28;
const SWATCH_W: i32 = 30;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart) -> Result<(), String> {
    root.fill(&BACKGROUND).map_err(err)?;
    let (width, _) = root.dim_in_pixel();
    root.draw_text(&chart.title, &bold(28.0), (PAD_X, 18)).map_err(err)?;
    root.draw_text(&chart.subtitle, &muted(17.0), (PAD_X, 56)).map_err(err)?;
    let legend_rows = draw_legend(root, &chart.legend, width as i32 - 2 * PAD_X)?;
    let header = LEGEND_TOP + legend_rows * LEGEND_ROW + 8;
    let (_, body) = root.split_vertically(header);
    match &chart.body {
        Body::Lines(lines) => draw_lines(&body, lines, &AxisLook::FULL, None, true),
        Body::Grid(cells) => {
            let areas = body.margin(0, 4, 8, 8).split_evenly((2, cells.len().div_ceil(2).max(1)));
            let columns = cells.len().div_ceil(2).max(1);
            for (i, ((caption, lines), area)) in cells.iter().zip(areas.iter()).enumerate() {
                let bottom_row = i >= columns;
                draw_lines(area, lines, &AxisLook::SMALL, Some(caption), bottom_row)?;
            }
            Ok(())
        }
        Body::Histogram { x_label, y_label, hist, colors } => draw_histogram(&body, x_label, y_label, hist, colors),
        Body::Empty(message) => {
            let (w, h) = body.dim_in_pixel();
            let style = muted(20.0).pos(Pos::new(HPos::Center, VPos::Center));
            body.draw_text(message, &style, (w as i32 / 2, h as i32 / 2)).map_err(err)
        }
    }
}

/// Lays the legend out in rows below the subtitle; returns the rows used.
fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    max_width: i32,
) -> Result<i32, String> {
    if entries.is_empty() {
        return Ok(0);
    }
    let style = font(17.0);
    let mut x = PAD_X;
    let mut row = 0;
    for entry in entries {
        let (text_w, _) = root.estimate_text_size(&entry.label, &style).map_err(err)?;
        // Measured with the embedded font; an SVG viewer may substitute a
        // wider one (DejaVu Sans runs about 20% wider), so leave room.
        let w = SWATCH_W + 8 + (f64::from(text_w) * SVG_TEXT_SLACK).ceil() as i32;
        if x > PAD_X && x + w > PAD_X + max_width {
            row += 1;
            x = PAD_X;
        }
        let y = LEGEND_TOP + row * LEGEND_ROW;
        // The middle of the lower-case letters (baseline at 0.76 of the
        // text box, x-height about half the box).
        let mid = y + 7;
        let c = entry.color;
        match entry.swatch {
            Swatch::Line => {
                root.draw(&PathElement::new(vec![(x, mid), (x + SWATCH_W, mid)], c.stroke_width(3))).map_err(err)?;
            }
            Swatch::Dashed => {
                for k in 0..3 {
                    let x0 = x + k * 12;
                    root.draw(&PathElement::new(vec![(x0, mid), (x0 + 7, mid)], c.stroke_width(3))).map_err(err)?;
                }
            }
            Swatch::Band => {
                root.draw(&Rectangle::new([(x, mid - 8), (x + SWATCH_W, mid + 8)], c.mix(0.22).filled()))
                    .map_err(err)?;
                root.draw(&PathElement::new(vec![(x, mid), (x + SWATCH_W, mid)], c.stroke_width(2))).map_err(err)?;
            }
            Swatch::Area => {
                root.draw(&Rectangle::new([(x, mid - 8), (x + SWATCH_W, mid + 8)], c.mix(0.3).filled()))
                    .map_err(err)?;
                root.draw(&Rectangle::new([(x, mid - 8), (x + SWATCH_W, mid + 8)], c.stroke_width(2))).map_err(err)?;
            }
        }
        root.draw_text(&entry.label, &style, (x + SWATCH_W + 8, y)).map_err(err)?;
        x += w + 20;
    }
    Ok(row + 1)
}

/// Font sizes and tick counts for a full chart and for a small multiple.
struct AxisLook {
    label: f64,
    desc: f64,
    caption: f64,
    x_labels: usize,
    y_labels: usize,
    x_area: u32,
    y_area: u32,
}

impl AxisLook {
    const FULL: AxisLook =
        AxisLook { label: 16.0, desc: 18.0, caption: 18.0, x_labels: 10, y_labels: 8, x_area: 58, y_area: 96 };
    const SMALL: AxisLook =
        AxisLook { label: 14.0, desc: 15.0, caption: 17.0, x_labels: 4, y_labels: 5, x_area: 48, y_area: 62 };
}

fn x_range(series: &[Series]) -> (f64, f64) {
    let days = series.iter().flat_map(|s| s.points.iter().map(|p| p.day)).filter(|d| d.is_finite());
    let (lo, hi) = days.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), d| (lo.min(d), hi.max(d)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= 0.0 {
        (lo, lo + 1.0)
    } else {
        (lo.min(0.0), hi)
    }
}

fn y_range(lines: &Lines) -> (f64, f64) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for s in &lines.series {
        for p in &s.points {
            let (a, b) = if s.banded { (p.p10, p.p90) } else { (p.p50, p.p50) };
            for v in [a, b, p.p50] {
                if v.is_finite() {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
        }
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if let Some(floor) = lines.y_show_down_to {
        lo = lo.min(floor);
    }
    if lines.y_from_zero && lo >= 0.0 {
        lo = 0.0;
    }
    let mut span = hi - lo;
    if span <= 0.0 {
        // A flat line: give it some room (a unit if it sits at zero).
        span = if hi != 0.0 { hi.abs() * 0.1 } else { 1.0 };
    }
    let mut bottom = if lines.y_from_zero && lo >= 0.0 { 0.0 } else { lo - 0.04 * span };
    let mut top = hi + 0.06 * span;
    if let Some(ceiling) = lines.y_ceiling {
        if hi <= ceiling {
            top = top.min(ceiling);
        }
    }
    if top <= bottom {
        top = bottom + 1.0;
        if lines.y_from_zero {
            bottom = bottom.min(0.0);
        }
    }
    (bottom, top)
}

fn day_label(x: &f64) -> String {
    super::human::compact(*x)
}

fn value_label(y: &f64) -> String {
    super::human::compact(*y)
}

fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    lines: &Lines,
    look: &AxisLook,
    caption: Option<&str>,
    with_x_desc: bool,
) -> Result<(), String> {
    let (x0, x1) = x_range(&lines.series);
    match log_range(lines) {
        Some((y0, y1)) => plot_lines(area, lines, look, caption, with_x_desc, x0..x1, (y0..y1).log_scale()),
        None => {
            let (y0, y1) = y_range(lines);
            plot_lines(area, lines, look, caption, with_x_desc, x0..x1, y0..y1)
        }
    }
}

/// The y range on a log axis, when the chart asked for one and every
/// value can go on it.
fn log_range(lines: &Lines) -> Option<(f64, f64)> {
    if !lines.y_log {
        return None;
    }
    let (lo, hi) = positive_extent(&lines.series)?;
    // Pad by 4% of the decades shown on either side.
    let pad = libm::pow(hi / lo, 0.04);
    Some((lo / pad, hi * pad))
}

/// The smallest and largest value drawn, if all are finite and positive.
pub(crate) fn positive_extent(series: &[Series]) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for s in series {
        for p in &s.points {
            let values = if s.banded { [p.p10, p.p50, p.p90] } else { [p.p50; 3] };
            for v in values {
                if !(v.is_finite() && v > 0.0) {
                    return None;
                }
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    (lo.is_finite() && hi > lo).then_some((lo, hi))
}

fn plot_lines<DB, Y>(
    area: &DrawingArea<DB, Shift>,
    lines: &Lines,
    look: &AxisLook,
    caption: Option<&str>,
    with_x_desc: bool,
    x: std::ops::Range<f64>,
    y: Y,
) -> Result<(), String>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut builder = ChartBuilder::on(area);
    builder.margin_top(8).margin_right(30).margin_left(8).margin_bottom(6);
    builder.x_label_area_size(look.x_area).y_label_area_size(look.y_area);
    if let Some(c) = caption {
        builder.caption(c, bold(look.caption));
    }
    let mut chart = builder.build_cartesian_2d(x, y).map_err(err)?;
    {
        let mut mesh = chart.configure_mesh();
        mesh.x_labels(look.x_labels)
            .y_labels(look.y_labels)
            .max_light_lines(0)
            .bold_line_style(GRID.stroke_width(1))
            .axis_style(AXIS.stroke_width(1))
            .x_label_formatter(&day_label)
            .y_label_formatter(match lines.y_ticks {
                Ticks::Number => &value_label,
                Ticks::Usd => &usd_tick,
                Ticks::Percent => &percent_tick,
            })
            .label_style(font(look.label))
            .axis_desc_style(font(look.desc));
        if with_x_desc {
            mesh.x_desc("day");
        }
        let y_desc = if lines.y_log { format!("{} (log scale)", lines.y_label) } else { lines.y_label.clone() };
        if caption.is_none() {
            mesh.y_desc(y_desc);
        }
        mesh.draw().map_err(err)?;
    }
    for s in lines.series.iter().filter(|s| s.banded && s.points.len() > 1) {
        let mut outline: Vec<(f64, f64)> = s.points.iter().map(|p| (p.day, p.p90)).collect();
        outline.extend(s.points.iter().rev().map(|p| (p.day, p.p10)));
        let alpha = if lines.series.len() > 4 { 0.12 } else { 0.2 };
        chart.draw_series(std::iter::once(Polygon::new(outline, s.color.mix(alpha).filled()))).map_err(err)?;
    }
    let medians: Vec<Vec<(f64, f64)>> =
        lines.series.iter().map(|s| s.points.iter().map(|p| (p.day, p.p50)).collect()).collect();
    // Lines closer than a thousandth of the values' span (on a log axis,
    // of the values themselves) draw as one: the designs that mint alike
    // differ in their sixth significant digit.
    let (lo, hi) = (medians.iter().flatten().map(|&(_, y)| y).filter(|y| y.is_finite()))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let span = (hi - lo).max(0.0);
    let close = |a: f64, b: f64| {
        let scale = if lines.y_log { a.abs().max(b.abs()) } else { span };
        (a - b).abs() <= 1e-3 * scale
    };
    let look_alike = |a: &[(f64, f64)], b: &[(f64, f64)]| {
        a.len() == b.len() && a.iter().zip(b).all(|(&(da, ya), &(db, yb))| da == db && close(ya, yb))
    };
    // Designs that give the same line (four that mint alike) were drawn
    // over each other, the last one's colour alone showing beside a legend
    // of four: each is drawn wider by the lines still to come over it, so
    // every colour shows as a stripe.
    let same_later: Vec<u32> = (lines.series.iter().zip(&medians).enumerate())
        .map(|(i, (s, points))| {
            (lines.series.iter().zip(&medians).skip(i + 1))
                .filter(|(later, later_points)| later.dashed == s.dashed && look_alike(later_points, points))
                .count() as u32
        })
        .collect();
    for ((s, points), same_later) in lines.series.iter().zip(medians).zip(same_later) {
        let style = s.color.stroke_width(2 + 4 * same_later);
        if s.dashed {
            chart.draw_series(DashedLineSeries::new(points, 9, 6, style)).map_err(err)?;
        } else {
            chart.draw_series(LineSeries::new(points, style)).map_err(err)?;
        }
    }
    Ok(())
}

fn draw_histogram<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    x_label: &str,
    y_label: &str,
    hist: &Histogram,
    colors: &[RGBColor],
) -> Result<(), String> {
    let look = AxisLook::FULL;
    let x0 = hist.edges.first().copied().unwrap_or(0.0);
    let x1 = hist.edges.last().copied().unwrap_or(1.0);
    let top = hist.shares.iter().flatten().copied().fold(0.0, f64::max) * 100.0;
    let y1 = if top > 0.0 { top * 1.08 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .margin_top(8)
        .margin_right(30)
        .margin_left(8)
        .margin_bottom(6)
        .x_label_area_size(look.x_area)
        .y_label_area_size(look.y_area)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(look.x_labels)
        .y_labels(look.y_labels)
        .max_light_lines(0)
        .bold_line_style(GRID.stroke_width(1))
        .axis_style(AXIS.stroke_width(1))
        .x_label_formatter(&usd_tick)
        .y_label_formatter(&percent_tick)
        .label_style(font(look.label))
        .axis_desc_style(font(look.desc))
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(err)?;
    let overlaid = hist.shares.len() > 1;
    for (shares, &color) in hist.shares.iter().zip(colors) {
        let mut step = Vec::with_capacity(shares.len() * 2 + 2);
        step.push((x0, 0.0));
        for (i, share) in shares.iter().enumerate() {
            step.push((hist.edges[i], share * 100.0));
            step.push((hist.edges[i + 1], share * 100.0));
        }
        step.push((x1, 0.0));
        let alpha = if overlaid { 0.10 } else { 0.3 };
        chart.draw_series(std::iter::once(Polygon::new(step.clone(), color.mix(alpha).filled()))).map_err(err)?;
        chart.draw_series(LineSeries::new(step, color.stroke_width(2))).map_err(err)?;
    }
    if x0 < 0.0 && x1 > 0.0 {
        chart
            .draw_series(DashedLineSeries::new(vec![(0.0, 0.0), (0.0, y1)], 8, 6, TEXT.stroke_width(2)))
            .map_err(err)?;
        let (px, py) = chart.backend_coord(&(0.0, y1));
        area.draw_text("break-even", &font(16.0), (px - area.get_base_pixel().0 + 8, py - area.get_base_pixel().1 + 6))
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two designs that mint alike were one line, the second's colour, beside
    /// a legend of two: the first is now drawn wider, under the second, so
    /// both colours show. A line of its own keeps the usual width.
    #[test]
    fn identical_lines_are_drawn_as_stripes_so_every_colour_shows() {
        let line = |color: RGBColor, scale: f64| Series {
            color,
            dashed: false,
            banded: false,
            points: (0..5).map(|d| BandPoint { day: f64::from(d), p10: 0.0, p50: scale * f64::from(d), p90: 0.0 }).collect(),
        };
        let lines = Lines {
            y_label: "TWY".into(),
            // The third is 1 % off the first: a line of its own.
            series: vec![line(palette(0), 1.0), line(palette(1), 1.000_000_1), line(palette(2), 1.01), line(palette(3), 2.0)],
            y_from_zero: true,
            y_ceiling: None,
            y_show_down_to: None,
            y_ticks: Ticks::Number,
            y_log: false,
        };
        let chart = Chart {
            stem: "test",
            title: "t".into(),
            subtitle: String::new(),
            legend: Vec::new(),
            body: Body::Lines(lines),
            size: SIZE,
        };
        let svg = render_svg(&chart).unwrap_or_else(|e| panic!("{e}"));
        let width_of = |c: RGBColor| {
            let hex = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
            let at = svg.find(&format!("<polyline fill=\"none\" opacity=\"1\" stroke=\"{hex}\""));
            let rest = at.map(|i| &svg[i..]).unwrap_or_else(|| panic!("no line of {hex} in {svg}"));
            rest.split("stroke-width=\"").nth(1).and_then(|w| w.split('"').next()).unwrap_or_default().to_string()
        };
        assert_eq!([palette(0), palette(1), palette(2), palette(3)].map(width_of), ["6", "2", "2", "2"]);
    }
}
