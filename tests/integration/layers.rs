//! The module layers of docs/architecture.md, enforced: every `crate::…` path in a module of
//! `src/` must name a module of a lower layer (a module's own children are free to use each
//! other). Fails naming the file, line and import.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Module → layer, read from the "## Layers" table of docs/architecture.md.
fn layers() -> BTreeMap<String, usize> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let section = doc
        .split("\n## Layers\n")
        .nth(1)
        .expect("docs/architecture.md has a \"## Layers\" section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut layers = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Ok(layer) = cells[1].parse::<usize>() else {
            continue; // the header and its rule
        };
        for module in cells[2].split(',') {
            let module = module.trim().trim_matches('`');
            assert!(
                layers.insert(module.to_string(), layer).is_none(),
                "{module} is listed twice in docs/architecture.md's layers"
            );
        }
    }
    assert!(layers.len() > 10, "no layers table found: {section}");
    layers
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a line names with `crate::`: `crate::store::Store`,
/// `crate::{config, store}`, `crate::{store::{A, B}, files}`.
fn imported(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        // `$crate::` of macros and `gaitkeeper_crate::` are not ours.
        let before = &rest[..at];
        let ours =
            !before.ends_with('$') && !before.ends_with(|c: char| c.is_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        if !ours {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: depth-1 items.
            let mut depth = 1;
            let mut item = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        if !item.is_empty() {
                            found.push(std::mem::take(&mut item));
                        }
                        at_start = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 1 && at_start {
                    if c.is_alphanumeric() || c == '_' {
                        item.push(c);
                    } else if !item.is_empty() {
                        found.push(std::mem::take(&mut item));
                        at_start = false;
                    }
                }
            }
            if !item.is_empty() {
                found.push(item);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// The lines of `text` with their numbers (from 0), a `crate::{` group that spans several
/// lines joined into its first, so every name in it is seen.
fn statements(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut open = 0i32;
    for (n, line) in text.lines().enumerate() {
        if open > 0 {
            let joined = &mut out.last_mut().unwrap().1;
            joined.push(' ');
            joined.push_str(line.trim());
        } else if line.contains("crate::{") {
            out.push((n, line.to_string()));
        } else {
            out.push((n, line.to_string()));
            continue;
        }
        open += line.matches('{').count() as i32 - line.matches('}').count() as i32;
        open = open.max(0);
    }
    out
}

#[test]
fn every_module_imports_only_lower_layers() {
    let layers = layers();
    // Another tree may be checked against this table (an older commit, to show what the
    // check catches): GAITKEEPER_LAYERS_SRC=/path/to/checkout/src.
    let src = std::env::var_os("GAITKEEPER_LAYERS_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let first = first.to_str().unwrap();
        // The binaries use the library as `gaitkeeper::`, from outside.
        if matches!(first, "lib.rs" | "main.rs" | "bin") {
            continue;
        }
        let module = first.trim_end_matches(".rs");
        let Some(&layer) = layers.get(module) else {
            wrong.push(format!(
                "src/{}: module `{module}` is not in docs/architecture.md's layers table",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in statements(&text) {
            for target in imported(&line) {
                if target == module {
                    continue;
                }
                match layers.get(&target) {
                    Some(&other) if other < layer => {}
                    Some(&other) => wrong.push(format!(
                        "src/{}:{}: `{module}` (layer {layer}) imports `crate::{target}` (layer {other}); a module may import only lower layers",
                        relative.display(),
                        n + 1
                    )),
                    None => wrong.push(format!(
                        "src/{}:{}: `crate::{target}` is not a module in docs/architecture.md's layers table",
                        relative.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} imports break the layers of docs/architecture.md:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_import_reader_sees_every_spelling() {
    assert_eq!(imported("use crate::store::Store;"), ["store"]);
    assert_eq!(
        imported("use crate::{config::{A, B}, store, files::make_private};"),
        ["config", "store", "files"]
    );
    assert_eq!(
        imported("    pub policy: crate::policy::PolicyConfig, // crate::admin"),
        ["policy", "admin"]
    );
    assert_eq!(imported("$crate::x; my_crate::y"), Vec::<String>::new());
    assert_eq!(imported("let x = 1;"), Vec::<String>::new());
    let spread =
        statements("use crate::{\n    config::Config,\n    store::Store,\n};\nfn f() {}\n");
    assert_eq!(spread[0].0, 0);
    assert_eq!(imported(&spread[0].1), ["config", "store"]);
    assert_eq!(spread[1], (4, "fn f() {}".to_string()));
}
