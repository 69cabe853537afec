//! Configuration tests.

use super::*;
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn embedded_default_parses_with_expected_values() {
    let c = Config::parse(EMBEDDED_DEFAULT).unwrap();
    assert_eq!(c.server.port, 5000);
    assert_eq!(c.server.bind_address.to_string(), "127.0.0.1");
    assert_eq!(
        c.storage.fs.as_ref().unwrap().root_dir,
        PathBuf::from("./data")
    );
    assert_eq!(c.repository.len(), 1);
    assert!(c.repository[0].policy_default_allow);
    assert_eq!(c.server.manifest_bytes_max, 4 * 1024 * 1024);
}

/// The documented example is valid and documents the real defaults.
#[test]
fn example_file_parses_and_matches_defaults() {
    let example = Config::parse(include_str!("../../config.example.toml")).unwrap();
    let minimal = Config::parse(EMBEDDED_DEFAULT).unwrap();
    assert_eq!(
        format!("{:?}", example.server),
        format!("{:?}", minimal.server)
    );
    assert_eq!(
        format!("{:?}", example.uploads),
        format!("{:?}", minimal.uploads)
    );
    assert_eq!(format!("{:?}", example.log), format!("{:?}", minimal.log));
    assert_eq!(format!("{:?}", example.gc), format!("{:?}", minimal.gc));
    assert_eq!(
        format!("{:?}", example.metrics),
        format!("{:?}", minimal.metrics)
    );
}

/// Every key with a documented default may be left out: no `[server]`, no `[storage]`,
/// `[storage.fs]` without `root_dir`.
#[test]
fn documented_defaults_may_be_left_out() {
    let embedded = Config::parse(EMBEDDED_DEFAULT).unwrap();
    for text in [
        "",
        "[storage.fs]\n",
        "[server]\n[storage]\n",
        "[server.tls]\nserver_certificate_bundle = \"a\"\nserver_private_key = \"b\"\n",
    ] {
        let c = Config::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(
            format!(
                "{:?}",
                ServerConfig {
                    tls: None,
                    ..c.server
                }
            ),
            format!("{:?}", embedded.server),
            "{text:?}"
        );
        assert_eq!(
            c.storage.fs.as_ref().unwrap().root_dir,
            PathBuf::from("./data")
        );
    }
}

/// A configuration that denies everything by construction is valid, with a warning.
#[test]
fn warnings_name_entries_that_deny_everything() {
    assert!(Config::parse(EMBEDDED_DEFAULT)
        .unwrap()
        .warnings()
        .is_empty());
    let none = Config::parse("").unwrap().warnings();
    assert!(none[0].starts_with("no [[repository]] entry"), "{none:?}");
    let closed = Config::parse("[[repository]]\nnamespace = \"team\"\n").unwrap();
    assert!(closed.warnings()[0].starts_with("repository[0]"));
}

/// An upstream password may come from a file or an environment variable instead of the
/// file itself; giving two of them, or a missing file or variable, names the key.
#[test]
fn upstream_password_from_file_or_environment() {
    let dir = std::env::temp_dir().join(format!("origin-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("password");
    std::fs::write(&file, "from-file\n").unwrap();
    std::env::set_var("ORIGIN_TEST_UPSTREAM_PASSWORD", "from-env");
    let with = |line: &str| {
        format!(
            "[[repository]]\nnamespace = \"hub\"\n[repository.mirror]\n\
             [[repository.mirror.upstream]]\nurl = \"https://registry.example\"\n\
             username = \"u\"\n{line}\n"
        )
    };
    let password = |line: &str| {
        Config::parse(&with(line)).map(|c| {
            c.repository[0].mirror.as_ref().unwrap().upstream[0]
                .password
                .clone()
        })
    };
    let file_line = format!("password_file = {:?}", file.display().to_string());
    assert_eq!(password(&file_line).unwrap().as_deref(), Some("from-file"));
    assert_eq!(
        password("password_env = \"ORIGIN_TEST_UPSTREAM_PASSWORD\"")
            .unwrap()
            .as_deref(),
        Some("from-env")
    );
    assert_eq!(
        password("password = \"plain\"").unwrap().as_deref(),
        Some("plain")
    );
    let both = password(&format!("password = \"x\"\n{file_line}")).unwrap_err();
    assert!(both.to_string().contains("give one of"), "{both}");
    let missing = password("password_file = \"/nonexistent/secret\"").unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("repository[0].mirror.upstream[0].password_file"),
        "{missing}"
    );
    let unset = password("password_env = \"ORIGIN_TEST_UNSET_VARIABLE\"").unwrap_err();
    assert!(unset.to_string().contains("is not set"), "{unset}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let text = format!("{EMBEDDED_DEFAULT}\n[log]\nfromat = \"json\"\n");
    let e = Config::parse(&text).unwrap_err();
    assert!(e.to_string().contains("fromat"), "{e}");
}

#[test]
fn durations_accept_seconds_and_units() {
    assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    assert!(parse_duration("5 fortnights").is_err());
    assert!(parse_duration("").is_err());
    let text = EMBEDDED_DEFAULT.replace("port = 5000", "port = 5000\nquery_timeout = \"2m\"");
    assert_eq!(
        Config::parse(&text).unwrap().server.query_timeout,
        Duration::from_secs(120)
    );
}

#[test]
fn validation_names_the_bad_key() {
    let text = EMBEDDED_DEFAULT.replace("port = 5000", "port = 5000\nheader_count_max = 1");
    let e = Config::parse(&text).unwrap_err();
    assert!(e.to_string().starts_with("server.header_count_max"), "{e}");
    let text = format!(
        "{EMBEDDED_DEFAULT}\n[identity.alice]\nusername = \"alice\"\npassword = \"plain\"\n"
    );
    let e = Config::parse(&text).unwrap_err();
    assert!(e.to_string().starts_with("identity.alice.password"), "{e}");
}

/// The S3 secret key may come from a file or the environment, like upstream passwords.
#[test]
fn s3_secret_from_file_or_environment() {
    let dir = std::env::temp_dir().join(format!("origin-s3-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, "from-file\n").unwrap();
    std::env::set_var("ORIGIN_TEST_S3_SECRET", "from-env");
    let secret = |line: &str| {
        let text = format!(
            "[storage.s3]\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:9\"\npath_style = true\n\
             access_key_id = \"AKIA\"\n{line}\n"
        );
        Config::parse(&text).map(|c| c.storage.s3.unwrap().secret_access_key)
    };
    let file_line = format!("secret_access_key_file = {:?}", file.display().to_string());
    assert_eq!(secret(&file_line).unwrap().as_deref(), Some("from-file"));
    assert_eq!(
        secret("secret_access_key_env = \"ORIGIN_TEST_S3_SECRET\"")
            .unwrap()
            .as_deref(),
        Some("from-env")
    );
    let both = secret(&format!("secret_access_key = \"x\"\n{file_line}")).unwrap_err();
    assert!(
        both.to_string().starts_with("storage.s3.secret_access_key"),
        "{both}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An identity's PHC hash may come from a file (a mounted Kubernetes secret) or the
/// environment; giving it twice, or a file that is not a hash, names the key.
#[test]
fn identity_password_from_file_or_environment() {
    const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$mXnt6z8DMzxV6YVRcZVIHw$tgysCGUkvgAHAJmh64GkBaexV1Pst4aau+oRv5qcOMs";
    let dir = std::env::temp_dir().join(format!("origin-id-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("alice");
    std::fs::write(&file, format!("{PHC}\n")).unwrap();
    std::env::set_var("ORIGIN_TEST_IDENTITY_HASH", PHC);
    let parse = |line: &str| {
        let text = format!("{EMBEDDED_DEFAULT}\n[identity.alice]\nusername = \"alice\"\n{line}\n");
        Config::parse(&text).map(|c| c.identity["alice"].password.clone())
    };
    let file_line = format!("password_file = {:?}", file.display().to_string());
    assert_eq!(parse(&file_line).unwrap(), PHC);
    assert_eq!(
        parse("password_env = \"ORIGIN_TEST_IDENTITY_HASH\"").unwrap(),
        PHC
    );
    let both = parse(&format!("password = {PHC:?}\n{file_line}")).unwrap_err();
    assert!(
        both.to_string().starts_with("identity.alice.password"),
        "{both}"
    );
    std::fs::write(&file, "plain\n").unwrap();
    let plain = parse(&file_line).unwrap_err();
    assert!(
        plain.to_string().starts_with("identity.alice.password"),
        "{plain}"
    );
    let none = parse("").unwrap_err();
    assert!(
        none.to_string().starts_with("identity.alice.password"),
        "{none}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `[audit]`: off by default with named defaults; check-config (`reload::check`) names a key
/// out of bounds, a file in a directory that does not exist, or a directory as the file.
#[test]
fn audit_section_defaults_and_checks() {
    let config = Config::parse(EMBEDDED_DEFAULT).unwrap();
    assert_eq!(config.audit, AuditConfig::default());
    assert!(!config.audit.enabled && config.audit.file.is_none());
    assert_eq!(config.audit.max_file_bytes, AUDIT_FILE_BYTES_DEFAULT);
    assert_eq!(config.audit.keep_files, AUDIT_KEEP_FILES_DEFAULT);
    let check = |section: &str| {
        let config = Config::parse(&format!("{EMBEDDED_DEFAULT}\n[audit]\n{section}\n"))?;
        crate::reload::check(&config).map(|()| config)
    };
    let tmp = std::env::temp_dir();
    let ok = check(&format!(
        "enabled = true\nfile = {:?}\nmax_file_bytes = 4096\nkeep_files = 0",
        tmp.join("audit.jsonl").display().to_string()
    ))
    .unwrap();
    assert_eq!(ok.audit.max_file_bytes, 4096);
    for (section, key) in [
        ("max_file_bytes = 100", "audit.max_file_bytes"),
        ("keep_files = 1000", "audit.keep_files"),
        (
            "file = \"/nonexistent-origin-dir/audit.jsonl\"",
            "audit.file",
        ),
        (
            &format!("file = {:?}", tmp.display().to_string()),
            "audit.file",
        ),
        ("enabled = true\nfiles = \"x\"", "unknown field"),
    ] {
        let e = check(section).unwrap_err().to_string();
        assert!(e.contains(key), "{section}: {e}");
    }
}

/// `[ui]` defaults to on at `/ui/` titled "Origin" with 12-hour sessions; a path that is not
/// a `/name/` outside `/v2/`, a title with control characters, a session TTL out of bounds
/// or a session secret shorter than 32 bytes (or given twice) fails the load naming the key.
#[test]
fn ui_section_defaults_and_validation() {
    let c = Config::parse(EMBEDDED_DEFAULT).unwrap();
    assert!(c.ui.enabled);
    assert_eq!(
        (c.ui.path.as_str(), c.ui.title.as_str()),
        ("/ui/", "Origin")
    );
    for (section, key) in [
        ("[ui]\npath = \"ui\"\n", "ui.path"),
        ("[ui]\npath = \"/\"\n", "ui.path"),
        ("[ui]\npath = \"/v2/ui/\"\n", "ui.path"),
        ("[ui]\npath = \"/a/../b/\"\n", "ui.path"),
        ("[ui]\npath = \"/a b/\"\n", "ui.path"),
        ("[ui]\ntitle = \"\"\n", "ui.title"),
        ("[ui]\ntitle = \"a\\u0007b\"\n", "ui.title"),
        ("[ui]\nsession_ttl = \"10s\"\n", "ui.session_ttl"),
        ("[ui]\nsession_ttl = \"721h\"\n", "ui.session_ttl"),
        ("[ui]\nsession_secret = \"short\"\n", "ui.session_secret"),
        (
            "[ui]\nsession_secret = \"0123456789abcdef0123456789abcdef\"\nsession_secret_env = \"X\"\n",
            "ui.session_secret",
        ),
    ] {
        let e = Config::parse(&format!("{EMBEDDED_DEFAULT}\n{section}")).unwrap_err();
        assert!(e.to_string().starts_with(key), "{section}: {e}");
    }
    let c = Config::parse(&format!(
        "{EMBEDDED_DEFAULT}\n[ui]\nenabled = false\npath = \"/console/x/\"\ntitle = \"A&B\"\n"
    ))
    .unwrap();
    assert!(!c.ui.enabled);
    assert_eq!(c.ui.path, "/console/x/");
    assert_eq!(c.ui.session_ttl, std::time::Duration::from_secs(12 * 3600));
    let c = Config::parse(&format!(
        "{EMBEDDED_DEFAULT}\n[ui]\nsession_ttl = \"30m\"\nsession_secret = \"0123456789abcdef0123456789abcdef\"\n"
    ))
    .unwrap();
    assert_eq!(c.ui.session_ttl, std::time::Duration::from_secs(1800));
    assert_eq!(c.ui.session_secret.as_deref().map(str::len), Some(32));
}
