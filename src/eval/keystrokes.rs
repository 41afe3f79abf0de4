//! Fixed-text keystroke datasets: Keystroke100 (`userN/latency.txt`) and CMU
//! (`DSL-StrongPasswordData.csv`, Killourhy & Maxion 2009).
//!
//! **Adapter.** A dataset row becomes the [`FeatureVector`] a login with that password rhythm
//! would produce: the password's per-position press-to-press latencies (Keystroke100 has only
//! those; CMU adds per-key hold times as per-position dwell), marked as typed straight through.
//! The named features (mouse, aggregates, navigation…) are left unknown (`NaN`), so the models
//! compare exactly the fixed-text part — the same code path as a login whose password length
//! matches the user's usual length.
//!
//! **Protocol** (the data README, after Killourhy & Maxion): per user, enrol on the first
//! `train` samples; genuine tests are the user's remaining samples; impostor tests are the first
//! `impostor` samples of every other user; EER per user, averaged. The global forest, the
//! population prior and the fusion are trained per subject fold on the other folds' users only.

use std::path::Path;

use anyhow::{bail, Context};

use super::{metrics, Label, Scored, DETECTORS};
use crate::features::{FeatureVector, PasswordRhythm};
use crate::model::{assess, GlobalModel, TrainingUser, UserModel};

/// One subject's samples in dataset order.
pub struct Subject {
    pub name: String,
    pub samples: Vec<FeatureVector>,
}

/// The protocol's split.
#[derive(Debug, Clone, Copy)]
pub struct Protocol {
    pub train: usize,
    pub impostor: usize,
    pub folds: usize,
}

impl Protocol {
    pub(crate) const KEYSTROKE100: Protocol = Protocol {
        train: 5,
        impostor: 5,
        folds: 5,
    };
    pub const CMU: Protocol = Protocol {
        train: 200,
        impostor: 5,
        folds: 5,
    };
}

/// The adapter: a fixed-text sample as a login's feature vector.
pub(crate) fn sample_vector(press_press: &[f64], dwell: Option<&[f64]>) -> FeatureVector {
    let mut fv = FeatureVector::empty();
    let len = press_press.len() + 1;
    fv.password = PasswordRhythm {
        press_press: press_press.to_vec(),
        dwell: match dwell {
            Some(d) if d.len() == len => d.to_vec(),
            _ => vec![f64::NAN; len],
        },
        clean: true,
    };
    fv
}

fn parse_row(line: &str, sep: char, what: &str) -> anyhow::Result<Vec<f64>> {
    line.split(sep)
        .map(|c| {
            let v: f64 = c
                .trim()
                .parse()
                .with_context(|| format!("{what}: not a number: {c:?}"))?;
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                bail!("{what}: not a non-negative time: {c:?}")
            }
        })
        .collect()
}

/// Loads `DIR/userN/latency.txt` (tab-separated latencies in ms), users in numeric order.
pub(crate) fn load_keystroke100(dir: &Path) -> anyhow::Result<Vec<Subject>> {
    let mut users: Vec<(u32, String)> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {} (pass --data DIR)", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("user")?.parse().ok()?;
            Some((n, name))
        })
        .collect();
    users.sort();
    if users.is_empty() {
        bail!(
            "{}: no userN directories (is this keystroke100?)",
            dir.display()
        );
    }
    users
        .into_iter()
        .map(|(_, name)| {
            let path = dir.join(&name).join("latency.txt");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let samples = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| parse_row(l, '\t', &path.display().to_string()))
                .map(|r| r.map(|pp| sample_vector(&pp, None)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(Subject { name, samples })
        })
        .collect()
}

/// Loads the CMU layout: `subject,sessionIndex,rep,H.k,DD.k.l,UD.k.l,…,H.Return`; hold times
/// become per-position dwell, DD columns press-to-press latencies (seconds → ms).
pub(crate) fn load_cmu(file: &Path) -> anyhow::Result<Vec<Subject>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let h: Vec<usize> = (0..header.len())
        .filter(|&i| header[i].starts_with("H."))
        .collect();
    let dd: Vec<usize> = (0..header.len())
        .filter(|&i| header[i].starts_with("DD."))
        .collect();
    if header.first() != Some(&"subject") || h.len() < 2 || dd.len() + 1 != h.len() {
        bail!(
            "{}: not the CMU DSL-StrongPasswordData layout",
            file.display()
        );
    }
    let mut subjects: Vec<Subject> = Vec::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() != header.len() {
            bail!(
                "{}:{}: expected {} columns",
                file.display(),
                n + 2,
                header.len()
            );
        }
        let what = format!("{}:{}", file.display(), n + 2);
        let get = |idx: &[usize]| -> anyhow::Result<Vec<f64>> {
            let joined: Vec<&str> = idx.iter().map(|&i| cols[i]).collect();
            Ok(parse_row(&joined.join(","), ',', &what)?
                .into_iter()
                .map(|s| s * 1000.0)
                .collect())
        };
        let fv = sample_vector(&get(&dd)?, Some(&get(&h)?));
        match subjects.last_mut() {
            Some(s) if s.name == cols[0] => s.samples.push(fv),
            _ => subjects.push(Subject {
                name: cols[0].to_string(),
                samples: vec![fv],
            }),
        }
    }
    Ok(subjects)
}

/// Scores every genuine and impostor sample of the protocol with every detector.
pub(crate) fn evaluate(
    subjects: &[Subject],
    p: Protocol,
    seed: u64,
) -> anyhow::Result<Vec<Scored>> {
    if subjects.len() < 3 {
        bail!("at least 3 subjects are needed (found {})", subjects.len());
    }
    if let Some(s) = subjects.iter().find(|s| s.samples.len() <= p.train) {
        bail!(
            "{} has {} samples; the protocol enrols on {}",
            s.name,
            s.samples.len(),
            p.train
        );
    }
    let folds = p.folds.clamp(2, subjects.len());
    let bar = super::progress(subjects.len() as u64, "subjects");
    let mut out = Vec::new();
    for fold in 0..folds {
        let training: Vec<TrainingUser<'_>> = subjects
            .iter()
            .enumerate()
            .filter(|(i, _)| i % folds != fold)
            .map(|(_, s)| TrainingUser {
                enrol: &s.samples[..p.train],
                later: &s.samples[p.train..],
            })
            .collect();
        let global = GlobalModel::train(&training, seed.wrapping_add(fold as u64));
        for (u, subject) in subjects
            .iter()
            .enumerate()
            .filter(|(i, _)| i % folds == fold)
        {
            let user = UserModel::fit(&subject.samples[..p.train], &global.population);
            for (j, fv) in subject.samples.iter().enumerate().skip(p.train) {
                let a = assess(&user, &global, fv);
                out.push(Scored::from_assessment(
                    subject.name.clone(),
                    format!("{}/{}", subject.name, j + 1),
                    Label::Genuine,
                    &a,
                ));
            }
            for (o, other) in subjects.iter().enumerate() {
                if o == u {
                    continue;
                }
                for (j, fv) in other.samples.iter().enumerate().take(p.impostor) {
                    let a = assess(&user, &global, fv);
                    out.push(Scored::from_assessment(
                        subject.name.clone(),
                        format!("{}/{}", other.name, j + 1),
                        Label::Impostor,
                        &a,
                    ));
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Mean over subjects of each detector's per-subject EER (order of [`DETECTORS`]).
pub(crate) fn mean_eer(rows: &[Scored]) -> [f64; 6] {
    let mut subjects: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
    subjects.dedup();
    let mut sum = [0.0; 6];
    for s in &subjects {
        for (d, total) in sum.iter_mut().enumerate() {
            let (g, i) = split(rows.iter().filter(|r| r.subject == *s), d);
            *total += metrics::eer(&g, &i);
        }
    }
    sum.map(|t| t / subjects.len().max(1) as f64)
}

/// Genuine and impostor scores of detector `d`.
pub fn split<'a>(rows: impl Iterator<Item = &'a Scored>, d: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut g, mut i) = (Vec::new(), Vec::new());
    for r in rows {
        match r.label {
            Label::Genuine => g.push(r.scores[d]),
            Label::Impostor => i.push(r.scores[d]),
        }
    }
    (g, i)
}

/// A detector that produced no score at all (e.g. the contrast forest without negatives).
pub(crate) fn unused(rows: &[Scored], d: usize) -> bool {
    rows.iter().all(|r| r.scores[d].is_nan())
}

/// The summary table.
pub(crate) fn summary(name: &str, subjects: usize, rows: &[Scored]) -> String {
    let eers = mean_eer(rows);
    let mut s = format!("{name}: {subjects} subjects, mean per-subject EER\n");
    s.push_str(&format!("{:<12} {:>8}\n", "detector", "EER"));
    for (i, (d, e)) in DETECTORS.iter().zip(eers).enumerate() {
        if unused(rows, i) {
            s.push_str(&format!("{d:<12} {:>8}\n", "-"));
        } else {
            s.push_str(&format!("{d:<12} {e:>8.4}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cmu_loader_reads_a_small_file_in_that_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("DSL-StrongPasswordData.csv");
        let mut text = String::from(
            "subject,sessionIndex,rep,H.period,DD.period.t,UD.period.t,H.t,DD.t.i,UD.t.i,H.i\n",
        );
        for s in ["s002", "s003"] {
            for rep in 1..=3 {
                text.push_str(&format!("{s},1,{rep},0.1,0.2,0.1,0.08,0.25,0.17,0.09\n"));
            }
        }
        std::fs::write(&path, text).unwrap();
        let subjects = load_cmu(&path).unwrap();
        assert_eq!(subjects.len(), 2);
        assert_eq!(subjects[0].samples.len(), 3);
        let pw = &subjects[1].samples[2].password;
        assert_eq!(pw.press_press, vec![200.0, 250.0]);
        assert_eq!(pw.dwell, vec![100.0, 80.0, 90.0]);
    }

    #[test]
    fn the_keystroke100_adapter_fills_only_the_password_rhythm() {
        let fv = sample_vector(&[156.0, 188.0, 266.0], None);
        assert_eq!(fv.password.len(), 4);
        assert!(fv.password.clean);
        assert!(fv.values.iter().all(|v| v.is_nan()));
    }
}
