//! Bar charts drawn on the server as SVG: accessible (`role="img"`, a title and a
//! description) and each with its figures as a table beside it. The geometry is worked
//! out here; `macros.html` draws it. No script, no client library.

use std::time::Duration;

/// The drawing's size in SVG units (it scales to the width of its container): wide
/// charts take a row, narrow ones share it.
pub const WIDE: f64 = 640.0;
pub const NARROW: f64 = 360.0;
const HEIGHT: f64 = 220.0;
/// The widest bar, so that one bar alone does not fill the chart.
const MAX_BAR: f64 = 56.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
/// At most this many labels under the bars; the others are in the table.
const X_LABELS: usize = 8;

/// One part of a bar (a stacked bar has several): its value, and its kind, which is
/// both the CSS class (`seg-succeeded`) and the legend's word.
#[derive(Debug, Clone)]
pub struct Part {
    pub value: f64,
    pub kind: &'static str,
}

/// A bar as given: the label under it, its parts, and what its tooltip says.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub parts: Vec<Part>,
    pub note: String,
}

/// A drawn rectangle.
#[derive(Debug, Clone)]
pub struct Rect {
    pub x: String,
    pub y: String,
    pub width: String,
    pub height: String,
    pub kind: &'static str,
}

/// A drawn bar: its rectangles and its tooltip.
#[derive(Debug, Clone)]
pub struct DrawnBar {
    pub rects: Vec<Rect>,
    pub note: String,
    /// Where the failure mark goes, for bars with a failed part.
    pub mark: Option<(String, String)>,
}

/// A label on an axis.
#[derive(Debug, Clone)]
pub struct AxisLabel {
    pub x: String,
    pub y: String,
    pub text: String,
}

/// The chart's figures as a table.
#[derive(Debug, Clone)]
pub struct ChartTable {
    pub caption: String,
    pub headers: Vec<String>,
    /// The first cell of each row is its header.
    pub rows: Vec<Vec<String>>,
}

/// A chart ready to draw.
#[derive(Debug, Clone)]
pub struct Chart {
    pub id: String,
    pub title: String,
    pub desc: String,
    pub view_box: String,
    pub bars: Vec<DrawnBar>,
    pub y_labels: Vec<AxisLabel>,
    pub x_labels: Vec<AxisLabel>,
    /// The horizontal grid lines, by height.
    pub grid: Vec<String>,
    pub axis_y: String,
    pub left: String,
    pub right: String,
    /// The kinds of parts shown, for the legend.
    pub legend: Vec<&'static str>,
    pub table: ChartTable,
    /// No bar at all: the chart says so instead.
    pub empty: bool,
}

fn fmt(value: f64) -> String {
    format!("{value:.1}")
}

/// The smallest of 1, 2 or 5 times a power of ten at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10_f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

/// How a chart is laid out: its width ([`WIDE`] or [`NARROW`]) and the least top of
/// its scale (100 for a percentage, so that 0 % is drawn as nothing of 100).
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub width: f64,
    pub at_least: f64,
}

impl Frame {
    pub const WIDE: Self = Self {
        width: WIDE,
        at_least: 1.0,
    };
}

/// Draws `bars` (stacked by part) over a scale from 0, labelling the scale with
/// `unit`.
pub fn bar_chart(
    id: &str,
    title: String,
    desc: String,
    bars: &[Bar],
    unit: &dyn Fn(f64) -> String,
    frame: Frame,
    table: ChartTable,
) -> Chart {
    let width = frame.width;
    let plot_width = width - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let largest = bars
        .iter()
        .map(|b| b.parts.iter().map(|p| p.value).sum::<f64>())
        .fold(0.0, f64::max);
    let top = nice_ceiling(largest.max(frame.at_least));
    let y_of = |value: f64| TOP + plot_height - value / top * plot_height;
    let slot = plot_width / bars.len().max(1) as f64;
    let bar_width = (slot * 0.7).clamp(1.0, MAX_BAR);
    let mut legend: Vec<&'static str> = Vec::new();
    let drawn = bars
        .iter()
        .enumerate()
        .map(|(index, bar)| {
            let x = LEFT + slot * index as f64 + (slot - bar_width) / 2.0;
            let mut base = 0.0;
            let mut rects = Vec::new();
            for part in bar.parts.iter().filter(|p| p.value > 0.0) {
                if !legend.contains(&part.kind) {
                    legend.push(part.kind);
                }
                let (low, high) = (y_of(base), y_of(base + part.value));
                rects.push(Rect {
                    x: fmt(x),
                    y: fmt(high),
                    width: fmt(bar_width),
                    height: fmt((low - high).max(0.5)),
                    kind: part.kind,
                });
                base += part.value;
            }
            let failed = bar
                .parts
                .iter()
                .any(|p| p.kind == "failed" && p.value > 0.0);
            DrawnBar {
                rects,
                note: bar.note.clone(),
                mark: failed.then(|| (fmt(x + bar_width / 2.0), fmt(y_of(base) - 3.0))),
            }
        })
        .collect();
    let ticks = [0.0, 0.5, 1.0];
    let y_labels = ticks
        .iter()
        .map(|share| AxisLabel {
            x: fmt(LEFT - 6.0),
            y: fmt(y_of(top * share) + 4.0),
            text: unit(top * share),
        })
        .collect();
    let grid = ticks.iter().map(|share| fmt(y_of(top * share))).collect();
    let every = bars.len().div_ceil(X_LABELS).max(1);
    let x_labels = bars
        .iter()
        .enumerate()
        .filter(|(index, _)| index % every == 0 || *index + 1 == bars.len())
        .map(|(index, bar)| AxisLabel {
            x: fmt(LEFT + slot * index as f64 + slot / 2.0),
            y: fmt(HEIGHT - 8.0),
            text: bar.label.clone(),
        })
        .collect();
    Chart {
        id: id.to_owned(),
        title,
        desc,
        view_box: format!("0 0 {width} {HEIGHT}"),
        bars: drawn,
        y_labels,
        x_labels,
        grid,
        axis_y: fmt(TOP + plot_height),
        left: fmt(LEFT),
        right: fmt(width - RIGHT),
        legend,
        empty: bars.is_empty(),
        table,
    }
}

/// A duration as people read it: `42 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`.
pub fn duration_text(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 if seconds.is_multiple_of(60) => format!("{} min", seconds / 60),
        60..3600 => format!("{} min {} s", seconds / 60, seconds % 60),
        3600..86_400 => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{} d {} h", seconds / 86_400, seconds % 86_400 / 3600),
    }
}

/// A number of seconds on a scale, in a unit that suits it.
pub fn seconds_text(seconds: f64) -> String {
    if seconds <= 0.0 {
        "0".to_owned()
    } else if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 7200.0 {
        format!("{:.0} min", seconds / 60.0)
    } else if seconds < 172_800.0 {
        format!("{:.0} h", seconds / 3600.0)
    } else {
        format!("{:.0} d", seconds / 86_400.0)
    }
}

/// A count on a scale.
pub fn count_text(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str, succeeded: f64, failed: f64) -> Bar {
        Bar {
            label: label.to_owned(),
            parts: vec![
                Part {
                    value: succeeded,
                    kind: "succeeded",
                },
                Part {
                    value: failed,
                    kind: "failed",
                },
            ],
            note: label.to_owned(),
        }
    }

    fn table() -> ChartTable {
        ChartTable {
            caption: String::new(),
            headers: Vec::new(),
            rows: Vec::new(),
        }
    }

    #[test]
    fn bars_stack_their_parts_on_a_scale_rounded_up_to_a_nice_number() {
        let chart = bar_chart(
            "c",
            "t".into(),
            "d".into(),
            &[bar("a", 3.0, 1.0), bar("b", 0.0, 0.0), bar("c", 2.0, 0.0)],
            &count_text,
            Frame::WIDE,
            table(),
        );
        // The scale tops at 5 (4 rounded up), the plot is 180 high from y = 12.
        let labels: Vec<_> = chart.y_labels.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(labels, ["0", "2.5", "5"]);
        let first = &chart.bars[0];
        let heights: Vec<_> = first.rects.iter().map(|r| r.height.as_str()).collect();
        assert_eq!(heights, ["108.0", "36.0"]);
        assert_eq!(first.rects[0].y, "84.0");
        assert_eq!(first.rects[1].y, "48.0");
        assert!(first.mark.is_some(), "a bar with failures is marked");
        assert!(chart.bars[1].rects.is_empty(), "nothing drawn for zero");
        assert!(chart.bars[2].mark.is_none());
        assert_eq!(chart.legend, ["succeeded", "failed"]);
        assert!(!chart.empty);
    }

    #[test]
    fn a_percentage_is_drawn_against_a_hundred_and_no_bar_is_an_empty_chart() {
        let chart = bar_chart(
            "c",
            "t".into(),
            "d".into(),
            &[bar("a", 0.0, 0.0), bar("b", 25.0, 0.0)],
            &count_text,
            Frame {
                width: NARROW,
                at_least: 100.0,
            },
            table(),
        );
        let labels: Vec<_> = chart.y_labels.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(labels, ["0", "50", "100"]);
        assert_eq!(chart.bars[1].rects[0].height, "45.0");
        assert_eq!(chart.view_box, "0 0 360 220");
        assert!(!chart.empty);
        let none = bar_chart(
            "c",
            "t".into(),
            "d".into(),
            &[],
            &count_text,
            Frame::WIDE,
            table(),
        );
        assert!(none.empty);
    }

    #[test]
    fn durations_read_in_the_unit_that_suits_them() {
        assert_eq!(duration_text(Duration::from_secs(42)), "42 s");
        assert_eq!(duration_text(Duration::from_secs(185)), "3 min 5 s");
        assert_eq!(duration_text(Duration::from_secs(180)), "3 min");
        assert_eq!(duration_text(Duration::from_secs(7800)), "2 h 10 min");
        assert_eq!(duration_text(Duration::from_secs(273_600)), "3 d 4 h");
        assert_eq!(seconds_text(90.0), "90 s");
        assert_eq!(seconds_text(600.0), "10 min");
    }
}
