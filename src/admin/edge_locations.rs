//! `gaitkeeper edge-locations`: the nginx `location` blocks that send an app's login pages,
//! login submits and gaitkeeper's own paths to gaitkeeper, for the "login routes only"
//! topology (docs/deployment.md). Generated from the config, so no login path of the config
//! is forgotten on the nginx side.

use crate::config::Config;

/// The nginx snippet for every app of `config`; `upstream` is the name of the nginx
/// `upstream` block that reaches gaitkeeper.
pub fn nginx_locations(config: &Config, upstream: &str) -> String {
    let mut out = String::new();
    for app in &config.apps {
        let mut prefixes: Vec<String> = Vec::new();
        let paths = app.routes.iter().flat_map(|r| {
            r.page
                .paths
                .iter()
                .map(|p| p.trim_end_matches('*'))
                .chain(std::iter::once(r.submit.path.as_str()))
        });
        for path in paths.chain(std::iter::once(config.server.reserved_prefix.0.as_str())) {
            let escaped = regex_escape(path);
            if !prefixes.contains(&escaped) {
                prefixes.push(escaped);
            }
        }
        let hosts = if app.hosts.is_empty() {
            "every host".to_string()
        } else {
            app.hosts.join(" ")
        };
        out.push_str(&format!(
            "# app {:?} ({hosts}): its login pages, login submits and {prefix} go to gaitkeeper,\n\
             # in any case and with any suffix; everything else may go straight to the app.\n\
             location ~* ^({}) {{\n    proxy_pass http://{upstream};\n}}\n",
            app.name,
            prefixes.join("|"),
            prefix = config.server.reserved_prefix.0,
        ));
    }
    out
}

fn regex_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_login_path_and_the_reserved_prefix_is_listed_once() {
        unsafe {
            std::env::set_var(
                "GK_EDGE_TEST_SECRET",
                "edge-locations-test-0123456789abcdefgh",
            )
        };
        let text = "upstream: { address: \"127.0.0.1:3000\" }\nsecrets:\n  key: { env: GK_EDGE_TEST_SECRET }\nroutes:\n  - name: a\n    page: { paths: [\"/login\", \"/auth/*\"] }\n    submit: { path: \"/login\" }\n  - name: b\n    page: { paths: [\"/spa.html\"] }\n    submit: { path: \"/api/login\" }\n";
        let config = Config::parse(text, "t.yaml").unwrap();
        let snippet = nginx_locations(&config, "gaitkeeper");
        assert!(
            snippet.contains("location ~* ^(/login|/auth/|/spa\\.html|/api/login|/__gk/) {"),
            "{snippet}"
        );
        assert!(snippet.contains("proxy_pass http://gaitkeeper;"));
    }
}
