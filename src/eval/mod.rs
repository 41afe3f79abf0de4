//! Evaluation on public data: runs the login-time stages (`features` → `model`) on keystroke
//! and mouse datasets and measures how well genuine and impostor samples are told apart.
//!
//! Owns: the dataset loaders and adapters (`keystrokes`, `mouse`), the protocols of the data
//! READMEs, the error-rate metrics, the score files and the summary. The only module of the
//! scoring stages that does I/O; it reads datasets where they lie and never copies them into
//! the repository. Anything learnt across users is trained with the subject under test left
//! out (subject folds).

pub mod attacks;
pub mod keystrokes;
pub mod metrics;
pub mod mouse;
pub mod plot;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;

/// Label of a scored sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Genuine,
    Impostor,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Genuine => "genuine",
            Label::Impostor => "impostor",
        }
    }
}

/// The detectors every evaluation reports, in table order.
pub(crate) const DETECTORS: &[&str] = &[
    "manhattan",
    "shrunk_z",
    "nearest",
    "contrast",
    "forest",
    "fused",
];

/// One scored sample: the claimed subject, the sample's id, its label and one score per
/// detector (same order as [`DETECTORS`]; higher = riskier).
#[derive(Debug, Clone)]
pub struct Scored {
    pub subject: String,
    pub sample: String,
    pub label: Label,
    pub scores: [f64; 6],
}

impl Scored {
    pub(crate) fn from_assessment(
        subject: String,
        sample: String,
        label: Label,
        a: &crate::model::Assessment,
    ) -> Self {
        Scored {
            subject,
            sample,
            label,
            scores: [
                a.scores.manhattan,
                a.scores.shrunk_z,
                a.scores.nearest,
                a.scores.contrast,
                a.scores.forest,
                risk(a),
            ],
        }
    }
}

/// The fused risk as the data-set evaluations report it: the model's risk with the floors of
/// the two bot rules the model itself names (as before the policy took the floors over), so
/// that figures stay comparable across versions. The other rules (evidence, replays) are
/// measured by `gaitkeeper eval attacks`.
pub fn risk(a: &crate::model::Assessment) -> f64 {
    let floors = crate::policy::DEFAULT_POLICY.floors;
    let codes = a
        .reasons
        .iter()
        .map(|r| r.code)
        .filter(|c| matches!(*c, "synthetic_input" | "no_input"));
    crate::policy::floored(&floors, a.risk, codes)
}

/// Writes `subject,sample,label,score` files, one per detector: `<out>/<prefix>-<detector>.csv`.
pub(crate) fn write_scores(out: &Path, prefix: &str, rows: &[Scored]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (i, det) in DETECTORS.iter().enumerate() {
        let path = out.join(format!("{prefix}-{det}.csv"));
        let mut w = BufWriter::new(
            File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        writeln!(w, "subject,sample,label,score")?;
        for r in rows {
            writeln!(
                w,
                "{},{},{},{}",
                r.subject,
                r.sample,
                r.label.as_str(),
                r.scores[i]
            )?;
        }
        w.flush()?;
    }
    Ok(())
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// Dataset layouts `eval keystrokes` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeystrokeFormat {
    /// `DIR/userN/latency.txt`.
    Keystroke100,
    /// `DSL-StrongPasswordData.csv` (DIR is the file or its folder).
    Cmu,
}

/// Runs the keystroke evaluation, writes score files and the ROC plot into `out` (and the
/// fused scores to `scores` when given), and returns the summary table.
pub fn run_keystrokes(
    format: KeystrokeFormat,
    data: &Path,
    out: &Path,
    scores: Option<&Path>,
    seed: u64,
) -> anyhow::Result<String> {
    let (name, subjects, protocol) = match format {
        KeystrokeFormat::Keystroke100 => (
            "keystroke100",
            keystrokes::load_keystroke100(data)?,
            keystrokes::Protocol::KEYSTROKE100,
        ),
        KeystrokeFormat::Cmu => {
            let file = if data.is_dir() {
                data.join("DSL-StrongPasswordData.csv")
            } else {
                data.to_path_buf()
            };
            (
                "cmu",
                keystrokes::load_cmu(&file)?,
                keystrokes::Protocol::CMU,
            )
        }
    };
    let rows = keystrokes::evaluate(&subjects, protocol, seed)?;
    write_scores(out, name, &rows)?;
    if let Some(path) = scores {
        let dir = tempdir_for(path)?;
        write_scores(&dir, "tmp", &rows)?;
        std::fs::rename(dir.join("tmp-fused.csv"), path)
            .with_context(|| format!("writing {}", path.display()))?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    let curves: Vec<(String, Vec<(f64, f64)>)> = DETECTORS
        .iter()
        .enumerate()
        .map(|(d, det)| {
            let (g, i) = keystrokes::split(rows.iter(), d);
            (det.to_string(), metrics::roc(&g, &i))
        })
        .collect();
    let svg = plot::roc_svg(&format!("{name}: pooled ROC"), &curves);
    std::fs::write(out.join(format!("{name}-roc.svg")), svg)?;
    Ok(keystrokes::summary(name, subjects.len(), &rows))
}

fn tempdir_for(path: &Path) -> anyhow::Result<std::path::PathBuf> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = parent.join(format!(".gaitkeeper-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The K values `eval mouse` reports.
pub(crate) const MOUSE_KS: &[usize] = &[5, 20];

/// Runs the Balabit evaluation, writes score files (`balabit-k<K>-<detector>.csv`) and the ROC
/// plot into `out`, and returns the summary table.
pub fn run_mouse(data: &Path, out: &Path, seed: u64) -> anyhow::Result<String> {
    let dataset = mouse::load(data)?;
    let per_k = mouse::evaluate(&dataset, MOUSE_KS, seed)?;
    for (k, rows) in MOUSE_KS.iter().zip(&per_k) {
        write_scores(out, &format!("balabit-k{k}"), rows)?;
    }
    if let Some(rows) = per_k.last() {
        let curves: Vec<(String, Vec<(f64, f64)>)> = DETECTORS
            .iter()
            .enumerate()
            .map(|(d, det)| {
                let (g, i) = keystrokes::split(rows.iter(), d);
                (det.to_string(), metrics::roc(&g, &i))
            })
            .collect();
        let k = MOUSE_KS[MOUSE_KS.len() - 1];
        let svg = plot::roc_svg(&format!("balabit, first {k} actions: ROC"), &curves);
        std::fs::write(out.join(format!("balabit-k{k}-roc.svg")), svg)?;
    }
    Ok(mouse::summary(&dataset, MOUSE_KS, &per_k))
}
