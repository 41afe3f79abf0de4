use super::*;
use crate::features::{FeatureVector, PasswordRhythm, F};

fn login(speed: f64, pp: &[f64]) -> FeatureVector {
    let mut fv = FeatureVector::empty();
    fv.values[F::MouseSpeedMean as usize] = speed;
    fv.values[F::KeyDwellMean as usize] = 90.0;
    fv.password = PasswordRhythm {
        press_press: pp.to_vec(),
        dwell: vec![80.0; pp.len() + 1],
        clean: true,
    };
    fv
}

fn enrolled() -> Vec<FeatureVector> {
    (0..6)
        .map(|i| {
            login(
                400.0 + 10.0 * f64::from(i),
                &[150.0 + f64::from(i), 200.0, 180.0],
            )
        })
        .collect()
}

#[test]
fn the_users_own_rhythm_scores_lower_than_a_strangers() {
    let user = UserModel::fit(&enrolled(), &Population::neutral());
    assert_eq!(user.layout.password_len, 4);
    let global = GlobalModel::untrained();
    let own = assess(&user, &global, &login(420.0, &[152.0, 200.0, 181.0]));
    let other = assess(&user, &global, &login(1500.0, &[400.0, 90.0, 420.0]));
    assert!(own.risk < other.risk, "{own:?} {other:?}");
    assert!(other.scores.manhattan > own.scores.manhattan);
    assert!((0.0..=1.0).contains(&other.risk));
    assert!(other
        .reasons
        .iter()
        .any(|r| r.code == "mouse_speed_out_of_range" && r.value > 1400.0 && r.usual.1 < 1500.0));
}

#[test]
fn a_mistyped_password_is_compared_on_aggregates_only() {
    let user = UserModel::fit(&enrolled(), &Population::neutral());
    let mut fv = login(420.0, &[150.0, 200.0]);
    fv.password.clean = false;
    let a = assess(&user, &GlobalModel::untrained(), &fv);
    assert!(a.scores.manhattan.is_finite());
}

#[test]
fn synthetic_input_is_named_and_the_policy_floors_it_high() {
    let user = UserModel::fit(&enrolled(), &Population::neutral());
    let mut fv = login(420.0, &[152.0, 200.0, 181.0]);
    fv.values[F::BotSynthetic as usize] = 1.0;
    let a = assess(&user, &GlobalModel::untrained(), &fv);
    assert!(a.reasons.iter().any(|r| r.code == "synthetic_input"));
    let floors = crate::policy::DEFAULT_POLICY.floors;
    let risk = crate::policy::floored(&floors, a.risk, a.reasons.iter().map(|r| r.code));
    assert!(risk >= floors.synthetic_input);
}

#[test]
fn a_copy_of_a_kept_login_is_a_replayed_pattern_and_a_fresh_one_is_not() {
    let logins = enrolled();
    let user = UserModel::fit(&logins, &Population::neutral());
    let replayed = logins.last().unwrap().clone();
    let a = assess(&user, &GlobalModel::untrained(), &replayed);
    assert!(
        a.reasons.iter().any(|r| r.code == "replayed_pattern"),
        "{:?}",
        a.reasons
    );
    assert!(user.copies(&replayed));
    let fresh = login(431.0, &[161.0, 187.0, 210.0]);
    let a = assess(&user, &GlobalModel::untrained(), &fresh);
    assert!(
        !a.reasons.iter().any(|r| r.code == "replayed_pattern"),
        "{:?}",
        a.reasons
    );
}

#[test]
fn a_user_model_is_small_when_serialised() {
    let logins: Vec<FeatureVector> = (0..50)
        .map(|i| login(400.0 + f64::from(i), &[150.0; 9]))
        .collect();
    let user = UserModel::fit(&logins, &Population::neutral());
    let json = serde_json::to_vec(&user).unwrap();
    assert!(json.len() <= 16 * 1024, "{} bytes", json.len());
}

#[test]
fn the_global_model_trains_and_scores_without_panicking() {
    let users: Vec<Vec<FeatureVector>> = (0..8)
        .map(|u| {
            (0..10)
                .map(|i| {
                    login(
                        300.0 + 100.0 * f64::from(u) + f64::from(i),
                        &[100.0 + 30.0 * f64::from(u), 200.0, 150.0],
                    )
                })
                .collect()
        })
        .collect();
    let training: Vec<TrainingUser<'_>> = users
        .iter()
        .map(|l| TrainingUser {
            enrol: &l[..5],
            later: &l[5..],
        })
        .collect();
    let global = GlobalModel::train(&training, 7);
    assert!(global.forest.is_some());
    let user = UserModel::fit(&users[0][..5], &global.population);
    let a = assess(&user, &global, &users[0][6]);
    let b = assess(&user, &global, &users[5][6]);
    assert!(a.risk < b.risk, "{a:?} {b:?}");
}
