//! The command line: `serve`, `check-config`, `hash-password`, `--help`, `--version`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use crate::config::{Config, Overrides};

const USAGE: &str = "\
origin: an OCI container registry

Usage:
  origin [serve] [-c FILE] [--port N] [--bind-address IP]
                                  run the registry (the default command)
  origin check-config [-c FILE]   validate a configuration and exit
  origin hash-password            read a password on stdin, print an argon2id PHC hash
  origin gc [--dry-run] [-c FILE] one garbage-collection pass over the storage
  origin scrub [--repair] [-c FILE]
                                  check blobs, links and references; repair what is safe
  origin scrub --retention [--dry-run] [-c FILE]
                                  delete the manifests no retention rule keeps
  origin replication status [--json] [-c FILE]
                                  replication jobs per target: pending, running, failed
  origin usage [-c FILE]          print each namespace's usage against its quota
  origin --help | --version

Without -c, ./config.toml is used when present, else an embedded default:
127.0.0.1:5000, storage under ./data, anonymous access to every repository.
--port and --bind-address (or ORIGIN_PORT and ORIGIN_BIND_ADDRESS) override the file's
server.port and server.bind_address.
";

enum Command {
    Serve(Option<PathBuf>, Overrides),
    CheckConfig(Option<PathBuf>),
    HashPassword,
    Gc(Option<PathBuf>, bool),
    Scrub(Option<PathBuf>, bool),
    Retention(Option<PathBuf>, bool),
    /// The file, and whether to print JSON.
    ReplicationStatus(Option<PathBuf>, bool),
    Usage(Option<PathBuf>),
    Help,
    Version,
}

/// A command line (or `ORIGIN_*` variable) that does not say what to run; shown above the
/// usage text.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl From<&str> for UsageError {
    fn from(message: &str) -> Self {
        UsageError(message.into())
    }
}

impl From<String> for UsageError {
    fn from(message: String) -> Self {
        UsageError(message)
    }
}

fn parse(args: &[String]) -> Result<Command, UsageError> {
    let mut it = args.iter().peekable();
    let cmd = match it.peek().map(|s| s.as_str()) {
        Some("serve") => {
            it.next();
            "serve"
        }
        Some("check-config") => {
            it.next();
            "check-config"
        }
        Some("hash-password") => {
            it.next();
            "hash-password"
        }
        Some("gc") => {
            it.next();
            "gc"
        }
        Some("scrub") => {
            it.next();
            "scrub"
        }
        Some("replication") => {
            it.next();
            match it.next().map(|s| s.as_str()) {
                Some("status") => "replication-status",
                _ => return Err("replication needs a subcommand: status".into()),
            }
        }
        Some("usage") => {
            it.next();
            "usage"
        }
        Some("-h" | "--help" | "help") => return Ok(Command::Help),
        Some("-V" | "--version") => return Ok(Command::Version),
        _ => "serve",
    };
    let mut config = None;
    let mut flag = false;
    let mut retention = false;
    let mut dry_run = false;
    let mut overrides = Overrides::default();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dry-run" if cmd == "gc" => flag = true,
            "--dry-run" if cmd == "scrub" => dry_run = true,
            "--retention" if cmd == "scrub" => retention = true,
            "--repair" if cmd == "scrub" => flag = true,
            "--json" if cmd == "replication-status" => flag = true,
            "--port" | "-p" if cmd == "serve" => {
                let v = it.next().ok_or("--port needs a number")?;
                overrides.port = Some(v.parse().map_err(|_| format!("invalid --port {v:?}"))?);
            }
            "--bind-address" if cmd == "serve" => {
                let v = it.next().ok_or("--bind-address needs an IP address")?;
                overrides.bind_address = Some(
                    v.parse()
                        .map_err(|_| format!("invalid --bind-address {v:?}"))?,
                );
            }
            "-c" | "--config" => {
                let file = it.next().ok_or("-c needs a file")?;
                config = Some(PathBuf::from(file));
            }
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unexpected argument {other:?}").into()),
        }
    }
    Ok(match cmd {
        "check-config" => Command::CheckConfig(config),
        "replication-status" => Command::ReplicationStatus(config, flag),
        "usage" => Command::Usage(config),
        "gc" => Command::Gc(config, flag),
        "scrub" if retention && !flag => Command::Retention(config, dry_run),
        "scrub" if retention => return Err("--retention and --repair do not go together".into()),
        "scrub" if dry_run => return Err("scrub --dry-run goes with --retention".into()),
        "scrub" => Command::Scrub(config, flag),
        "hash-password" if config.is_none() => Command::HashPassword,
        "hash-password" => return Err("hash-password takes no -c".into()),
        _ => Command::Serve(config, env_overrides(overrides)?),
    })
}

/// Fills what the command line left unset from `ORIGIN_PORT` and `ORIGIN_BIND_ADDRESS`.
fn env_overrides(mut o: Overrides) -> Result<Overrides, UsageError> {
    if o.port.is_none() {
        if let Ok(v) = std::env::var("ORIGIN_PORT") {
            o.port = Some(
                v.parse()
                    .map_err(|_| format!("invalid ORIGIN_PORT {v:?}"))?,
            );
        }
    }
    if o.bind_address.is_none() {
        if let Ok(v) = std::env::var("ORIGIN_BIND_ADDRESS") {
            o.bind_address = Some(
                v.parse()
                    .map_err(|_| format!("invalid ORIGIN_BIND_ADDRESS {v:?}"))?,
            );
        }
    }
    Ok(o)
}

/// Runs a command line; returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    let cmd = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("origin: {e}\n\n{USAGE}");
            return 2;
        }
    };
    match cmd {
        Command::Help => {
            print!("{USAGE}");
            0
        }
        Command::Version => {
            println!(
                "origin {} (revision {}, built {})",
                env!("CARGO_PKG_VERSION"),
                env!("ORIGIN_GIT_REVISION"),
                env!("ORIGIN_BUILD_DATE")
            );
            0
        }
        Command::CheckConfig(path) => match Config::load(path.as_deref()) {
            Ok((config, source)) => match crate::reload::check(&config) {
                Ok(()) => {
                    for w in config.warnings() {
                        eprintln!("origin: warning: {w}");
                    }
                    println!("configuration OK ({source})");
                    println!(
                        "a restart (not a reload) is needed to change: {}",
                        crate::reload::RESTART_ONLY
                    );
                    0
                }
                Err(e) => {
                    eprintln!("origin: invalid configuration: {e}");
                    1
                }
            },
            Err(e) => {
                eprintln!("origin: invalid configuration: {e}");
                1
            }
        },
        Command::HashPassword => hash_password(),
        Command::Gc(path, dry_run) => with_config(path, |c| crate::maintenance::gc(&c, dry_run)),
        Command::Retention(path, dry_run) => {
            with_config(path, |c| crate::maintenance::retention_cli(&c, dry_run))
        }
        Command::ReplicationStatus(path, json) => {
            with_config(path, |c| crate::maintenance::replication_status(&c, json))
        }
        Command::Scrub(path, repair) => {
            with_config(path, |c| crate::maintenance::scrub(&c, repair))
        }
        Command::Usage(path) => with_config(path, |c| crate::maintenance::usage(&c)),
        Command::Serve(path, overrides) => match Config::load(path.as_deref()) {
            Ok((mut config, source)) => {
                overrides.apply(&mut config);
                crate::serve::run(config, source, overrides)
            }
            Err(e) => {
                eprintln!("origin: invalid configuration: {e}");
                1
            }
        },
    }
}

fn with_config(path: Option<PathBuf>, f: impl FnOnce(Config) -> i32) -> i32 {
    match Config::load(path.as_deref()) {
        Ok((config, _)) => {
            let mut log = config.log.clone();
            log.filter = "warn".into();
            crate::log::init(&log);
            f(config)
        }
        Err(e) => {
            eprintln!("origin: invalid configuration: {e}");
            1
        }
    }
}

fn hash_password() -> i32 {
    let password = match read_password() {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => {
            eprintln!("origin: empty password");
            return 1;
        }
        Err(e) => {
            eprintln!("origin: cannot read password: {e}");
            return 1;
        }
    };
    match crate::auth_hash::hash(&password) {
        Ok(phc) => {
            println!("{phc}");
            0
        }
        Err(e) => {
            eprintln!("origin: {e}");
            1
        }
    }
}

/// One line from stdin; on a terminal, prompted and without echo.
fn read_password() -> std::io::Result<String> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    if tty {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
    }
    let _echo = tty.then(EchoOff::new);
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    if tty {
        eprintln!();
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Turns terminal echo off for its lifetime.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> Self {
        // SAFETY: termios is plain data; tcgetattr fills it or fails, and we check.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return EchoOff(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restores the settings read in `new` on the same fd.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn commands_parse() {
        assert!(matches!(parse(&args("")), Ok(Command::Serve(None, _))));
        assert!(matches!(
            parse(&args("-c x.toml")),
            Ok(Command::Serve(Some(_), _))
        ));
        assert!(matches!(
            parse(&args("serve -c x")),
            Ok(Command::Serve(Some(_), _))
        ));
        match parse(&args("serve --port 5001 --bind-address ::1 -c x")) {
            Ok(Command::Serve(Some(_), o)) => {
                assert_eq!(o.port, Some(5001));
                assert_eq!(o.bind_address, Some("::1".parse().unwrap()));
            }
            _ => panic!("serve with overrides"),
        }
        assert!(parse(&args("serve --port http")).is_err());
        assert!(parse(&args("check-config --port 1")).is_err());
        assert!(matches!(
            parse(&args("check-config -c x")),
            Ok(Command::CheckConfig(Some(_)))
        ));
        assert!(matches!(
            parse(&args("hash-password")),
            Ok(Command::HashPassword)
        ));
        assert!(matches!(parse(&args("--version")), Ok(Command::Version)));
        assert!(matches!(parse(&args("--help")), Ok(Command::Help)));
        assert!(matches!(
            parse(&args("gc --dry-run")),
            Ok(Command::Gc(None, true))
        ));
        assert!(matches!(
            parse(&args("scrub -c x --repair")),
            Ok(Command::Scrub(Some(_), true))
        ));
        assert!(parse(&args("serve --dry-run")).is_err());
        assert!(parse(&args("serve --bogus")).is_err());
        assert!(parse(&args("serve -c")).is_err());
    }
}
