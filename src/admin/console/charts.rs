//! The overview's charts as inline SVG, written here (as `eval::plot` does): no JavaScript, no
//! chart library, nothing fetched. Each scales to its container (`viewBox`) and carries an
//! `aria-label`; the numbers are also in the page as text for those who cannot see it.
//! Colours and shapes use presentation attributes, which the console's CSP allows.

use std::fmt::Write;

use super::stats::RISK_BINS;

/// Colours of allow, challenge and block, in the order the charts stack them.
pub(super) const DECISION_COLOURS: [&str; 3] = ["#2e7d32", "#f9a825", "#c62828"];
const GENUINE: &str = "#1565c0";
const FAILED: &str = "#ef6c00";

const W: f64 = 640.0;
const H: f64 = 240.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 30.0;

/// Logins by decision per time bin, stacked; `labels` are the first and last bin's times.
pub(super) fn decisions_over_time(series: &[[u64; 3]], labels: (&str, &str)) -> String {
    let largest = series.iter().map(|b| b.iter().sum::<u64>()).max();
    let mut s = open("logins by decision over time, stacked: allow, challenge, block");
    let max = axis(&mut s, largest.unwrap_or(0));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let step = pw / series.len().max(1) as f64;
    for (i, bin) in series.iter().enumerate() {
        let mut y = TOP + ph;
        for (d, &count) in bin.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let h = count as f64 / max as f64 * ph;
            y -= h;
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{count} {}</title></rect>"#,
                LEFT + i as f64 * step + 1.0,
                (step - 2.0).max(1.0),
                DECISION_COLOURS[d],
                super::stats::DECISIONS[d],
            );
        }
    }
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="{}" font-size="11">{}</text><text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"#,
        H - 8.0,
        crate::wire::escape_html(labels.0),
        W - RIGHT,
        H - 8.0,
        crate::wire::escape_html(labels.1),
    );
    s.push_str("</svg>");
    s
}

/// Risks of genuine and failed logins side by side per bin, with the policy's `allow_below`
/// and `block_at` drawn where they cut the risk axis.
pub(super) fn risk_histogram(
    genuine: &[u64; RISK_BINS],
    failed: &[u64; RISK_BINS],
    allow_below: f64,
    block_at: f64,
) -> String {
    let largest = genuine.iter().chain(failed).copied().max();
    let mut s = open("risk of genuine (verified) and failed logins, with allow_below and block_at");
    let max = axis(&mut s, largest.unwrap_or(0));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let step = pw / RISK_BINS as f64;
    for i in 0..RISK_BINS {
        for (j, (count, colour, what)) in [
            (genuine[i], GENUINE, "genuine"),
            (failed[i], FAILED, "failed"),
        ]
        .into_iter()
        .enumerate()
        {
            if count == 0 {
                continue;
            }
            let h = count as f64 / max as f64 * ph;
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{colour}"><title>{count} {what}, risk {:.2}–{:.2}</title></rect>"#,
                LEFT + i as f64 * step + 1.0 + j as f64 * (step - 2.0) / 2.0,
                TOP + ph - h,
                ((step - 2.0) / 2.0).max(1.0),
                i as f64 / RISK_BINS as f64,
                (i + 1) as f64 / RISK_BINS as f64,
            );
        }
    }
    for (value, name, colour) in [
        (allow_below, "allow_below", DECISION_COLOURS[0]),
        (block_at, "block_at", DECISION_COLOURS[2]),
    ] {
        let x = LEFT + value.clamp(0.0, 1.0) * pw;
        let _ = write!(
            s,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2" stroke-dasharray="5 3"/><text x="{:.1}" y="{}" font-size="11" fill="{colour}" text-anchor="{}">{name} {value:.2}</text>"#,
            TOP + ph,
            x + if value > 0.8 { -4.0 } else { 4.0 },
            TOP + 10.0,
            if value > 0.8 { "end" } else { "start" },
        );
    }
    for tick in 0..=5 {
        let v = tick as f64 / 5.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{v:.1}</text>"#,
            LEFT + v * pw,
            H - 8.0
        );
    }
    s.push_str("</svg>");
    s
}

/// A small legend: coloured squares with names.
pub(super) fn legend(items: &[(&str, &str)]) -> String {
    let mut s = String::from(r#"<p class="legend">"#);
    for (colour, name) in items {
        let _ = write!(
            s,
            r#"<span><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" fill="{colour}"/></svg> {}</span> "#,
            crate::wire::escape_html(name)
        );
    }
    s.push_str("</p>");
    s
}

/// The legend of the risk histogram.
pub(super) fn risk_legend() -> String {
    legend(&[(GENUINE, "genuine (verified)"), (FAILED, "failed")])
}

fn open(label: &str) -> String {
    format!(
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{label}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">"#
    )
}

/// The count axis for counts up to `largest`: gridlines at round steps (at most five), with
/// their values. Returns the axis' top, which the bars scale to.
fn axis(s: &mut String, largest: u64) -> u64 {
    let ph = H - TOP - BOTTOM;
    let step = largest.div_ceil(4).max(1);
    let top = largest.div_ceil(step).max(1) * step;
    for t in 0..=top / step {
        let value = t * step;
        let y = TOP + ph - value as f64 / top as f64 * ph;
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{value}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            y + 4.0
        );
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacked_bars_scale_to_the_fullest_bin() {
        let svg = decisions_over_time(&[[1, 0, 0], [2, 1, 1], [0, 0, 0]], ("a<b", "c"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 4, "{svg}");
        assert!(svg.contains("a&lt;b"), "labels are escaped");
        assert!(svg.contains(&format!("height=\"{:.1}\"", (H - TOP - BOTTOM) / 2.0)));
    }

    #[test]
    fn the_histogram_draws_both_thresholds() {
        let mut genuine = [0; RISK_BINS];
        genuine[2] = 5;
        let mut failed = [0; RISK_BINS];
        failed[18] = 1;
        let svg = risk_histogram(&genuine, &failed, 0.6, 0.9);
        assert!(svg.contains("allow_below 0.60"));
        assert!(svg.contains("block_at 0.90"));
        assert_eq!(svg.matches("<rect").count(), 2);
        // Empty data still draws a valid chart.
        let empty = risk_histogram(&[0; RISK_BINS], &[0; RISK_BINS], 0.5, 0.5);
        assert!(empty.ends_with("</svg>"));
    }

    #[test]
    fn the_count_axis_has_round_steps() {
        for (largest, labels) in [
            (0, vec![0, 1]),
            (1, vec![0, 1]),
            (5, vec![0, 2, 4, 6]),
            (8, vec![0, 2, 4, 6, 8]),
            (1000, vec![0, 250, 500, 750, 1000]),
        ] {
            let mut s = String::new();
            let top = axis(&mut s, largest);
            let shown: Vec<u64> = s
                .split("text-anchor=\"end\">")
                .skip(1)
                .map(|t| t.split('<').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(shown, labels, "{largest}");
            assert_eq!(top, *labels.last().unwrap());
        }
    }
}
