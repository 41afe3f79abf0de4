//! The Balabit Mouse Dynamics Challenge data: read straight from its tarball (streamed, never
//! unpacked into the repository), cut into mouse actions, each action turned into the
//! [`Telemetry`] a login page would have captured and run through the login-time
//! `features` → `model` code.
//!
//! **Actions.** A session's events are cut at pauses longer than [`PAUSE_S`] and after every
//! click's release (the README's segmentation); an action needs [`MIN_MOVES`] pointer positions.
//! Moves and drags become the mouse trace, presses and releases the clicks.
//!
//! **Protocol.** Per user, the detectors are fitted on the segments of that user's
//! `training_files`; each labelled test session (`public_labels.csv`) claims its folder's user
//! and is scored as the mean of its first K segments' scores (K = 5 and 20: a login page yields
//! only a few actions); AUC and EER pooled over the labelled sessions. The global forest,
//! population prior and fusion for user u are trained on the other nine users only.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context};

use super::{metrics, Label, Scored, DETECTORS};
use crate::features::{self, FeatureVector};
use crate::model::{assess, GlobalModel, TrainingUser, UserModel};
use crate::telemetry::{Click, ClickTarget, MouseMove, Telemetry, MAX_CLICKS, MAX_MOVES};

/// A pause longer than this ends an action (seconds).
pub(crate) const PAUSE_S: f64 = 1.0;
/// Fewest pointer positions for an action.
pub(crate) const MIN_MOVES: usize = 4;
/// Test segments kept per session (the largest K reported).
pub(crate) const MAX_K: usize = 20;
/// Training segments per user used for the global model (enrol / later).
pub(crate) const GLOBAL_ENROL: usize = 400;
pub(crate) const GLOBAL_LATER: usize = 120;

/// One user's data.
#[derive(Default)]
pub struct User {
    pub training: Vec<FeatureVector>,
    /// Test session name → its first [`MAX_K`] segments.
    pub tests: Vec<(String, Vec<FeatureVector>)>,
}

/// The dataset, as feature vectors.
pub struct Dataset {
    pub users: Vec<(String, User)>,
    /// Session name → illegal?
    pub labels: HashMap<String, bool>,
}

/// One action in progress.
#[derive(Default)]
struct Segment {
    moves: Vec<MouseMove>,
    clicks: Vec<Click>,
}

impl Segment {
    fn telemetry(&self) -> Option<Telemetry> {
        if self.moves.len() < MIN_MOVES {
            return None;
        }
        let t0 = self.moves[0]
            .t
            .min(self.clicks.first().map_or(f64::INFINITY, |c| c.t));
        let last_click = self
            .clicks
            .last()
            .map_or(0.0, |c| c.t + c.hold.unwrap_or(0.0));
        let t1 = self.moves[self.moves.len() - 1].t.max(last_click);
        Some(Telemetry {
            t0,
            t1,
            visible_ms: t1 - t0,
            viewport: (0.0, 0.0),
            untrusted: 0,
            truncated: 0,
            handovers: 1,
            keys_seen: 0,
            fields: Vec::new(),
            focus: Vec::new(),
            keys: Vec::new(),
            moves: self.moves.clone(),
            move_sampling: (self.moves.len() as u64, 1),
            pointer: Vec::new(),
            clicks: self.clicks.clone(),
            window: Vec::new(),
        })
    }
}

/// Cuts one session file into actions and extracts each action's features (at most `limit`).
pub(crate) fn session_features(
    reader: impl Read,
    limit: usize,
) -> anyhow::Result<Vec<FeatureVector>> {
    Ok(session_actions(reader, limit)?
        .iter()
        .map(features::extract)
        .collect())
}

/// Cuts one session file into actions, each as the telemetry a login page would have captured
/// (at most `limit`).
pub(crate) fn session_actions(reader: impl Read, limit: usize) -> anyhow::Result<Vec<Telemetry>> {
    let mut out = Vec::new();
    let mut seg = Segment::default();
    let mut prev_t = f64::NEG_INFINITY;
    let flush = |seg: &mut Segment, out: &mut Vec<Telemetry>| {
        if let Some(t) = seg.telemetry() {
            out.push(t);
        }
        *seg = Segment::default();
    };
    for line in BufReader::new(reader).lines().skip(1) {
        if out.len() >= limit {
            break;
        }
        let line = line?;
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() != 6 {
            continue;
        }
        let (Ok(t), Ok(x), Ok(y)) = (
            cols[1].parse::<f64>(),
            cols[4].parse::<f64>(),
            cols[5].parse::<f64>(),
        ) else {
            continue;
        };
        if !(t.is_finite() && x.is_finite() && y.is_finite()) {
            continue;
        }
        let t = (t * 1000.0).max(prev_t); // ms, monotone
        let clamp = |v: f64| v.clamp(-99_999.0, 99_999.0);
        if t - prev_t > PAUSE_S * 1000.0 {
            flush(&mut seg, &mut out);
        }
        prev_t = t;
        match (cols[2], cols[3]) {
            (_, "Move") | (_, "Drag") => {
                if seg.moves.len() >= MAX_MOVES {
                    flush(&mut seg, &mut out);
                }
                seg.moves.push(MouseMove {
                    t,
                    x: clamp(x),
                    y: clamp(y),
                });
            }
            (button @ ("Left" | "Right"), "Pressed") if seg.clicks.len() < MAX_CLICKS => {
                seg.clicks.push(Click {
                    t,
                    button: if button == "Left" { 0 } else { 2 },
                    target: ClickTarget::Other,
                    x: clamp(x),
                    y: clamp(y),
                    hold: None,
                });
            }
            (_, "Released") => {
                if let Some(c) = seg.clicks.last_mut() {
                    if c.hold.is_none() {
                        c.hold = Some(t - c.t);
                    }
                }
                flush(&mut seg, &mut out);
            }
            _ => {}
        }
    }
    if out.len() < limit {
        flush(&mut seg, &mut out);
    }
    Ok(out)
}

/// One user's data with the test sessions' actions kept as telemetry (`eval attacks`).
#[derive(Default)]
pub struct ActionsUser {
    pub training: Vec<FeatureVector>,
    /// The most recent training actions (the last [`KEPT_ACTIONS`]).
    pub training_actions: Vec<Telemetry>,
    /// Test session name → its first [`MAX_K`] actions.
    pub tests: Vec<(String, Vec<Telemetry>)>,
}

/// Training actions kept as telemetry per user.
pub(crate) const KEPT_ACTIONS: usize = 50;

/// The dataset with actions as telemetry.
pub struct ActionsDataset {
    pub users: Vec<(String, ActionsUser)>,
    pub labels: HashMap<String, bool>,
}

/// What a path in the data set is.
enum Entry<'a> {
    Labels,
    Training(&'a str),
    Test(&'a str, &'a str),
}

fn entry(path: &str) -> Option<Entry<'_>> {
    let parts: Vec<&str> = path.trim_start_matches("./").split('/').collect();
    match parts.as_slice() {
        [_, "public_labels.csv"] => Some(Entry::Labels),
        [_, "training_files", user, session] if session.starts_with("session_") => {
            Some(Entry::Training(user))
        }
        [_, "test_files", user, session] if session.starts_with("session_") => {
            Some(Entry::Test(user, session))
        }
        _ => None,
    }
}

fn read_labels(reader: &mut dyn Read, labels: &mut HashMap<String, bool>) -> anyhow::Result<()> {
    let mut text = String::new();
    reader.read_to_string(&mut text)?;
    for line in text.lines().skip(1) {
        if let Some((name, illegal)) = line.split_once(',') {
            labels.insert(name.trim().to_string(), illegal.trim() == "1");
        }
    }
    Ok(())
}

/// Streams the tarball (`DIR/balabit-mouse-dynamics.tar.gz`) or reads an unpacked `DIR/balabit`.
pub fn load(dir: &Path) -> anyhow::Result<Dataset> {
    let mut users: HashMap<String, User> = HashMap::new();
    let mut labels = HashMap::new();
    walk(dir, &mut |path, reader| {
        match entry(path) {
            Some(Entry::Labels) => read_labels(reader, &mut labels)?,
            Some(Entry::Training(user)) => {
                let f = session_features(reader, usize::MAX)?;
                users
                    .entry(user.to_string())
                    .or_default()
                    .training
                    .extend(f);
            }
            Some(Entry::Test(user, session)) => {
                let f = session_features(reader, MAX_K)?;
                users
                    .entry(user.to_string())
                    .or_default()
                    .tests
                    .push((session.to_string(), f));
            }
            None => {}
        }
        Ok(())
    })?;
    let mut users: Vec<(String, User)> = users.into_iter().collect();
    users.sort_by(|a, b| a.0.cmp(&b.0));
    if labels.is_empty() || users.is_empty() {
        bail!("{}: no labelled sessions or users found", dir.display());
    }
    Ok(Dataset { users, labels })
}

/// Like [`load`], keeping actions as telemetry: the test sessions' and each user's most
/// recent training actions.
pub(crate) fn load_actions(dir: &Path) -> anyhow::Result<ActionsDataset> {
    let mut users: HashMap<String, ActionsUser> = HashMap::new();
    let mut labels = HashMap::new();
    walk(dir, &mut |path, reader| {
        match entry(path) {
            Some(Entry::Labels) => read_labels(reader, &mut labels)?,
            Some(Entry::Training(user)) => {
                let actions = session_actions(reader, usize::MAX)?;
                let u = users.entry(user.to_string()).or_default();
                u.training.extend(actions.iter().map(features::extract));
                u.training_actions.extend(actions);
                let extra = u.training_actions.len().saturating_sub(KEPT_ACTIONS);
                u.training_actions.drain(..extra);
            }
            Some(Entry::Test(user, session)) => {
                let actions = session_actions(reader, MAX_K)?;
                users
                    .entry(user.to_string())
                    .or_default()
                    .tests
                    .push((session.to_string(), actions));
            }
            None => {}
        }
        Ok(())
    })?;
    let mut users: Vec<(String, ActionsUser)> = users.into_iter().collect();
    users.sort_by(|a, b| a.0.cmp(&b.0));
    if labels.is_empty() || users.is_empty() {
        bail!("{}: no labelled sessions or users found", dir.display());
    }
    Ok(ActionsDataset { users, labels })
}

type Take<'a> = dyn FnMut(&str, &mut dyn Read) -> anyhow::Result<()> + 'a;

/// Calls `take` with every file of the data set: from the tarball, streamed, or from an
/// unpacked `DIR/balabit`.
fn walk(dir: &Path, take: &mut Take<'_>) -> anyhow::Result<()> {
    let tarball = dir.join("balabit-mouse-dynamics.tar.gz");
    if tarball.is_file() {
        let file = std::fs::File::open(&tarball)
            .with_context(|| format!("opening {}", tarball.display()))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        for entry in archive.entries()? {
            let mut entry = entry?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path()?.to_string_lossy().into_owned();
            take(&path, &mut entry).with_context(|| format!("reading {path} in the tarball"))?;
        }
    } else {
        let root = dir.join("balabit");
        if !root.is_dir() {
            bail!(
                "{}: neither balabit-mouse-dynamics.tar.gz nor balabit/ found (pass --data DIR)",
                dir.display()
            );
        }
        let mut paths = vec![root.join("public_labels.csv")];
        for kind in ["training_files", "test_files"] {
            for user in std::fs::read_dir(root.join(kind))?.flatten() {
                for s in std::fs::read_dir(user.path())?.flatten() {
                    paths.push(s.path());
                }
            }
        }
        for p in paths {
            let rel = p
                .strip_prefix(dir)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            let mut f =
                std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
            take(&rel, &mut f)?;
        }
    }
    Ok(())
}

/// Scores of every labelled test session at each K: `result[k_index]` for `ks`.
pub(crate) fn evaluate(
    data: &Dataset,
    ks: &[usize],
    seed: u64,
) -> anyhow::Result<Vec<Vec<Scored>>> {
    let mut per_k: Vec<Vec<Scored>> = vec![Vec::new(); ks.len()];
    let bar = super::progress(data.users.len() as u64, "users");
    for (u, (name, user)) in data.users.iter().enumerate() {
        let training: Vec<TrainingUser<'_>> = data
            .users
            .iter()
            .enumerate()
            .filter(|(o, _)| *o != u)
            .map(|(_, (_, other))| {
                let n = other.training.len();
                let enrol = (n * 3 / 4).min(GLOBAL_ENROL);
                TrainingUser {
                    enrol: &other.training[..enrol],
                    later: &other.training[enrol..n.min(enrol + GLOBAL_LATER)],
                }
            })
            .collect();
        let global = GlobalModel::train_with(&training, seed.wrapping_add(u as u64), true);
        // The contrast forest's negatives: the other users' training actions (never test data).
        let negatives: Vec<&FeatureVector> = data
            .users
            .iter()
            .enumerate()
            .filter(|(o, _)| *o != u)
            .flat_map(|(_, (_, other))| other.training.iter())
            .collect();
        let model = UserModel::fit_contrasted(&user.training, &global.population, &negatives, seed);
        for (session, segments) in &user.tests {
            let Some(&illegal) = data.labels.get(session) else {
                continue;
            };
            let assessed: Vec<_> = segments
                .iter()
                .map(|fv| assess(&model, &global, fv))
                .collect();
            for (ki, &k) in ks.iter().enumerate() {
                let first = &assessed[..assessed.len().min(k)];
                let mut scores = [f64::NAN; 6];
                if !first.is_empty() {
                    let n = first.len() as f64;
                    let mean = |f: &dyn Fn(&crate::model::Assessment) -> f64| {
                        first.iter().map(f).sum::<f64>() / n
                    };
                    scores = [
                        mean(&|a| a.scores.manhattan),
                        mean(&|a| a.scores.shrunk_z),
                        mean(&|a| a.scores.nearest),
                        mean(&|a| a.scores.contrast),
                        mean(&|a| a.scores.forest),
                        mean(&|a| super::risk(a)),
                    ];
                }
                per_k[ki].push(Scored {
                    subject: name.clone(),
                    sample: session.clone(),
                    label: if illegal {
                        Label::Impostor
                    } else {
                        Label::Genuine
                    },
                    scores,
                });
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(per_k)
}

/// Pooled AUC and EER per detector at each K.
pub(crate) fn summary(data: &Dataset, ks: &[usize], per_k: &[Vec<Scored>]) -> String {
    let sessions = per_k.first().map_or(0, Vec::len);
    let mut s = format!(
        "balabit: {} users, {} labelled sessions; pooled over sessions, mean of the first K actions\n",
        data.users.len(),
        sessions
    );
    s.push_str(&format!("{:<12}", "detector"));
    for k in ks {
        s.push_str(&format!(
            " {:>8} {:>8}",
            format!("AUC@{k}"),
            format!("EER@{k}")
        ));
    }
    s.push('\n');
    for (d, det) in DETECTORS.iter().enumerate() {
        s.push_str(&format!("{det:<12}"));
        for rows in per_k {
            if super::keystrokes::unused(rows, d) {
                s.push_str(&format!(" {:>8} {:>8}", "-", "-"));
                continue;
            }
            let (g, i) = super::keystrokes::split(rows.iter(), d);
            s.push_str(&format!(
                " {:>8.4} {:>8.4}",
                metrics::auc(&g, &i),
                metrics::eer(&g, &i)
            ));
        }
        s.push('\n');
    }
    s
}
