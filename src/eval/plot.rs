//! A small ROC plot as SVG (false accept rate against true accept rate), one curve per
//! detector, for docs/detection.md.

use std::fmt::Write;

const COLOURS: &[&str] = &["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#d62728"];

/// Renders `curves` (name, ROC points as (FAR, FRR)) into a standalone SVG document.
pub(crate) fn roc_svg(title: &str, curves: &[(String, Vec<(f64, f64)>)]) -> String {
    let (w, h, m) = (480.0, 400.0, 50.0);
    let (pw, ph) = (w - 2.0 * m, h - 2.0 * m);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle">{title}</text>"#,
        w / 2.0
    );
    let _ = write!(
        s,
        r#"<rect x="{m}" y="{m}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    for i in 0..=5 {
        let v = f64::from(i) / 5.0;
        let x = m + v * pw;
        let y = m + ph - v * ph;
        let _ = write!(
            s,
            r#"<text x="{x}" y="{}" text-anchor="middle">{v:.1}</text>"#,
            h - m + 16.0
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{v:.1}</text>"#,
            m - 6.0,
            y + 4.0
        );
        let _ = write!(
            s,
            r##"<line x1="{m}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/>"##,
            m + pw
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">false accept rate</text>"#,
        w / 2.0,
        h - 10.0
    );
    let _ = write!(
        s,
        r#"<text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">true accept rate</text>"#,
        h / 2.0,
        h / 2.0
    );
    let _ = write!(
        s,
        r##"<line x1="{m}" y1="{}" x2="{}" y2="{m}" stroke="#aaa" stroke-dasharray="4"/>"##,
        m + ph,
        m + pw
    );
    for (i, (name, pts)) in curves.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let mut d = String::new();
        for (far, frr) in pts {
            let _ = write!(d, "{:.1},{:.1} ", m + far * pw, m + ph - (1.0 - frr) * ph);
        }
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{d}"/>"#
        );
        let ly = m + ph - 12.0 - 16.0 * i as f64;
        let _ = write!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="2"/>"#,
            m + pw - 130.0,
            m + pw - 110.0
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}">{name}</text>"#,
            m + pw - 104.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}
