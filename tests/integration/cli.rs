//! The `gaitkeeper` command line, run as a new operator would.

use crate::common;

use std::process::Command;

fn check_config(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gk.yaml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(common::binary())
        .arg("check-config")
        .arg(&path)
        .env("GK_TEST_SECRET", common::SECRET)
        .output()
        .unwrap();
    let stderr =
        String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "FILE");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    )
}

const VALID: &str =
    "upstream:\n  address: \"127.0.0.1:3000\"\nsecrets:\n  key: { env: GK_TEST_SECRET }\n";

#[test]
fn check_config_accepts_a_valid_file() {
    let (ok, stdout, stderr) = check_config(VALID);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("OK"));
}

#[test]
fn check_config_reports_a_bad_type_with_line_column_and_key() {
    let (ok, _, stderr) = check_config(&format!("{VALID}server:\n  threads: many\n"));
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "error: FILE:6:12: key `server.threads`: expected a whole number, found `many`"
    );
}

#[test]
fn check_config_reports_an_unknown_key() {
    let (ok, _, stderr) = check_config(&common::edited(
        VALID,
        "upstream:\n",
        "upstream:\n  adress: x\n",
    ));
    assert!(!ok);
    assert!(
        stderr.contains("FILE:2:3: key `upstream.adress`: unknown field `adress`"),
        "{stderr}"
    );
}

#[test]
fn check_config_reports_broken_yaml_with_a_position() {
    let (ok, _, stderr) = check_config("upstream:\n  address: \"127.0.0.1:3000\n  tls: true\n");
    assert!(!ok);
    assert!(stderr.starts_with("error: FILE:"), "{stderr}");
    let position: Vec<&str> = stderr["error: FILE:".len()..].splitn(3, ':').collect();
    assert!(position[0].parse::<u32>().unwrap() >= 2, "{stderr}");
    assert!(position[1].parse::<u32>().is_ok(), "{stderr}");
}

#[test]
fn check_config_says_which_secret_is_missing_without_printing_any() {
    let (ok, _, stderr) = check_config(&common::edited(
        VALID,
        "GK_TEST_SECRET",
        "GK_NOT_SET_ANYWHERE",
    ));
    assert!(!ok);
    assert!(stderr.contains("key `secrets.key`"), "{stderr}");
    assert!(
        stderr.contains("GK_NOT_SET_ANYWHERE is not set"),
        "{stderr}"
    );
}

#[test]
fn check_config_rejects_a_missing_file_clearly() {
    let output = Command::new(common::binary())
        .args(["check-config", "/nonexistent/gk.yaml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/gk.yaml: cannot read the config file"),
        "{stderr}"
    );
}

#[test]
fn config_schema_is_json_schema_of_the_file() {
    let output = Command::new(common::binary())
        .arg("config-schema")
        .output()
        .unwrap();
    assert!(output.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(schema["properties"]["upstream"].is_object());
    assert!(schema["properties"]["apps"].is_object());
    // `upstream` (one app) or `apps` (several): neither is required on its own.
    assert!(schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k == "secrets"));
}

#[test]
fn shipped_example_config_passes_check_config() {
    let output = Command::new(common::binary())
        .arg("check-config")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/gaitkeeper.yaml"
        ))
        .env("GAITKEEPER_SECRET", common::SECRET)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn check_config_and_run_refuse_a_secret_file_others_can_read_and_a_weak_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.key");
    std::fs::write(&secret, common::SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = VALID.replace(
        "{ env: GK_TEST_SECRET }",
        &format!("{{ file: {:?} }}", secret.display().to_string()),
    );
    assert_ne!(text, VALID, "the config names the secret file");
    let (ok, _, stderr) = check_config(&text);
    assert!(!ok);
    assert!(stderr.contains("key `secrets.key`"), "{stderr}");
    assert!(stderr.contains("mode 0644"), "{stderr}");
    assert!(
        stderr.contains(&format!("chmod 600 {}", secret.display())),
        "{stderr}"
    );
    // `run` loads the config the same way: it refuses to start.
    let config = dir.path().join("gk.yaml");
    std::fs::write(&config, &text).unwrap();
    let output = Command::new(common::binary())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("chmod 600"));

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(check_config(&text).0, "private now");
    for weak in ["a".repeat(40), "0123456789abcdef".repeat(3)] {
        std::fs::write(&secret, &weak).unwrap();
        let (ok, _, stderr) = check_config(&text);
        assert!(!ok, "{weak}");
        assert!(stderr.contains("too weak"), "{stderr}");
        assert!(!stderr.contains(&weak), "the secret is never printed");
    }
}
