use super::*;

const SECRET_ENV: &str = "GK_UNIT_TEST_SECRET";

fn with_secret() {
    // Tests in this module all set the same value, so concurrent setting is harmless.
    unsafe { std::env::set_var(SECRET_ENV, "unit-test-secret-0123456789abcdefghij") };
}

fn minimal() -> String {
    format!("upstream:\n  address: \"127.0.0.1:3000\"\nsecrets:\n  key: {{ env: {SECRET_ENV} }}\n")
}

fn error_of(text: &str) -> (u64, u64, String, String) {
    with_secret();
    match Config::parse(text, "test.yaml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(ConfigError::Invalid {
            line,
            column,
            key,
            message,
            ..
        }) => (line, column, key, message),
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[test]
fn minimal_config_gets_sensible_defaults() {
    with_secret();
    let config = Config::parse(&minimal(), "test.yaml").unwrap();
    assert_eq!(config.listen[0].address.to_string(), "0.0.0.0:8080");
    assert!(config.listen[0].tls.is_none());
    assert!(config.server.trusted_proxies.is_empty());
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(config.server.reserved_prefix.0, "/__gk/");
    assert_eq!(config.apps[0].upstream.host_header, HostHeader::Preserve);
    assert_eq!(
        config.apps[0].upstream.connect_timeout,
        HumanDuration::secs(3)
    );
    assert!(config.logging.access_log);
}

#[test]
fn wrong_type_names_line_column_and_key() {
    let text = format!("{}server:\n  threads: many\n", minimal());
    let (line, column, key, message) = error_of(&text);
    assert_eq!((line, column), (6, 12));
    assert_eq!(key, "server.threads");
    assert!(
        message.contains("many") || message.contains("integer"),
        "{message}"
    );
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    let text = format!("{}upstream_typo: 1\n", minimal());
    let (line, _column, _key, message) = error_of(&text);
    assert_eq!(line, 5);
    assert!(message.contains("upstream_typo"), "{message}");
}

#[test]
fn unknown_nested_key_names_its_parent() {
    let text = "upstream:\n  address: \"127.0.0.1:3000\"\n  conect_timeout: 2s\nsecrets:\n  key: { env: GK_UNIT_TEST_SECRET }\n";
    let (line, column, key, message) = error_of(text);
    assert_eq!((line, column), (3, 3));
    assert!(key.starts_with("upstream"), "{key}");
    assert!(message.contains("conect_timeout"), "{message}");
}

#[test]
fn broken_yaml_reports_a_position() {
    let (line, _column, _key, _message) = error_of("upstream:\n  address: [unclosed\n");
    assert!(line >= 2, "line {line}");
}

#[test]
fn bad_duration_explains_the_format() {
    let text = "upstream:\n  address: \"127.0.0.1:3000\"\n  read_timeout: 30 seconds\nsecrets:\n  key: { env: GK_UNIT_TEST_SECRET }\n";
    let (line, _column, key, message) = error_of(text);
    assert_eq!(line, 3);
    assert_eq!(key, "upstream.read_timeout");
    assert!(message.contains("500ms"), "{message}");
}

#[test]
fn missing_secret_variable_says_how_to_set_it() {
    let text = "upstream:\n  address: \"127.0.0.1:3000\"\nsecrets:\n  key: { env: GK_SURELY_UNSET_VARIABLE }\n";
    let (line, _column, key, message) = error_of(text);
    assert_eq!(line, 4);
    assert_eq!(key, "secrets.key");
    assert!(message.contains("GK_SURELY_UNSET_VARIABLE"), "{message}");
}

#[test]
fn admin_listener_may_not_share_the_public_port() {
    let text = format!(
        "{}listen: [\"0.0.0.0:8080\"]\nadmin:\n  listen: \"127.0.0.1:8080\"\n",
        minimal()
    );
    let (line, column, key, _message) = error_of(&text);
    assert_eq!(key, "admin.listen");
    assert_eq!((line, column), (7, 3));
}

#[test]
fn schema_is_json_and_forbids_unknown_keys() {
    let schema: serde_json::Value = serde_json::from_str(&Config::json_schema()).unwrap();
    assert_eq!(
        schema["additionalProperties"],
        serde_json::Value::Bool(false)
    );
    assert!(schema["properties"]["upstream"].is_object());
}

#[test]
fn shipped_example_config_is_valid() {
    unsafe { std::env::set_var("GAITKEEPER_SECRET", "unit-test-secret-0123456789abcdefghij") };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gaitkeeper.yaml");
    Config::load(&path).unwrap();
}

#[test]
fn store_defaults_to_sqlite_under_the_data_dir() {
    with_secret();
    let config = Config::parse(&minimal(), "test.yaml").unwrap();
    assert_eq!(config.store.enrollment_logins, 5);
    assert_eq!(config.store.cache_mb, 64);
    assert!(!config.store.keep_clear_names);
    assert_eq!(
        config.store.url_or_default(Path::new("/var/lib/gk data")),
        "sqlite:///var/lib/gk data/gaitkeeper.db"
    );
    assert_eq!(
        config.store.url_or_default(Path::new("odd?#%dir")),
        "sqlite://odd%3F%23%25dir/gaitkeeper.db"
    );
}

#[test]
fn store_url_with_a_password_is_rejected() {
    let text = format!(
        "{}store:\n  url: \"postgres://gk:hunter2@db:5432/gk\"\n",
        minimal()
    );
    let (line, _column, key, message) = error_of(&text);
    assert_eq!((line, key.as_str()), (6, "store.url"));
    assert!(message.contains("PGPASSWORD"), "{message}");
}

#[test]
fn store_url_must_name_a_known_backend() {
    let text = format!("{}store:\n  url: \"mysql://db/gk\"\n", minimal());
    let (_line, _column, key, message) = error_of(&text);
    assert_eq!(key, "store.url");
    assert!(message.contains("sqlite://"), "{message}");
}

#[test]
fn store_bounds_are_checked() {
    for (setting, key) in [
        ("enrollment_logins: 0", "store.enrollment_logins"),
        ("cache_mb: 0", "store.cache_mb"),
        ("max_connections: 1000", "store.max_connections"),
        ("busy_timeout: 10ms", "store.busy_timeout"),
        ("retention: 5y", "store.retention"),
    ] {
        let text = format!("{}store:\n  {setting}\n", minimal());
        let (_line, _column, found, message) = error_of(&text);
        assert_eq!(found, key, "{setting}: {message}");
    }
}

/// A self-signed certificate and its key in `dir`, and a second key that is not its own.
fn tls_files(dir: &std::path::Path) -> (String, String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["app.test".to_string()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let wrong = dir.join("other-key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    std::fs::write(&wrong, other.serialize_pem()).unwrap();
    let text = |p: std::path::PathBuf| p.display().to_string();
    (text(cert), text(key), text(wrong))
}

#[test]
fn listeners_are_addresses_or_tables_with_tls_redirect_and_proxy_protocol() {
    with_secret();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = tls_files(dir.path());
    let text = format!(
        "{}listen:\n  - \"127.0.0.1:8080\"\n  - address: \"127.0.0.1:8443\"\n    tls: {{ cert_file: \"{cert}\", key_file: \"{key}\" }}\n    proxy_protocol: true\n  - {{ address: \"127.0.0.1:8081\", redirect_to_https: true }}\nserver:\n  trusted_proxies: [\"10.0.0.0/8\", \"127.0.0.1\"]\n",
        minimal()
    );
    let config = Config::parse(&text, "test.yaml").unwrap();
    assert_eq!(config.listen.len(), 3);
    assert!(config.listen[0].tls.is_none() && !config.listen[0].redirect_to_https);
    let tls = config.listen[1].tls.as_ref().unwrap();
    assert_eq!(tls.cert_file.display().to_string(), cert);
    assert!(config.listen[1].proxy_protocol);
    assert!(config.listen[2].redirect_to_https);
    assert_eq!(config.server.trusted_proxies.len(), 2);
    assert_eq!(
        config.listen[1].to_string(),
        "https://127.0.0.1:8443 (PROXY protocol)"
    );
}

#[test]
fn unusable_certificates_are_reported_where_they_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, wrong) = tls_files(dir.path());
    let missing = dir.path().join("missing.pem").display().to_string();
    let listener = |cert: &str, key: &str| {
        format!(
            "{}listen:\n  - address: \"127.0.0.1:8443\"\n    tls:\n      cert_file: \"{cert}\"\n      key_file: \"{key}\"\n",
            minimal()
        )
    };
    let (line, column, key_path, message) = error_of(&listener(&missing, &key));
    assert_eq!(
        (line, key_path.as_str()),
        (8, "listen[0].tls.cert_file"),
        "{message}"
    );
    assert!(column > 0);
    assert!(
        message.contains("cannot read") && message.contains("missing.pem"),
        "{message}"
    );

    // A key file that holds a certificate, not a key.
    let (line, _, key_path, message) = error_of(&listener(&cert, &cert));
    assert_eq!(
        (line, key_path.as_str()),
        (9, "listen[0].tls.key_file"),
        "{message}"
    );
    assert!(message.contains("no PEM private key"), "{message}");

    let (_, _, _, message) = error_of(&listener(&cert, &wrong));
    assert!(
        message.contains("does not belong to the certificate"),
        "{message}"
    );
}

#[test]
fn listener_mistakes_and_bad_networks_are_named() {
    let text = format!(
        "{}server:\n  trusted_proxies: [\"10.0.0.0/33\"]\n",
        minimal()
    );
    let (line, column, key, message) = error_of(&text);
    assert_eq!((line, key.as_str()), (6, "server.trusted_proxies[0]"));
    assert!(column > 0);
    assert!(message.contains("10.0.0.0/33"), "{message}");

    let text = format!(
        "{}listen:\n  - {{ address: \"127.0.0.1:8443\", proxy_protocol: true }}\n",
        minimal()
    );
    let (line, _, _, message) = error_of(&text);
    assert_eq!(line, 6);
    assert!(
        message.contains("`proxy_protocol` needs `tls`"),
        "{message}"
    );

    let text = format!(
        "{}listen:\n  - {{ address: \"127.0.0.1:8081\", redirect_to_https: true }}\n",
        minimal()
    );
    let (_, _, key, message) = error_of(&text);
    assert_eq!(key, "listen");
    assert!(message.contains("no listener has `tls`"), "{message}");

    let text = format!(
        "{}listen: [\"127.0.0.1:8080\", \"0.0.0.0:8080\"]\n",
        minimal()
    );
    let (_, _, key, message) = error_of(&text);
    assert_eq!(key, "listen");
    assert!(message.contains("share a port"), "{message}");
}

fn two_apps(second_hosts: &str) -> String {
    format!(
        "apps:\n  - name: intranet\n    hosts: [\"intranet.test\"]\n    upstream: {{ address: \"127.0.0.1:3001\" }}\n    routes:\n      - name: login\n        page: {{ paths: [\"/login\"] }}\n        submit: {{ path: \"/login\" }}\n    policy: {{ allow_below: 0.3 }}\n    app_name: \"Acme Intranet\"\n  - name: wiki\n    hosts: {second_hosts}\n    upstream: {{ address: \"127.0.0.1:3002\" }}\n    default: true\npolicy:\n  allow_below: 0.5\n  block_at: 0.9\nsecrets:\n  key: {{ env: {SECRET_ENV} }}\n"
    )
}

#[test]
fn several_apps_each_with_hosts_upstream_routes_and_policy() {
    with_secret();
    let config = Config::parse(&two_apps("[\"wiki.test\", \"*.wiki.test\"]"), "test.yaml").unwrap();
    assert_eq!(config.apps.len(), 2);
    let (intranet, wiki) = (&config.apps[0], &config.apps[1]);
    assert_eq!(intranet.app_name, "Acme Intranet");
    assert_eq!(wiki.app_name, "this application");
    // The app's policy over the top level's; the rest from the top level.
    assert_eq!(intranet.policy.allow_below, Some(0.3));
    assert_eq!(intranet.policy.block_at, Some(0.9));
    assert_eq!(wiki.policy.allow_below, Some(0.5));
    assert_eq!(config.app_for_host("intranet.test"), Some(0));
    assert_eq!(config.app_for_host("a.wiki.test"), Some(1));
    // Nobody claims it: the default app takes it.
    assert_eq!(config.app_for_host("elsewhere.test"), Some(1));
    assert_eq!(intranet.user_scope("alice"), "\0intranet\0alice");
    assert_eq!(intranet.token_route("login"), "intranet/login");

    // The single-app form is one app, `default`, for every host, keyed as before.
    let single = Config::parse(&minimal(), "test.yaml").unwrap();
    assert_eq!(single.apps.len(), 1);
    assert_eq!(single.apps[0].name, "default");
    assert_eq!(single.app_for_host("anything.test"), Some(0));
    assert_eq!(single.apps[0].user_scope("alice"), "alice");
    assert_eq!(single.apps[0].token_route("login"), "login");
}

#[test]
fn app_mistakes_are_reported_where_they_are() {
    let (line, column, key, message) = error_of(&two_apps("[\"intranet.test\"]"));
    assert_eq!(key, "apps[1].hosts");
    assert_eq!((line, column), (12, 5));
    assert!(message.contains("claimed by two apps"), "{message}");

    let both = format!(
        "{}upstream: {{ address: \"127.0.0.1:3000\" }}\n",
        two_apps("[\"wiki.test\"]")
    );
    let (_, _, key, message) = error_of(&both);
    assert_eq!(key, "upstream");
    assert!(message.contains("with `apps:`"), "{message}");

    let nothing = format!("secrets:\n  key: {{ env: {SECRET_ENV} }}\n");
    let (_, _, key, message) = error_of(&nothing);
    assert_eq!(key, "upstream");
    assert!(message.contains("missing"), "{message}");

    let unreachable = two_apps("[]").replace("    default: true\n", "");
    let (line, _, key, message) = error_of(&unreachable);
    assert_eq!((line, key.as_str()), (12, "apps[1].hosts"));
    assert!(message.contains("no request would reach it"), "{message}");
}

/// `minimal()` with an `mfa.oidc` section of `keys` (each line indented by four spaces).
fn with_oidc(keys: &str) -> String {
    format!("{}mfa:\n  oidc:\n{keys}", minimal())
}

const OIDC_KEYS: &str = "    issuer: \"https://login.example.com/realms/staff\"\n    client_id: gaitkeeper\n    client_secret: { env: GK_UNIT_TEST_SECRET }\n";

#[test]
fn an_oidc_provider_gets_its_defaults() {
    with_secret();
    let config = Config::parse(&with_oidc(OIDC_KEYS), "test.yaml").unwrap();
    let oidc = config.mfa.oidc.expect("mfa.oidc");
    assert_eq!(oidc.issuer.0, "https://login.example.com/realms/staff");
    assert_eq!(oidc.username_claim, "preferred_username");
    assert_eq!(oidc.scopes(), ["openid", "profile"]);
    assert_eq!(oidc.max_age, HumanDuration::secs(0));
    assert_eq!(oidc.clock_skew, HumanDuration::secs(5));
    assert!(oidc.required_acr.is_empty() && oidc.required_amr.is_empty());
    assert_eq!(oidc.display_name, "single sign-on");
    let email = Config::parse(
        &with_oidc(&format!("{OIDC_KEYS}    username_claim: email\n")),
        "test.yaml",
    )
    .unwrap();
    assert_eq!(email.mfa.oidc.unwrap().scopes(), ["openid", "email"]);
}

#[test]
fn an_oidc_issuer_over_plain_http_is_refused_unless_on_loopback() {
    let text = with_oidc(&OIDC_KEYS.replace("https://login", "http://login"));
    let (line, column, key, message) = error_of(&text);
    assert_eq!(key, "mfa.oidc.issuer");
    assert_eq!((line, column), (7, 13));
    assert!(message.contains("https"), "{message}");
    with_secret();
    let local = with_oidc(&OIDC_KEYS.replace(
        "https://login.example.com/realms/staff",
        "http://127.0.0.1:8080",
    ));
    assert!(Config::parse(&local, "test.yaml").is_ok());
}

#[test]
fn oidc_mistakes_are_reported_at_their_key() {
    let cases = [
        ("    scopes: [profile]\n", "mfa.oidc.scopes", "openid"),
        (
            "    username_claim: name\n",
            "mfa.oidc.username_claim",
            "does not name one account",
        ),
        (
            "    username_claim: \"a b\"\n",
            "mfa.oidc.username_claim",
            "claim",
        ),
        ("    clock_skew: 5m\n", "mfa.oidc.clock_skew", "at most 60s"),
        ("    timeout: 0s\n", "mfa.oidc.timeout", "1s to 30s"),
        (
            "    required_amr: [\"two words\"]\n",
            "mfa.oidc.required_amr",
            "without spaces",
        ),
        (
            "    display_name: \"\"\n",
            "mfa.oidc.display_name",
            "1 to 60",
        ),
    ];
    for (extra, want_key, want) in cases {
        let text = with_oidc(&format!("{OIDC_KEYS}{extra}"));
        let (line, _, key, message) = error_of(&text);
        assert_eq!(key, want_key, "{extra}");
        assert_eq!(line, 10, "{extra}: the line of the key");
        assert!(message.contains(want), "{extra}: {message}");
    }
    let (_, _, key, message) = error_of(&with_oidc(&format!(
        "{OIDC_KEYS}    client_secret_typo: 1\n"
    )));
    assert!(key.starts_with("mfa.oidc"), "{key}");
    assert!(message.contains("client_secret_typo"), "{message}");
    let (_, _, key, _) = error_of(&with_oidc(
        "    client_id: gaitkeeper\n    client_secret: { env: GK_UNIT_TEST_SECRET }\n",
    ));
    assert!(
        key.starts_with("mfa.oidc"),
        "a missing issuer is named: {key}"
    );
}

const ADMIN_TOKEN_ENV: &str = "GK_UNIT_TEST_ADMIN_TOKEN";

fn with_admin_token() {
    with_secret();
    unsafe { std::env::set_var(ADMIN_TOKEN_ENV, "admin-token-9f8e7d6c5b4a3210zyxwvuts") };
}

#[test]
fn an_admin_listener_off_loopback_needs_admin_auth() {
    let text = format!("{}admin:\n  listen: \"0.0.0.0:9090\"\n", minimal());
    let (line, column, key, message) = error_of(&text);
    assert_eq!(key, "admin.auth");
    assert_eq!((line, column), (6, 3), "points at admin.listen");
    assert!(message.contains("loopback"), "{message}");
    assert!(message.contains("bearer"), "{message}");
}

#[test]
fn admin_auth_takes_a_bearer_token_or_a_basic_password_from_secrets() {
    with_admin_token();
    let text = format!(
        "{}admin:\n  listen: \"0.0.0.0:9090\"\n  auth:\n    bearer: {{ env: {ADMIN_TOKEN_ENV} }}\n    basic: {{ user: ops, password: {{ env: {ADMIN_TOKEN_ENV} }} }}\n    metrics: open\n",
        minimal()
    );
    let config = Config::parse(&text, "test.yaml").unwrap();
    let auth = config.admin.auth.as_ref().unwrap();
    assert!(auth.bearer.is_some());
    assert_eq!(auth.basic.as_ref().unwrap().user, "ops");
    assert_eq!(auth.metrics, MetricsAccess::Open);
    // Loopback without auth stays valid (the default listener).
    assert!(Config::parse(&minimal(), "test.yaml")
        .unwrap()
        .admin
        .auth
        .is_none());
}

#[test]
fn admin_auth_without_a_credential_or_with_a_bad_user_is_refused() {
    with_admin_token();
    let text = format!("{}admin:\n  auth:\n    metrics: open\n", minimal());
    let (line, _column, key, message) = error_of(&text);
    assert_eq!(key, "admin.auth");
    assert_eq!(line, 6);
    assert!(message.contains("bearer"), "{message}");

    let text = format!(
        "{}admin:\n  auth:\n    basic: {{ user: \"a:b\", password: {{ env: {ADMIN_TOKEN_ENV} }} }}\n",
        minimal()
    );
    let (_line, _column, key, message) = error_of(&text);
    assert_eq!(key, "admin.auth.basic.user");
    assert!(message.contains("':'"), "{message}");

    // A weak token is refused like any secret, naming its key and never its value.
    unsafe {
        std::env::set_var(
            "GK_UNIT_TEST_WEAK_ADMIN",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        )
    };
    let text = format!(
        "{}admin:\n  auth:\n    bearer: {{ env: GK_UNIT_TEST_WEAK_ADMIN }}\n",
        minimal()
    );
    let (line, _column, key, message) = error_of(&text);
    assert_eq!(key, "admin.auth.bearer");
    assert_eq!(line, 7);
    assert!(message.contains("too weak"), "{message}");
    assert!(!message.contains("aaaaaaaa"), "{message}");
}
