//! Error-rate metrics: equal error rate, ROC/DET points and AUC. Higher score = riskier; a
//! non-finite score counts as the riskiest.

fn clean(v: f64) -> f64 {
    if v.is_nan() {
        f64::INFINITY
    } else {
        v
    }
}

/// (false accept rate, false reject rate) at every distinct threshold, starting from "accept
/// nothing risky" (FAR 0, FRR 1). A sample is accepted when its score is ≤ the threshold.
pub(crate) fn roc(genuine: &[f64], impostor: &[f64]) -> Vec<(f64, f64)> {
    let mut all: Vec<(f64, bool)> = genuine
        .iter()
        .map(|&g| (clean(g), true))
        .chain(impostor.iter().map(|&i| (clean(i), false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ng, ni) = (genuine.len().max(1) as f64, impostor.len().max(1) as f64);
    let mut points = vec![(0.0, 1.0)];
    let (mut acc_g, mut acc_i) = (0usize, 0usize);
    let mut i = 0;
    while i < all.len() {
        let t = all[i].0;
        while i < all.len() && all[i].0 == t {
            if all[i].1 {
                acc_g += 1;
            } else {
                acc_i += 1;
            }
            i += 1;
        }
        points.push((acc_i as f64 / ni, 1.0 - acc_g as f64 / ng));
    }
    points
}

/// Equal error rate: where FAR and FRR cross, interpolated between adjacent thresholds.
pub(crate) fn eer(genuine: &[f64], impostor: &[f64]) -> f64 {
    let pts = roc(genuine, impostor);
    for w in pts.windows(2) {
        let (far0, frr0) = w[0];
        let (far1, frr1) = w[1];
        let (d0, d1) = (frr0 - far0, frr1 - far1);
        if d0 > 0.0 && d1 <= 0.0 {
            let a = d0 / (d0 - d1);
            return far0 + a * (far1 - far0);
        }
    }
    0.0
}

/// Area under the ROC curve: the probability that an impostor scores riskier than a genuine
/// sample (ties count half).
pub(crate) fn auc(genuine: &[f64], impostor: &[f64]) -> f64 {
    let mut g: Vec<f64> = genuine.iter().map(|&v| clean(v)).collect();
    g.sort_by(f64::total_cmp);
    let mut wins = 0.0;
    for &i in impostor {
        let i = clean(i);
        let below = g.partition_point(|&x| x < i);
        let not_above = g.partition_point(|&x| x <= i);
        wins += below as f64 + 0.5 * (not_above - below) as f64;
    }
    wins / (genuine.len().max(1) * impostor.len().max(1)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_scores_have_zero_eer_and_unit_auc() {
        assert_eq!(eer(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(auc(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
    }

    #[test]
    fn identical_scores_have_half_eer_and_half_auc() {
        assert!((eer(&[1.0, 1.0], &[1.0, 1.0]) - 0.5).abs() < 1e-12);
        assert!((auc(&[1.0, 1.0], &[1.0, 1.0]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn a_known_overlap_gives_the_hand_computed_eer() {
        // genuine 1 2 3 4, impostor 3.5 5 6 7: at t = 3.5, FAR 1/4, FRR 1/4.
        let e = eer(&[1.0, 2.0, 3.0, 4.0], &[3.5, 5.0, 6.0, 7.0]);
        assert!((e - 0.25).abs() < 1e-12, "{e}");
        assert!((auc(&[1.0, 2.0, 3.0, 4.0], &[3.5, 5.0, 6.0, 7.0]) - 15.0 / 16.0).abs() < 1e-12);
    }
}
