//! The console's own help: `docs/console.md`, built into the binary and shown at
//! `/console/docs` (each heading an anchor the pages link to), and the stylesheet. Served by
//! gaitkeeper itself, so the links work on a machine without internet access.

use std::fmt::Write;

use http::{Response, StatusCode};

use super::escape_html;

const GUIDE: &str = include_str!("../../../docs/console.md");

/// The tab's icon: a gate.
pub(super) const FAVICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#263238"/><path d="M4 13V6a4 4 0 0 1 8 0v7" stroke="#fff" stroke-width="2" fill="none"/></svg>"##;

/// Readable on a laptop and on a phone: one column below 700 px, tables scroll sideways.
pub(super) const STYLESHEET: &str = r#"
:root { color-scheme: light; --fg: #1b1b1b; --muted: #5f6368; --line: #dadce0; --bg: #fafafa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; padding: .6rem 1rem; background: #263238; color: #fff; }
header a.brand { color: #fff; font-weight: 600; text-decoration: none; margin-right: auto; }
header form { display: flex; gap: .3rem; align-items: center; }
header label { display: flex; gap: .3rem; align-items: center; font-size: .9rem; }
header input { width: 9rem; padding: .25rem .4rem; }
main { max-width: 1100px; margin: 0 auto; padding: .5rem 1rem 2rem; }
h1 { font-size: 1.4rem; margin: .8rem 0 .3rem; overflow-wrap: anywhere; }
h2 { font-size: 1.1rem; margin: 1.2rem 0 .4rem; }
h3 { font-size: .95rem; margin: .8rem 0 .3rem; color: var(--muted); }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .2rem .9rem .8rem; margin: .8rem 0; min-width: 0; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 0 1rem; }
.pair > section { margin: .8rem 0; }
@media (max-width: 700px) { .pair { grid-template-columns: 1fr; } header input { width: 7rem; } }
form.filter { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: end; margin: .5rem 0; }
form.filter label { display: flex; flex-direction: column; font-size: .85rem; color: var(--muted); }
dl.cards { display: flex; flex-wrap: wrap; gap: .5rem; margin: .3rem 0; }
dl.cards > div { border: 1px solid var(--line); border-radius: 6px; padding: .3rem .8rem; min-width: 6.5rem; }
dl.cards dt { font-size: .8rem; color: var(--muted); }
dl.cards dd { margin: 0; font-size: 1.5rem; font-weight: 600; }
dl.cards.small dd { font-size: 1.1rem; }
div.allow dd { color: #2e7d32; } div.challenge dd { color: #b26a00; } div.block dd { color: #c62828; }
td.allow { color: #2e7d32; } td.challenge { color: #b26a00; } td.block { color: #c62828; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
svg.chart { width: 100%; max-width: 760px; height: auto; display: block; }
svg.bar { width: 100%; height: 12px; display: block; }
.legend span { margin-right: 1rem; font-size: .85rem; white-space: nowrap; }
.big { font-size: 2rem; font-weight: 600; margin: .2rem 0 0; }
.note, p.docs { color: var(--muted); font-size: .85rem; }
.error { color: #c62828; }
table.transitions { width: auto; margin: .5rem 0; } table.transitions td { text-align: right; }
td.changed { font-weight: 700; background: #fff4e5; }
form.what-if label { margin-right: .75rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
td.t { white-space: nowrap; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
code, pre { font-family: ui-monospace, monospace; font-size: .85rem; overflow-wrap: anywhere; }
pre { white-space: pre-wrap; background: #f1f3f4; padding: .5rem; }
img { max-width: 100%; height: auto; }
"#;

/// `/console/docs`: the guide as a page.
pub(super) fn page() -> Response<Vec<u8>> {
    super::page(StatusCode::OK, "Console guide", &render(GUIDE), "")
}

/// The id a heading gets: lower case, words joined by `-` (as GitHub makes them).
pub(super) fn anchor(heading: &str) -> String {
    let mut out = String::new();
    for c in heading.trim().chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if c == ' ' || c == '-' {
            out.push('-');
        }
    }
    out
}

/// Enough Markdown for the guide: headings, paragraphs, bulleted and numbered lists (with
/// indented continuation lines), fenced code, `code` **bold** and *emphasis*. Images are left out (the
/// screenshots live in the repository, not the binary). Everything is escaped: the guide is
/// ours, but nothing is written into a page unescaped.
fn render(markdown: &str) -> String {
    let mut out = Blocks::default();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            out.flush();
            out.html.push_str(if in_code { "</pre>" } else { "<pre>" });
            in_code = !in_code;
        } else if in_code {
            out.html.push_str(&escape_html(line));
            out.html.push('\n');
        } else if let Some(level) =
            (1..=4).find(|&n| line.starts_with(&format!("{} ", "#".repeat(n))))
        {
            out.flush();
            let text = &line[level + 1..];
            let level = (level + 1).min(4);
            let _ = write!(
                out.html,
                "<h{level} id=\"{}\">{}</h{level}>",
                anchor(text),
                inline(text)
            );
        } else if let Some((ordered, text)) = list_item(line) {
            out.flush_paragraph();
            if out.list.as_ref().is_some_and(|(o, _)| *o != ordered) {
                out.flush();
            }
            out.list
                .get_or_insert((ordered, Vec::new()))
                .1
                .push(text.to_string());
        } else if line.trim().is_empty() {
            out.flush_paragraph();
        } else if line.starts_with(' ') && out.list.is_some() {
            if let Some(item) = out.list.as_mut().and_then(|(_, items)| items.last_mut()) {
                item.push(' ');
                item.push_str(line.trim());
            }
        } else if !line.trim_start().starts_with("![") {
            if out.list.is_some() {
                out.flush();
            }
            out.paragraph.push(line.trim().to_string());
        }
    }
    out.flush();
    if in_code {
        out.html.push_str("</pre>");
    }
    out.html
}

/// What `render` has open: a paragraph's lines, a list's items.
#[derive(Default)]
struct Blocks {
    html: String,
    paragraph: Vec<String>,
    /// Whether numbered, and the items.
    list: Option<(bool, Vec<String>)>,
}

impl Blocks {
    fn flush_paragraph(&mut self) {
        if !self.paragraph.is_empty() {
            let _ = write!(self.html, "<p>{}</p>", inline(&self.paragraph.join(" ")));
            self.paragraph.clear();
        }
    }

    fn flush(&mut self) {
        self.flush_paragraph();
        if let Some((ordered, items)) = self.list.take() {
            let tag = if ordered { "ol" } else { "ul" };
            let _ = write!(self.html, "<{tag}>");
            for item in items {
                let _ = write!(self.html, "<li>{}</li>", inline(&item));
            }
            let _ = write!(self.html, "</{tag}>");
        }
    }
}

/// `- item`, `* item` or `3. item`: whether numbered, and the text.
fn list_item(line: &str) -> Option<(bool, &str)> {
    if let Some(text) = line.strip_prefix("- ").or_else(|| line.strip_prefix("* ")) {
        return Some((false, text));
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0 && digits < 4)
        .then(|| line[digits..].strip_prefix(". "))
        .flatten()
        .map(|text| (true, text))
}

/// `code` spans, **bold** and *emphasis*; everything else escaped as text.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", escape_html(part));
            continue;
        }
        for (j, piece) in part.split("**").enumerate() {
            let (open, close) = if j % 2 == 1 {
                ("<strong>", "</strong>")
            } else {
                ("", "")
            };
            out.push_str(open);
            for (k, words) in piece.split('*').enumerate() {
                if k % 2 == 1 {
                    let _ = write!(out, "<em>{}</em>", escape_html(words));
                } else {
                    out.push_str(&escape_html(words));
                }
            }
            out.push_str(close);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_a_page_links_is_in_the_guide() {
        let html = render(GUIDE);
        for anchor in ["overview", "user", "incident", "store-and-audit-health"] {
            assert!(
                html.contains(&format!("id=\"{anchor}\"")),
                "docs/console.md needs a heading for #{anchor}"
            );
        }
        assert!(!html.contains("<script"));
    }

    #[test]
    fn markdown_is_escaped() {
        let html = render("# A <b>\n\nsome `<i>` text <x>\n\n- item & more\n");
        assert_eq!(html, "<h2 id=\"a-b\">A &lt;b&gt;</h2><p>some <code>&lt;i&gt;</code> text &lt;x&gt;</p><ul><li>item &amp; more</li></ul>");
        let html = render("1. **one** `a**b`\n   goes *on*\n2. two\n\nafter\n");
        assert_eq!(html, "<ol><li><strong>one</strong> <code>a**b</code> goes <em>on</em></li><li>two</li></ol><p>after</p>");
    }
}
