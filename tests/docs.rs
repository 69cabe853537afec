//! The documentation's configurations work: every TOML example in the README, and
//! `config.example.toml` as shipped and with every commented-out example section switched on,
//! passes `origin check-config`. Paths to files an installation provides (certificates,
//! secrets) point to test files; everything else is checked as written.

mod common;

use std::path::Path;

use common::pki::Pki;
use common::*;

/// The fenced ```toml blocks of a Markdown text.
fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```toml") => current = Some(String::new()),
            Some(block) if line.trim_start().starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// Switches on commented-out settings and sections (`# key = ...`, `# [section]`).
fn uncomment(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
            {
                rest.to_string()
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Points the keys that name files of an installation to files made for the test.
fn localize(text: &str, pki: &Pki, secret: &Path, root: &Path) -> String {
    // `[audit] file`: in the test's directory, whose existence check-config checks.
    let audit = root.with_file_name("audit.jsonl");
    let ui_secret = secret.with_file_name("ui-session-secret");
    let files = [
        ("session_secret_file", ui_secret.as_path()),
        ("server_certificate_bundle", pki.server_cert.as_path()),
        ("server_private_key", pki.server_key.as_path()),
        ("client_ca_bundle", pki.ca.as_path()),
        ("ca_bundle", pki.ca.as_path()),
        ("password_file", secret),
        ("token_file", secret),
        ("secret_access_key_file", secret),
        ("root_dir", root),
        ("file", audit.as_path()),
    ];
    text.lines()
        .map(|line| {
            let key = line.split('=').next().unwrap_or("").trim();
            match files.iter().find(|(k, _)| *k == key) {
                Some((k, path)) => format!("{k} = {:?}", path.display().to_string()),
                None => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_config(dir: &Path, name: &str, text: &str) -> (bool, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_origin"))
        .arg("check-config")
        .arg("-c")
        .arg(&path)
        .env("HUB_TOKEN", "example")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn every_documented_configuration_passes_check_config() {
    let dir = TempDir::new("docs");
    let pki = Pki::new(&dir.0, &[]);
    let secret = dir.0.join("secret");
    std::fs::write(&secret, "example\n").unwrap();
    std::fs::write(
        dir.0.join("ui-session-secret"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let root = dir.0.join("data");
    let readme = include_str!("../README.md");
    let example = include_str!("../config.example.toml");
    let mut configs: Vec<(String, String)> = toml_blocks(readme)
        .into_iter()
        .enumerate()
        .map(|(i, b)| (format!("README.md toml block {}", i + 1), b))
        .collect();
    assert!(configs.len() >= 3, "README examples not found");
    configs.push(("config.example.toml".into(), example.to_string()));
    configs.push((
        "config.example.toml, every example on".into(),
        uncomment(example),
    ));
    for (i, (what, text)) in configs.iter().enumerate() {
        let text = localize(text, &pki, &secret, &root);
        let (ok, said) = check_config(&dir.0, &format!("{i}.toml"), &text);
        assert!(
            ok,
            "{what} fails check-config:\n{said}\n--- as checked:\n{text}"
        );
    }
    // The uncommented example really has the optional sections on.
    let all_on = uncomment(example);
    for section in [
        "[server.tls]",
        "[identity.alice]",
        "[repository.mirror]",
        "[audit]",
    ] {
        assert!(all_on.lines().any(|l| l == section), "{section}");
    }
}

/// The inline code spans of a Markdown text, outside fenced blocks. A span broken over two
/// lines contains whitespace, so it is never taken for a path.
fn code_spans(markdown: &str) -> Vec<String> {
    let mut text = String::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// `docs/ARCHITECTURE.md` names only what exists: every repository path in backticks (`src/…`,
/// `tests/…`, `scripts/…`, …) is a file or folder of the repository, and every test named as
/// `path/file.rs::name` is a function of that file.
#[test]
fn architecture_names_only_paths_and_tests_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = include_str!("../docs/ARCHITECTURE.md");
    let prefixes = [
        "src/", "tests/", "docs/", "scripts/", "bench/", "deploy/", "fuzz/", ".ci/",
    ];
    let mut checked = 0;
    let mut missing = Vec::new();
    for span in code_spans(doc) {
        let is_path = prefixes.iter().any(|p| span.starts_with(*p))
            && !span.contains(|c: char| c.is_whitespace() || c == '<' || c == '*');
        if !is_path {
            continue;
        }
        checked += 1;
        let (path, function) = match span.split_once("::") {
            Some((path, function)) => (path, Some(function)),
            None => (span.as_str(), None),
        };
        let Ok(source) = std::fs::read_to_string(root.join(path)) else {
            if function.is_some() || !root.join(path).exists() {
                missing.push(format!("{span}: no such path"));
            }
            continue;
        };
        if let Some(function) = function {
            let defined = [format!("fn {function}("), format!("fn {function}<")]
                .iter()
                .any(|d| source.contains(d.as_str()));
            if !defined {
                missing.push(format!("{span}: no fn {function} in {path}"));
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} paths found in docs/ARCHITECTURE.md"
    );
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md names what does not exist:\n{}",
        missing.join("\n")
    );
}
