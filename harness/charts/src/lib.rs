//! Self-contained SVG line charts: one `<svg>` element per chart, no script, no stylesheet, no
//! external resource, so a chart can be inlined into an HTML page or saved as a picture.
//!
//! A chart has linear or log10 axes with "nice" ticks, series drawn as lines, steps, dashes or
//! dots (non-finite points leave gaps), vertical event markers and shaded x intervals. The output
//! is deterministic: the same chart gives the same bytes, so a committed picture can be compared.
//! Elements carry class names (`series`, `series-point`, `tick`, `axis-label`, `legend`, `marker`,
//! `marker-label`, `band`, `band-label`, `empty`) and `data-` attributes so tests can read them.

#![warn(missing_docs)]

use std::fmt::{self, Write};

/// Axis scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Evenly spaced values; ticks in 1-2-5 steps.
    Linear,
    /// Evenly spaced decades; only positive values are drawn.
    Log10,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Straight segments between points.
    Line,
    /// Each value holds until the next point: horizontal, then vertical.
    Step,
    /// Straight segments, dashed.
    Dashed,
    /// A dot per point, no segments.
    Dots,
}

/// A named series of `(x, y)` points, drawn in one colour and style.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Shown in the legend and as `data-series` on its elements.
    pub name: String,
    /// Any SVG colour, e.g. `#2b6cb0`.
    pub color: String,
    /// How the points are joined.
    pub style: Style,
    /// In drawing order; a point with a non-finite coordinate (or one ≤ 0 on a log axis) breaks
    /// the line.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from its parts.
    pub fn new(name: impl Into<String>, color: impl Into<String>, style: Style, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), color: color.into(), style, points }
    }
}

/// A vertical line at `x` with a label (an event on the time axis).
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Where the event happened, in x units.
    pub x: f64,
    /// Shown above the plot, beside its line (rows of labels never cover the data).
    pub label: String,
}

/// A shaded x interval (e.g. "gate tripped" from..to) with a label.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Start, in x units.
    pub from: f64,
    /// End, in x units.
    pub to: f64,
    /// Shown above the plot, from the band's left edge.
    pub label: String,
    /// Fill colour, drawn at 15% opacity.
    pub color: String,
}

/// A line chart: axes, series, markers and bands.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// The `id` of the `<svg>` element.
    pub id: String,
    /// Shown above the legend; also the element's `aria-label`.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Left of the y axis, rotated.
    pub y_label: String,
    /// Scale of the x axis.
    pub x_scale: Scale,
    /// Scale of the y axis.
    pub y_scale: Scale,
    /// Width in px.
    pub width: u32,
    /// Height in px; grows when a long legend would leave the plot too little room.
    pub height: u32,
    /// Fixed ranges; None = from the data (linear y includes 0).
    pub x_range: Option<(f64, f64)>,
    /// Fixed y range; None = from the data. Values outside a fixed range are drawn at its edge.
    pub y_range: Option<(f64, f64)>,
    /// Drawn in order, later ones on top.
    pub series: Vec<Series>,
    /// Events; those outside the x range are not drawn.
    pub markers: Vec<Marker>,
    /// Shaded intervals, behind the series, clipped to the x range.
    pub bands: Vec<Band>,
}

const MARGIN_LEFT: f64 = 56.0;
const MARGIN_RIGHT: f64 = 16.0;
const MARGIN_BOTTOM: f64 = 40.0;
const TITLE_SIZE: f64 = 13.0;
const TITLE_LINE: f64 = 16.0;
const FONT_SIZE: f64 = 11.0;
const LABEL_SIZE: f64 = 10.0;
const LEGEND_ROW: f64 = 15.0;
/// Length of the line sample in front of a legend name, and the space after an entry.
const LEGEND_SAMPLE: f64 = 18.0;
const LEGEND_SPACING: f64 = 16.0;
const LABEL_ROWS: usize = 4;
const LABEL_ROW: f64 = 12.0;
const MIN_WIDTH: f64 = 160.0;
const MIN_PLOT_HEIGHT: f64 = 40.0;
/// Average glyph width as a share of the font size; generous for sans-serif, so estimated text
/// widths err on the wide side and labels do not collide.
const GLYPH: f64 = 0.6;
const TEXT: &str = "#2d3748";
const MUTED: &str = "#4a5568";

impl Chart {
    /// Linear axes, 760×260, no series.
    pub fn new(id: &str, title: &str, x_label: &str, y_label: &str) -> Chart {
        Chart {
            id: id.to_string(),
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            width: 760,
            height: 260,
            x_range: None,
            y_range: None,
            series: Vec::new(),
            markers: Vec::new(),
            bands: Vec::new(),
        }
    }

    /// The chart as one `<svg>` element (no XML declaration), deterministic: the same chart gives the same bytes.
    pub fn svg(&self) -> String {
        let l = Layout::new(self);
        let mut out = String::with_capacity(4096 + 64 * self.series.iter().map(|s| s.points.len()).sum::<usize>());
        let (w, h) = (Px(l.width), Px(l.height));
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"{}\" class=\"chart\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\" font-family=\"sans-serif\" font-size=\"11\">",
            escape(&self.id),
            escape(&self.title)
        );
        let _ = writeln!(out, "<rect class=\"background\" width=\"{w}\" height=\"{h}\" fill=\"#fff\"/>");
        self.title_svg(&l, &mut out);
        self.legend_svg(&l, &mut out);
        self.axes_svg(&l, &mut out);
        let drawn = self.series_svg(&l, &mut out);
        self.labels_svg(&l, &mut out);
        if drawn == 0 {
            let _ = writeln!(
                out,
                "<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#a0aec0\" font-size=\"13\">no data</text>",
                Px((l.left + l.right) / 2.0),
                Px((l.top + l.bottom) / 2.0)
            );
        }
        out.push_str("</svg>");
        out
    }

    fn title_svg(&self, l: &Layout, out: &mut String) {
        let _ = write!(
            out,
            "<text class=\"title\" x=\"{}\" y=\"16\" font-size=\"13\" font-weight=\"bold\" fill=\"{TEXT}\">",
            Px(l.left)
        );
        for (i, line) in l.title.iter().enumerate() {
            let y = TITLE_LINE * (i as f64 + 1.0);
            // A space ending each wrapped line keeps the words apart in the text content.
            let space = if i + 1 < l.title.len() { " " } else { "" };
            let _ = write!(out, "<tspan x=\"{}\" y=\"{}\">{}{space}</tspan>", Px(l.left), Px(y), escape(line));
        }
        out.push_str("</text>\n");
    }

    fn legend_svg(&self, l: &Layout, out: &mut String) {
        for (s, &(x, row)) in self.series.iter().zip(&l.legend) {
            let cy = l.legend_top + row as f64 * LEGEND_ROW + LEGEND_ROW / 2.0;
            let (x1, x2) = (x, x + LEGEND_SAMPLE);
            let color = escape(&s.color);
            let name = escape(&s.name);
            let _ = match s.style {
                Style::Line | Style::Dashed => writeln!(
                    out,
                    "<line class=\"legend-mark\" data-series=\"{name}\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{color}\" stroke-width=\"2\"{}/>",
                    Px(x1),
                    Px(cy),
                    Px(x2),
                    Px(cy),
                    if s.style == Style::Dashed { " stroke-dasharray=\"4 3\"" } else { "" }
                ),
                Style::Step => writeln!(
                    out,
                    "<path class=\"legend-mark\" data-series=\"{name}\" d=\"M{},{} L{},{} L{},{} L{},{}\" stroke=\"{color}\" stroke-width=\"2\" fill=\"none\"/>",
                    Px(x1),
                    Px(cy + 3.0),
                    Px(x1 + 9.0),
                    Px(cy + 3.0),
                    Px(x1 + 9.0),
                    Px(cy - 3.0),
                    Px(x2),
                    Px(cy - 3.0)
                ),
                Style::Dots => writeln!(
                    out,
                    "<circle class=\"legend-mark\" data-series=\"{name}\" cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{color}\"/>",
                    Px((x1 + x2) / 2.0),
                    Px(cy)
                ),
            };
            let _ = writeln!(
                out,
                "<text class=\"legend\" x=\"{}\" y=\"{}\" fill=\"{TEXT}\">{name}</text>",
                Px(x2 + 5.0),
                Px(cy + 4.0)
            );
        }
    }

    fn axes_svg(&self, l: &Layout, out: &mut String) {
        // Grid first, so bands, axes and series are drawn over it.
        for &v in &l.x.ticks {
            let x = Px(l.x.px(v));
            let _ = writeln!(
                out,
                "<line class=\"grid\" x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#edf2f7\"/>",
                Px(l.top),
                Px(l.bottom + 4.0)
            );
        }
        for &v in &l.y.ticks {
            let y = Px(l.y.px(v));
            let _ = writeln!(
                out,
                "<line class=\"grid\" x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#edf2f7\"/>",
                Px(l.left - 4.0),
                Px(l.right)
            );
        }
        for band in &self.bands {
            if let Some((x1, x2)) = l.band_px(band) {
                let _ = writeln!(
                    out,
                    "<rect class=\"band\" data-label=\"{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" fill-opacity=\"0.15\"/>",
                    escape(&band.label),
                    Px(x1),
                    Px(l.top),
                    Px(x2 - x1),
                    Px(l.bottom - l.top),
                    escape(&band.color)
                );
            }
        }
        let _ = writeln!(
            out,
            "<path class=\"axis\" d=\"M{},{} L{},{} L{},{}\" stroke=\"#a0aec0\" fill=\"none\"/>",
            Px(l.left),
            Px(l.top),
            Px(l.left),
            Px(l.bottom),
            Px(l.right),
            Px(l.bottom)
        );
        for &v in &l.x.ticks {
            let _ = writeln!(
                out,
                "<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{MUTED}\">{}</text>",
                Px(l.x.px(v)),
                Px(l.bottom + 15.0),
                number(v)
            );
        }
        for &v in &l.y.ticks {
            let _ = writeln!(
                out,
                "<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"{MUTED}\">{}</text>",
                Px(l.left - 6.0),
                Px(l.y.px(v) + 4.0),
                number(v)
            );
        }
        let _ = writeln!(
            out,
            "<text class=\"axis-label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{TEXT}\">{}</text>",
            Px((l.left + l.right) / 2.0),
            Px(l.bottom + 32.0),
            escape(&self.x_label)
        );
        let cy = Px((l.top + l.bottom) / 2.0);
        let _ = writeln!(
            out,
            "<text class=\"axis-label\" x=\"14\" y=\"{cy}\" transform=\"rotate(-90 14 {cy})\" text-anchor=\"middle\" fill=\"{TEXT}\">{}</text>",
            escape(&self.y_label)
        );
    }

    /// Draws the series; returns how many points were drawn.
    fn series_svg(&self, l: &Layout, out: &mut String) -> usize {
        let mut drawn = 0;
        for s in &self.series {
            let name = escape(&s.name);
            let color = escape(&s.color);
            let mut run: Vec<(f64, f64)> = Vec::new();
            // A sentinel `None` after the last point flushes the final run.
            for point in s.points.iter().map(Some).chain([None]) {
                if let Some(&(x, y)) = point {
                    if usable(y, l.y.scale) && l.x.contains(x) {
                        // y outside a fixed range is drawn at the plot's edge.
                        run.push((l.x.px(x), l.y.px(y).max(l.top).min(l.bottom)));
                        continue;
                    }
                }
                drawn += run.len();
                draw_run(out, s.style, &name, &color, &run);
                run.clear();
            }
        }
        drawn
    }

    fn labels_svg(&self, l: &Layout, out: &mut String) {
        let mut labels = Vec::new();
        for band in &self.bands {
            if let Some((x1, x2)) = l.band_px(band) {
                labels.push(Label::new("band-label", &band.label, x1 + 3.0, x2 - 3.0, &band.color, l));
            }
        }
        for m in &self.markers {
            if !l.x.contains(m.x) {
                continue;
            }
            let x = Px(l.x.px(m.x));
            let _ = writeln!(
                out,
                "<line class=\"marker\" data-label=\"{}\" x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#718096\" stroke-dasharray=\"4 3\"/>",
                escape(&m.label),
                Px(l.top),
                Px(l.bottom)
            );
            labels.push(Label::new("marker-label", &m.label, x.0 + 3.0, x.0 - 3.0, MUTED, l));
        }
        for (label, row) in place_labels(&labels) {
            let _ = writeln!(
                out,
                "<text class=\"{}\" x=\"{}\" y=\"{}\" text-anchor=\"{}\" font-size=\"10\" fill=\"{}\" stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\">{}</text>",
                label.class,
                Px(label.x),
                Px(l.labels_top + 9.0 + row as f64 * LABEL_ROW),
                if label.end_anchored { "end" } else { "start" },
                escape(label.color),
                escape(label.text)
            );
        }
    }
}

/// One continuous run of a series, in px: a path, or dots, or a lone visible point.
fn draw_run(out: &mut String, style: Style, name: &str, color: &str, run: &[(f64, f64)]) {
    if style == Style::Dots || run.len() == 1 {
        let r = if style == Style::Dots { "2.5" } else { "3" };
        for &(x, y) in run {
            let _ = writeln!(
                out,
                "<circle class=\"series-point\" data-series=\"{name}\" cx=\"{}\" cy=\"{}\" r=\"{r}\" fill=\"{color}\"/>",
                Px(x),
                Px(y)
            );
        }
        return;
    }
    let Some((&(x0, y0), rest)) = run.split_first() else { return };
    let mut d = format!("M{},{}", Px(x0), Px(y0));
    let mut last_y = y0;
    for &(x, y) in rest {
        if style == Style::Step {
            let _ = write!(d, " L{},{}", Px(x), Px(last_y));
        }
        let _ = write!(d, " L{},{}", Px(x), Px(y));
        last_y = y;
    }
    let dash = if style == Style::Dashed { " stroke-dasharray=\"6 4\"" } else { "" };
    let _ = writeln!(
        out,
        "<path class=\"series\" data-series=\"{name}\" d=\"{d}\" stroke=\"{color}\" stroke-width=\"1.6\" stroke-linejoin=\"round\" fill=\"none\"{dash}/>"
    );
}

/// `text` escaped for XML text and attribute values (& < > " ').
///
/// Control characters XML does not allow (all below U+0020 but tab, newline and carriage
/// return) become U+FFFD, so a standalone `.svg` file stays well-formed.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A coordinate in px, printed to 0.1 px; never NaN, inf or `-0.0`.
#[derive(Debug, Clone, Copy)]
struct Px(f64);

impl fmt::Display for Px {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = (self.0.clamp(-1e6, 1e6) * 10.0).round() / 10.0;
        let r = if r.is_finite() && r != 0.0 { r } else { 0.0 };
        write!(f, "{r:.1}")
    }
}

/// Whether `v` can be placed on an axis of `scale`.
fn usable(v: f64, scale: Scale) -> bool {
    v.is_finite() && (scale == Scale::Linear || v > 0.0)
}

/// `v` rounded to 12 significant digits, which removes the tails of float arithmetic
/// (`3 × 0.1 = 0.30000000000000004`).
fn round_sig(v: f64) -> f64 {
    if !v.is_finite() {
        return v;
    }
    format!("{v:.11e}").parse().unwrap_or(v)
}

/// `10^e`, the nearest double (the parser rounds correctly; `powi` may not).
fn decade(e: i32) -> f64 {
    format!("1e{e}").parse().unwrap_or(f64::NAN)
}

/// A tick label: compact (`1k`, `2.5M`, `0.01`, `1e-5`), no float tails, no `-0`.
fn number(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let v = round_sig(v);
    if v == 0.0 {
        return "0".to_string();
    }
    let a = v.abs();
    if !(1e-4..1e15).contains(&a) {
        return format!("{v:e}");
    }
    for (unit, suffix) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if a >= unit {
            return format!("{}{suffix}", decimal(v / unit));
        }
    }
    decimal(v)
}

fn decimal(v: f64) -> String {
    let s = format!("{:.6}", round_sig(v));
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// One axis: its range, its ticks, and the px its ends are drawn at.
#[derive(Debug, Clone)]
struct Axis {
    scale: Scale,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    from_px: f64,
    to_px: f64,
}

impl Axis {
    /// A range from `fixed` when valid, else from `data` made nice, and its ticks.
    fn new(scale: Scale, fixed: Option<(f64, f64)>, data: Option<(f64, f64)>, include_zero: bool) -> Axis {
        let (lo, hi, ticks) = match fixed.and_then(|(a, b)| valid_range(scale, a, b)) {
            Some((lo, hi)) => (lo, hi, ticks_within(scale, lo, hi, None)),
            None => match scale {
                Scale::Linear => nice_linear(data, include_zero),
                Scale::Log10 => nice_log(data),
            },
        };
        Axis { scale, lo, hi, ticks, from_px: 0.0, to_px: 1.0 }
    }

    /// Position of `v` along the axis: 0 at `lo`, 1 at `hi`.
    fn t(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            Scale::Log10 => (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10()),
        }
    }

    fn px(&self, v: f64) -> f64 {
        self.from_px + self.t(v) * (self.to_px - self.from_px)
    }

    fn contains(&self, v: f64) -> bool {
        usable(v, self.scale) && (-1e-9..=1.0 + 1e-9).contains(&self.t(v))
    }
}

fn valid_range(scale: Scale, a: f64, b: f64) -> Option<(f64, f64)> {
    let (lo, hi) = (a.min(b), a.max(b));
    (usable(lo, scale) && usable(hi, scale) && lo < hi && (hi - lo).is_finite()).then_some((lo, hi))
}

/// A linear range covering `data` (and 0 if asked), widened to whole tick steps.
fn nice_linear(data: Option<(f64, f64)>, include_zero: bool) -> (f64, f64, Vec<f64>) {
    let (mut lo, mut hi) = data.unwrap_or((0.0, 1.0));
    if include_zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    if hi <= lo {
        // One value: give it room (above 0 when 0 is the floor).
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        if include_zero && lo == 0.0 {
            hi = pad;
        } else {
            lo -= pad;
            hi += pad;
        }
    }
    let Some(step) = linear_step(lo, hi, true) else { return (lo, hi, ticks_within(Scale::Linear, lo, hi, None)) };
    let (nlo, nhi) = (round_sig((lo / step).floor() * step), round_sig((hi / step).ceil() * step));
    match valid_range(Scale::Linear, nlo, nhi) {
        Some((lo, hi)) => (lo, hi, ticks_within(Scale::Linear, lo, hi, Some(step))),
        None => (lo, hi, ticks_within(Scale::Linear, lo, hi, None)),
    }
}

/// A log range covering `data`, widened to whole decades.
fn nice_log(data: Option<(f64, f64)>) -> (f64, f64, Vec<f64>) {
    let (lo, hi) = data.unwrap_or((1.0, 10.0));
    let (mut e0, mut e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    if e1 <= e0 {
        e0 -= 1;
        e1 += 1;
    }
    let (lo, hi) = valid_range(Scale::Log10, decade(e0), decade(e1)).unwrap_or((1.0, 10.0));
    (lo, hi, ticks_within(Scale::Log10, lo, hi, None))
}

/// The largest 1-2-5 step giving at least 4 intervals over `lo..hi` (5 ticks or more);
/// `extend`: counted once the range is widened to whole steps.
fn linear_step(lo: f64, hi: f64, extend: bool) -> Option<f64> {
    let span = hi - lo;
    if !(span > 0.0 && span.is_finite()) {
        return None;
    }
    let magnitude = decade(span.log10().floor() as i32);
    [10.0, 5.0, 2.0, 1.0, 0.5, 0.2, 0.1].into_iter().map(|m| m * magnitude).find(|&step| {
        let intervals = if extend {
            (hi / step).ceil() - (lo / step).floor()
        } else {
            (hi / step + 1e-9).floor() - (lo / step - 1e-9).ceil()
        };
        step > 0.0 && intervals >= 4.0
    })
}

/// The tick values inside `lo..=hi`: linear multiples of `step` (chosen when `None`); log
/// decades, with 2 and 5 multiples when the range spans at most 2 decades, thinned beyond 10
/// decades, and linear ticks when that leaves fewer than 3.
fn ticks_within(scale: Scale, lo: f64, hi: f64, step: Option<f64>) -> Vec<f64> {
    let linear = |step: Option<f64>| {
        let mut ticks = Vec::new();
        let Some(step) = step.or_else(|| linear_step(lo, hi, false)) else {
            return [lo, hi].into_iter().filter(|v| v.is_finite()).collect();
        };
        let slack = (hi - lo) * 1e-9;
        let mut k = (lo / step - 1e-9).ceil();
        // Bounded, and strictly increasing even where k + 1 == k at huge offsets.
        while ticks.len() < 100 {
            let v = round_sig(k * step);
            if v > hi + slack || ticks.last().is_some_and(|&last| v <= last) {
                break;
            }
            ticks.push(if v == 0.0 { 0.0 } else { v });
            k += 1.0;
        }
        ticks
    };
    match scale {
        Scale::Linear => linear(step),
        Scale::Log10 => {
            let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
            let every = ((e1 - e0 + 9) / 10).max(1);
            let multiples: &[f64] = if hi.log10() - lo.log10() <= 2.0 + 1e-9 { &[1.0, 2.0, 5.0] } else { &[1.0] };
            let mut ticks = Vec::new();
            for e in (e0..=e1).filter(|e| e.rem_euclid(every) == 0) {
                for m in multiples {
                    let v = round_sig(m * decade(e));
                    if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                        ticks.push(v);
                    }
                }
            }
            if ticks.len() < 3 {
                ticks = linear(None).into_iter().filter(|&v| v > 0.0).collect();
            }
            ticks
        }
    }
}

/// Where everything goes: margins, title lines, legend entries, the plot area and its axes.
#[derive(Debug, Clone)]
struct Layout {
    width: f64,
    height: f64,
    title: Vec<String>,
    legend_top: f64,
    /// Per series: the x of its entry and its row.
    legend: Vec<(f64, usize)>,
    left: f64,
    right: f64,
    /// Top of the strip above the plot that holds band and marker labels (as many rows as
    /// there may be labels, at most `LABEL_ROWS`), so they never cover the data.
    labels_top: f64,
    top: f64,
    bottom: f64,
    x: Axis,
    y: Axis,
}

impl Layout {
    fn new(chart: &Chart) -> Layout {
        let width = f64::from(chart.width).max(MIN_WIDTH);
        let (left, right) = (MARGIN_LEFT, width - MARGIN_RIGHT);
        let title = wrap(&chart.title, right - left, TITLE_SIZE);
        let legend_top = 6.0 + TITLE_LINE * title.len() as f64;

        // Legend entries left to right, a new row when the next would pass the right edge.
        let mut legend = Vec::with_capacity(chart.series.len());
        let (mut x, mut row) = (left, 0);
        for s in &chart.series {
            let w = LEGEND_SAMPLE + 5.0 + text_width(&s.name, FONT_SIZE);
            if x > left && x + w > right {
                row += 1;
                x = left;
            }
            legend.push((x, row));
            x += w + LEGEND_SPACING;
        }
        let rows = if chart.series.is_empty() { 0 } else { row + 1 };
        let labels_top = legend_top + rows as f64 * LEGEND_ROW + 6.0;
        let labels = chart.bands.len() + chart.markers.iter().filter(|m| m.x.is_finite()).count();
        let top = labels_top + labels.min(LABEL_ROWS) as f64 * LABEL_ROW;
        let height = f64::from(chart.height).max(top + MIN_PLOT_HEIGHT + MARGIN_BOTTOM);
        let bottom = height - MARGIN_BOTTOM;

        let (xs, ys) = (chart.x_scale, chart.y_scale);
        let drawable = || chart.series.iter().flat_map(|s| &s.points).filter(|p| usable(p.0, xs) && usable(p.1, ys));
        let mut x_axis = Axis::new(xs, chart.x_range, extent(drawable().map(|p| p.0)), false);
        x_axis.from_px = left;
        x_axis.to_px = right;
        let y_data = extent(drawable().filter(|p| x_axis.contains(p.0)).map(|p| p.1));
        let mut y_axis = Axis::new(ys, chart.y_range, y_data, true);
        y_axis.from_px = bottom;
        y_axis.to_px = top;
        Layout { width, height, title, legend_top, legend, left, right, labels_top, top, bottom, x: x_axis, y: y_axis }
    }

    /// A band's px extent, clipped to the plot; `None` when outside it. At least 2 px wide, so
    /// an instant is still visible.
    fn band_px(&self, band: &Band) -> Option<(f64, f64)> {
        if band.from.is_nan() || band.to.is_nan() {
            return None;
        }
        let (from, to) = (band.from.min(band.to), band.from.max(band.to));
        if to < self.x.lo || from > self.x.hi {
            return None;
        }
        let x1 = if from <= self.x.lo { self.left } else { self.x.px(from) };
        let x2 = if to >= self.x.hi { self.right } else { self.x.px(to) };
        let x2 = x2.max(x1 + 2.0).min(self.right);
        Some((x1.min(x2 - 2.0), x2))
    }
}

/// Min and max of the values, if any.
fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((v.min(lo), v.max(hi))),
    })
}

/// Estimated width of `text` at `size` px.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * GLYPH
}

/// `text` in lines of at most `width` px, broken at spaces; at least one line.
fn wrap(text: &str, width: f64, size: f64) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !line.is_empty() && text_width(&line, size) + text_width(word, size) + size * GLYPH > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// A band's or marker's label, placed at `x` with its text running right, or ending at `x` when
/// it would pass the plot's right edge.
#[derive(Debug, Clone)]
struct Label<'a> {
    class: &'static str,
    text: &'a str,
    color: &'a str,
    x: f64,
    end_anchored: bool,
    /// The px it covers, left to right.
    span: (f64, f64),
}

impl<'a> Label<'a> {
    fn new(class: &'static str, text: &'a str, start: f64, end: f64, color: &'a str, l: &Layout) -> Label<'a> {
        let w = text_width(text, LABEL_SIZE);
        let end_anchored = start + w > l.right && end - w >= l.left;
        let (x, span) = if end_anchored { (end, (end - w, end)) } else { (start, (start, start + w)) };
        Label { class, text, color, x, end_anchored, span }
    }
}

/// Rows for the labels, greedily left to right: the first row where a label clears the one
/// before it, else the row that ends first; so close events stay readable.
fn place_labels<'a, 'b>(labels: &'b [Label<'a>]) -> Vec<(&'b Label<'a>, usize)> {
    let mut order: Vec<&Label> = labels.iter().collect();
    order.sort_by(|a, b| a.span.0.total_cmp(&b.span.0));
    let mut ends = [f64::NEG_INFINITY; LABEL_ROWS];
    let mut placed = Vec::with_capacity(labels.len());
    for label in order {
        let free = ends.iter().position(|&end| end + 4.0 <= label.span.0);
        let row =
            free.unwrap_or_else(|| ends.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i));
        if let Some(end) = ends.get_mut(row) {
            *end = end.max(label.span.1);
        }
        placed.push((label, row));
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the markup is balanced (every opened element closed, in order), every path has a
    /// non-empty `d`, no number is NaN or infinite; returns the elements' tags.
    fn well_formed(svg: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut tags = Vec::new();
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("</svg>").count(), 1);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let close = rest[open..].find('>').expect("tag closed") + open;
            let tag = &rest[open + 1..close];
            assert_eq!(tag.matches('"').count() % 2, 0, "quotes in <{tag}>");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "closing </{name}>");
            } else {
                let name = tag.split_whitespace().next().expect("a name").trim_end_matches('/').to_string();
                if name == "path" {
                    let d = attr(tag, "d").expect("a path has d");
                    assert!(d.starts_with('M') && d.len() > 3, "d={d:?}");
                }
                tags.push(name.clone());
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        tags
    }

    fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        tag[start..].find('"').map(|end| &tag[start..start + end])
    }

    /// The opening tags (without `<`) of elements of `class`.
    fn elements<'a>(svg: &'a str, element: &str, class: &str) -> Vec<&'a str> {
        let head = format!("<{element} class=\"{class}\"");
        svg.match_indices(&head).map(|(i, _)| &svg[i + 1..i + svg[i..].find('>').unwrap_or(0)]).collect()
    }

    /// The contents of `<text class="{class}">` elements.
    fn texts(svg: &str, class: &str) -> Vec<String> {
        let head = format!("<text class=\"{class}\"");
        svg.match_indices(&head)
            .map(|(i, _)| {
                let body = &svg[i + svg[i..].find('>').unwrap_or(0) + 1..];
                body[..body.find("</text>").unwrap_or(0)].to_string()
            })
            .collect()
    }

    fn num(tag: &str, name: &str) -> f64 {
        attr(tag, name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} in {tag}"))
    }

    fn points_of(d: &str) -> Vec<(f64, f64)> {
        d.split(' ')
            .map(|p| {
                let (x, y) = p[1..].split_once(',').expect("x,y");
                (x.parse().expect("x"), y.parse().expect("y"))
            })
            .collect()
    }

    fn chart_with(series: Vec<Series>) -> Chart {
        let mut chart = Chart::new("c", "A chart", "x", "y");
        chart.series = series;
        chart
    }

    fn labels(ticks: &[f64]) -> Vec<String> {
        ticks.iter().map(|&v| number(v)).collect()
    }

    #[test]
    fn linear_ticks_are_nice_steps() {
        let (lo, hi, ticks) = nice_linear(Some((0.0, 97.0)), true);
        assert_eq!((lo, hi), (0.0, 100.0));
        assert_eq!(labels(&ticks), ["0", "20", "40", "60", "80", "100"]);
        // Zero is included on y: 40..97 still starts at 0.
        assert_eq!(nice_linear(Some((40.0, 97.0)), true).2, ticks);
        assert_eq!(labels(&nice_linear(Some((-3.0, 7.0)), false).2), ["-4", "-2", "0", "2", "4", "6", "8"]);
        assert_eq!(
            labels(&nice_linear(Some((0.0, 0.03)), true).2),
            ["0", "0.005", "0.01", "0.015", "0.02", "0.025", "0.03"]
        );
        assert_eq!(labels(&nice_linear(Some((1200.0, 9800.0)), false).2), ["0", "2k", "4k", "6k", "8k", "10k"]);
        assert_eq!(labels(&ticks_within(Scale::Linear, 0.0, 1.0, None)), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        // A fixed range keeps its ends; ticks only inside it.
        assert_eq!(labels(&ticks_within(Scale::Linear, 0.0, 7.3, None)), ["0", "1", "2", "3", "4", "5", "6", "7"]);
        // One value, or none, still gives a usable axis.
        assert_eq!(nice_linear(Some((0.0, 0.0)), true).1, 1.0);
        assert_eq!(labels(&nice_linear(None, true).2), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
    }

    #[test]
    fn log_ticks_are_decades() {
        let (lo, hi, ticks) = nice_log(Some((0.3, 2000.0)));
        assert_eq!((lo, hi), (0.1, 10000.0));
        assert_eq!(labels(&ticks), ["0.1", "1", "10", "100", "1k", "10k"]);
        // Under 2 decades: 2 and 5 multiples as well.
        assert_eq!(labels(&nice_log(Some((3.0, 40.0))).2), ["1", "2", "5", "10", "20", "50", "100"]);
        assert_eq!(labels(&ticks_within(Scale::Log10, 0.01, 1000.0, None)), ["0.01", "0.1", "1", "10", "100", "1k"]);
        // Less than a decade without a decade inside: linear ticks.
        assert_eq!(labels(&ticks_within(Scale::Log10, 2.0, 8.0, None)), ["2", "3", "4", "5", "6", "7", "8"]);
        // Many decades are thinned.
        assert!(ticks_within(Scale::Log10, 1e-30, 1e30, None).len() <= 11);
    }

    #[test]
    fn numbers_are_compact() {
        for (v, s) in [
            (0.1 * 3.0, "0.3"),
            (-0.0, "0"),
            (1000.0, "1k"),
            (2500.0, "2.5k"),
            (1.5e6, "1.5M"),
            (0.01, "0.01"),
            (1e-5, "1e-5"),
            (-20.0, "-20"),
            (12.5, "12.5"),
            (f64::NAN, ""),
        ] {
            assert_eq!(number(v), s, "{v}");
        }
    }

    #[test]
    fn a_nan_breaks_the_line_into_two_paths() {
        let points = vec![(0.0, 1.0), (1.0, 2.0), (2.0, f64::NAN), (3.0, 2.0), (4.0, 3.0)];
        let svg = chart_with(vec![Series::new("s", "#000", Style::Line, points)]).svg();
        well_formed(&svg);
        let paths = elements(&svg, "path", "series");
        assert_eq!(paths.len(), 2);
        assert!(paths
            .iter()
            .all(|p| attr(p, "data-series") == Some("s") && points_of(attr(p, "d").unwrap_or("")).len() == 2));
    }

    #[test]
    fn a_single_point_is_a_circle() {
        let svg = chart_with(vec![Series::new("one", "red", Style::Line, vec![(5.0, 5.0)])]).svg();
        well_formed(&svg);
        assert!(elements(&svg, "path", "series").is_empty());
        let dots = elements(&svg, "circle", "series-point");
        assert_eq!(dots.len(), 1);
        assert_eq!(attr(dots[0], "data-series"), Some("one"));
        assert!(!svg.contains("no data"));
    }

    #[test]
    fn steps_hold_each_value_until_the_next_point() {
        let svg =
            chart_with(vec![Series::new("w", "#000", Style::Step, vec![(0.0, 10.0), (1.0, 50.0), (3.0, 20.0)])]).svg();
        well_formed(&svg);
        let paths = elements(&svg, "path", "series");
        assert_eq!(paths.len(), 1);
        let p = points_of(attr(paths[0], "d").unwrap_or(""));
        assert_eq!(p.len(), 5, "{p:?}");
        assert_eq!(p[1].1, p[0].1, "horizontal first");
        assert_eq!(p[2].0, p[1].0, "then vertical");
        assert_eq!(p[3].1, p[2].1);
        assert_eq!(p[4].0, p[3].0);
        assert!(p[0].0 < p[1].0 && p[2].0 < p[3].0 && p[2].1 < p[1].1, "{p:?}");
    }

    #[test]
    fn dashed_and_dots() {
        let svg = chart_with(vec![
            Series::new("d", "#000", Style::Dashed, vec![(0.0, 1.0), (1.0, 2.0)]),
            Series::new("o", "#000", Style::Dots, vec![(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]),
        ])
        .svg();
        well_formed(&svg);
        let paths = elements(&svg, "path", "series");
        assert_eq!(paths.len(), 1);
        assert!(attr(paths[0], "stroke-dasharray").is_some());
        let dots = elements(&svg, "circle", "series-point");
        assert_eq!(dots.len(), 3);
        assert!(dots.iter().all(|d| attr(d, "data-series") == Some("o")));
    }

    #[test]
    fn a_log_axis_skips_values_at_or_below_zero() {
        let mut chart = chart_with(vec![Series::new(
            "l",
            "#000",
            Style::Line,
            vec![(1.0, 1.0), (2.0, 0.0), (3.0, -1.0), (4.0, 10.0), (5.0, 100.0)],
        )]);
        chart.y_scale = Scale::Log10;
        let svg = chart.svg();
        well_formed(&svg);
        assert_eq!(elements(&svg, "circle", "series-point").len(), 1, "the lone point before the gap");
        let paths = elements(&svg, "path", "series");
        assert_eq!(paths.len(), 1);
        assert_eq!(points_of(attr(paths[0], "d").unwrap_or("")).len(), 2);
        let ticks = texts(&svg, "tick");
        assert!(["1", "10", "100"].iter().all(|t| ticks.iter().any(|s| s == t)), "{ticks:?}");
        assert!(!ticks.iter().any(|t| t == "0" || t.starts_with('-')), "{ticks:?}");
    }

    #[test]
    fn fixed_ranges_clamp_y_and_skip_x() {
        let mut chart = chart_with(vec![Series::new(
            "c",
            "#000",
            Style::Line,
            vec![(-5.0, 5.0), (0.0, 5.0), (5.0, 1000.0), (10.0, -3.0), (15.0, 5.0)],
        )]);
        chart.x_range = Some((0.0, 10.0));
        chart.y_range = Some((0.0, 10.0));
        let svg = chart.svg();
        well_formed(&svg);
        let l = Layout::new(&chart);
        let paths = elements(&svg, "path", "series");
        assert_eq!(paths.len(), 1);
        let p = points_of(attr(paths[0], "d").unwrap_or(""));
        assert_eq!(p.len(), 3, "x outside 0..10 skipped: {p:?}");
        assert_eq!((p[0].0, p[2].0), ((l.left * 10.0).round() / 10.0, (l.right * 10.0).round() / 10.0));
        assert_eq!((p[1].1, p[2].1), ((l.top * 10.0).round() / 10.0, (l.bottom * 10.0).round() / 10.0));
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(escape("<&>\"'"), "&lt;&amp;&gt;&quot;&#39;");
        assert_eq!(escape("plain text, ü"), "plain text, ü");
        assert_eq!(escape("a\u{1}b\n"), "a\u{FFFD}b\n");
        let mut chart = chart_with(vec![Series::new("<a \"b\">", "#000", Style::Line, vec![(0.0, 1.0), (1.0, 1.0)])]);
        chart.title = "x < y & 'z'".into();
        chart.markers.push(Marker { x: 0.5, label: "<m>".into() });
        let svg = chart.svg();
        well_formed(&svg);
        assert!(svg.contains("data-series=\"&lt;a &quot;b&quot;&gt;\""));
        assert!(svg.contains("aria-label=\"x &lt; y &amp; &#39;z&#39;\""));
        assert_eq!(texts(&svg, "marker-label"), ["&lt;m&gt;"]);
    }

    fn busy_chart() -> Chart {
        let mut chart = Chart::new(
            "busy",
            "Everything at once, with a title long enough to wrap onto a second line of its own",
            "t (s)",
            "ms",
        );
        chart.width = 520;
        chart.y_scale = Scale::Log10;
        let wave: Vec<(f64, f64)> = (0..60).map(|i| (f64::from(i) * 0.5, 1.0 + f64::from(i % 7) * 37.3)).collect();
        chart.series.push(Series::new("wave", "#2b6cb0", Style::Line, wave.clone()));
        chart.series.push(Series::new(
            "steps",
            "#dd6b20",
            Style::Step,
            wave.iter().map(|&(x, y)| (x, y * 2.0)).collect(),
        ));
        chart.series.push(Series::new(
            "dashed",
            "#805ad5",
            Style::Dashed,
            vec![(1.0, f64::INFINITY), (2.0, 3.0), (3.0, 4.0)],
        ));
        chart.series.push(Series::new("dots", "#e53e3e", Style::Dots, vec![(f64::NAN, 1.0), (4.0, 40.0)]));
        chart.markers.push(Marker { x: 3.0, label: "fault".into() });
        chart.markers.push(Marker { x: f64::NAN, label: "never".into() });
        chart.bands.push(Band { from: 20.0, to: 1e9, label: "tripped".into(), color: "#e53e3e".into() });
        chart.bands.push(Band { from: f64::NAN, to: 5.0, label: "not a band".into(), color: "#000".into() });
        chart
    }

    #[test]
    fn the_same_chart_gives_the_same_bytes() {
        let chart = busy_chart();
        let svg = chart.svg();
        assert_eq!(svg, chart.clone().svg());
        let tags = well_formed(&svg);
        assert!(tags.contains(&"path".to_string()) && tags.contains(&"rect".to_string()));
        assert_eq!(texts(&svg, "axis-label"), ["t (s)", "ms"]);
        let lines = svg.matches("<tspan").count();
        assert!(lines >= 2, "the long title wraps");
        assert_eq!(svg.matches(" </tspan>").count(), lines - 1, "words stay apart across lines");
        assert_eq!(elements(&svg, "rect", "band").len(), 1, "a band with a NaN end is not drawn");
    }

    #[test]
    fn a_long_legend_wraps_and_moves_the_plot_down() {
        let series = |n: usize| -> Vec<Series> {
            (0..n)
                .map(|i| {
                    Series::new(
                        format!("a rather long series name number {i}"),
                        "#000",
                        Style::Line,
                        vec![(0.0, 1.0), (1.0, 2.0)],
                    )
                })
                .collect()
        };
        let one = chart_with(series(1));
        let twelve = chart_with(series(12));
        let svg = twelve.svg();
        well_formed(&svg);
        let legend = elements(&svg, "text", "legend");
        assert_eq!(legend.len(), 12);
        let mut rows: Vec<i64> = legend.iter().map(|t| num(t, "y") as i64).collect();
        rows.dedup();
        assert!(rows.len() > 1, "{rows:?}");
        assert!(legend.iter().all(|t| num(t, "x") < f64::from(twelve.width)));
        let (l1, l12) = (Layout::new(&one), Layout::new(&twelve));
        assert!(l12.top >= l1.top + (rows.len() - 1) as f64 * LEGEND_ROW, "{} vs {}", l12.top, l1.top);
        assert!(legend.iter().all(|t| num(t, "y") < l12.top), "legend above the plot");
        assert!(l12.bottom - l12.top >= MIN_PLOT_HEIGHT);
    }

    #[test]
    fn close_marker_labels_take_different_rows() {
        let mut chart = chart_with(vec![Series::new("s", "#000", Style::Line, vec![(0.0, 1.0), (100.0, 2.0)])]);
        chart.x_range = Some((0.0, 100.0));
        for (x, label) in [(50.0, "first event"), (50.5, "second event"), (51.0, "third event"), (90.0, "later")] {
            chart.markers.push(Marker { x, label: label.into() });
        }
        let svg = chart.svg();
        well_formed(&svg);
        let labels = elements(&svg, "text", "marker-label");
        assert_eq!(labels.len(), 4);
        let ys: Vec<f64> = labels.iter().map(|t| num(t, "y")).collect();
        assert!(ys[0] != ys[1] && ys[1] != ys[2] && ys[0] != ys[2], "{ys:?}");
        assert_eq!(ys[3], ys[0], "a label far away goes back to the first row");
        assert_eq!(elements(&svg, "line", "marker").len(), 4);
    }

    #[test]
    fn labels_sit_above_the_plot_never_on_the_data() {
        let mut chart = chart_with(vec![Series::new("s", "#000", Style::Line, vec![(0.0, 1.0), (100.0, 9.0)])]);
        chart.x_range = Some((0.0, 100.0));
        chart.markers.push(Marker { x: 95.0, label: "fault".into() });
        chart.bands.push(Band { from: 90.0, to: 100.0, label: "tripped".into(), color: "#e53e3e".into() });
        let (plain, labelled) = (Layout::new(&chart_with(chart.series.clone())), Layout::new(&chart));
        assert_eq!(labelled.top, plain.top + 2.0 * LABEL_ROW, "two labels: a strip of two rows");
        let svg = chart.svg();
        let texts = [elements(&svg, "text", "marker-label"), elements(&svg, "text", "band-label")].concat();
        assert_eq!(texts.len(), 2);
        assert!(texts.iter().all(|t| num(t, "y") < labelled.top && num(t, "y") > labelled.labels_top), "{texts:?}");
        let line = elements(&svg, "line", "marker");
        assert_eq!(line.len(), 1);
        assert_eq!(num(line[0], "y1"), (labelled.top * 10.0).round() / 10.0, "the marker's line spans the plot");
    }

    #[test]
    fn an_empty_chart_says_no_data() {
        for chart in [
            Chart::new("e", "Empty", "x", "y"),
            chart_with(vec![Series::new("nan", "#000", Style::Line, vec![(f64::NAN, 1.0), (1.0, f64::INFINITY)])]),
        ] {
            let svg = chart.svg();
            well_formed(&svg);
            assert_eq!(texts(&svg, "empty"), ["no data"]);
            assert_eq!(texts(&svg, "axis-label").len(), 2);
            assert!(texts(&svg, "tick").len() >= 6);
        }
    }

    #[test]
    fn markers_outside_the_range_are_not_drawn() {
        let mut chart = chart_with(vec![Series::new("s", "#000", Style::Line, vec![(0.0, 1.0), (10.0, 2.0)])]);
        chart.x_range = Some((0.0, 10.0));
        chart.markers = vec![
            Marker { x: 5.0, label: "inside".into() },
            Marker { x: 20.0, label: "after".into() },
            Marker { x: -1.0, label: "before".into() },
        ];
        let svg = chart.svg();
        well_formed(&svg);
        assert_eq!(elements(&svg, "line", "marker").len(), 1);
        assert_eq!(texts(&svg, "marker-label"), ["inside"]);
    }

    #[test]
    fn bands_are_clipped_to_the_plot() {
        let mut chart = chart_with(vec![Series::new("s", "#000", Style::Line, vec![(0.0, 1.0), (10.0, 2.0)])]);
        chart.x_range = Some((0.0, 10.0));
        let band = |from, to, label: &str| Band { from, to, label: label.into(), color: "#e53e3e".into() };
        chart.bands = vec![band(-10.0, 5.0, "left half"), band(8.0, 30.0, "right end"), band(11.0, 12.0, "outside")];
        let svg = chart.svg();
        well_formed(&svg);
        let l = Layout::new(&chart);
        let rects = elements(&svg, "rect", "band");
        assert_eq!(rects.len(), 2);
        let (x, w) = (num(rects[0], "x"), num(rects[0], "width"));
        assert_eq!(attr(rects[0], "data-label"), Some("left half"));
        assert!((x - l.left).abs() < 0.1 && (w - (l.right - l.left) / 2.0).abs() < 0.2, "{x} {w}");
        let (x, w) = (num(rects[1], "x"), num(rects[1], "width"));
        assert!((x + w - l.right).abs() < 0.2, "{x} {w}");
        assert!(num(rects[0], "height") > 0.0);
        assert_eq!(texts(&svg, "band-label"), ["left half", "right end"]);
        assert!(svg.find("class=\"band\"") < svg.find("class=\"series\""), "bands behind the series");
    }
}
