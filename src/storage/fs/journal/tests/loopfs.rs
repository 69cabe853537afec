//! Checkpoints on real filesystems (ext4 with and without a journal, xfs), each made in an
//! image file and mounted through a loop device. That needs root and the loop driver: elsewhere
//! these tests say so and pass, unless `ORIGIN_TEST_LOOPFS=require` (CI sets it where loop
//! devices work) makes a missing loop device a failure.

use std::process::Command;

use super::*;

/// Image size: room for the other writer's file and the journal's.
const IMAGE_MIB: u64 = 1024;
/// What the other process leaves dirty beside the registry.
const OTHER_MIB: usize = 256;

/// The filesystems these tests make.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Ext4,
    Ext4WithoutJournal,
    Xfs,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Ext4, Kind::Ext4WithoutJournal, Kind::Xfs];

    /// What a checkpoint does there.
    fn mode(self) -> durable::Mode {
        match self {
            Kind::Ext4 | Kind::Xfs => durable::Mode::Commit,
            Kind::Ext4WithoutJournal => durable::Mode::Syncfs,
        }
    }

    fn mkfs(self, image: &Path) -> Command {
        let (program, args): (&str, &[&str]) = match self {
            Kind::Ext4 => ("mkfs.ext4", &["-q", "-F", "-O", "has_journal"]),
            Kind::Ext4WithoutJournal => ("mkfs.ext4", &["-q", "-F", "-O", "^has_journal"]),
            Kind::Xfs => ("mkfs.xfs", &["-q", "-f"]),
        };
        let mut cmd = Command::new(program);
        cmd.args(args).arg(image);
        cmd
    }
}

/// A filesystem in an image file, mounted on a loop device until dropped.
struct LoopFs {
    dir: crate::storage::tests::TempDir,
    device: String,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl LoopFs {
    /// A fresh filesystem of `kind`, or None when this machine cannot mount one (not root,
    /// no loop driver, no `mkfs.ext4` or `mkfs.xfs`).
    fn new(kind: Kind) -> Option<LoopFs> {
        let made = (|| {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Err("not root".to_string());
            }
            let dir = crate::storage::tests::TempDir::new();
            let image = dir.path().join("image");
            File::create(&image)
                .and_then(|f| f.set_len(IMAGE_MIB << 20))
                .map_err(|e| e.to_string())?;
            run(&mut kind.mkfs(&image))?;
            let device = run(Command::new("losetup").args(["-f", "--show"]).arg(&image))?;
            let mount = dir.path().join("mnt");
            std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
            if let Err(e) = run(Command::new("mount").arg(&device).arg(&mount)) {
                let _ = run(Command::new("losetup").args(["-d", &device]));
                return Err(e);
            }
            Ok(LoopFs { dir, device })
        })();
        match made {
            Ok(fs) => Some(fs),
            Err(e) if std::env::var("ORIGIN_TEST_LOOPFS").as_deref() == Ok("require") => {
                panic!("cannot mount a loop filesystem, and ORIGIN_TEST_LOOPFS=require: {e}")
            }
            Err(e) => {
                eprintln!("skipped: cannot mount a loop filesystem here ({e})");
                None
            }
        }
    }

    fn mount(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// Bytes written to the loop device since it was set up (`/sys/block/<dev>/stat`).
    fn written_bytes(&self) -> u64 {
        let name = self.device.trim_start_matches("/dev/");
        let stat = std::fs::read_to_string(format!("/sys/block/{name}/stat")).unwrap();
        let sectors: u64 = stat.split_whitespace().nth(6).unwrap().parse().unwrap();
        sectors * 512
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = run(Command::new("umount").arg(self.mount()));
        let _ = run(Command::new("losetup").args(["-d", &self.device]));
    }
}

/// ext4 with its journal and xfs checkpoint by a journal commit; ext4 without one by
/// `syncfs`.
#[test]
fn the_checkpoint_mode_follows_the_filesystem() {
    for kind in Kind::ALL {
        let Some(fs) = LoopFs::new(kind) else {
            return;
        };
        let root = fs.mount().join("root");
        std::fs::create_dir(&root).unwrap();
        let log = File::create(root.join("log")).unwrap();
        let mode = durable::Mode::of(&File::open(&root).unwrap(), &log, &root);
        assert_eq!(mode, kind.mode(), "{kind:?}");
    }
}

/// Another process's unwritten data stays the kernel's to write on ext4 with a journal and
/// on xfs: a checkpoint there writes the registry's files and one journal commit, and the
/// other file is still dirty after it (a `syncfs` then writes it). Without a journal the
/// checkpoint is a `syncfs` and writes the other file too: the difference this test sees is
/// the mode. What was written is there after a restart on each.
#[test]
fn a_checkpoint_on_a_journaled_filesystem_does_not_write_other_processes_data() {
    use crate::storage::{PutCondition, Storage};
    for kind in Kind::ALL {
        let Some(fs) = LoopFs::new(kind) else {
            return;
        };
        let root = fs.mount().join("root");
        let storage = storage_with_journal(&root);
        let journal = storage.journal().unwrap().clone_shared();
        // Written after the journal's start-up checkpoint, not synced.
        let mut other = File::create(fs.mount().join("other")).unwrap();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..OTHER_MIB {
            std::io::Write::write_all(&mut other, &chunk).unwrap();
        }
        let before_checkpoint = fs.written_bytes();
        let checkpoints = journal.lock().checkpoints;
        block_on(async {
            for i in 0..50 {
                let key = format!("repositories/r/_manifests/tags/t{i}/current/link");
                storage
                    .put(&key, vec![b'x'; 71], PutCondition::Always)
                    .await
                    .unwrap();
            }
        });
        wait_for_checkpoint(&journal, checkpoints);
        let by_checkpoint = fs.written_bytes() - before_checkpoint;
        let other_bytes = (OTHER_MIB as u64) << 20;
        if kind.mode() == durable::Mode::Commit {
            assert!(
                by_checkpoint < other_bytes / 4,
                "{kind:?}: the checkpoint wrote {by_checkpoint} bytes: the other file's too"
            );
            assert!(commit_epoch(&root).is_some_and(|e| e > 0));
            // Still dirty: syncfs writes it now.
            let before_sync = fs.written_bytes();
            // SAFETY: plain syscall on an open descriptor.
            assert_eq!(unsafe { libc::syncfs(other.as_raw_fd()) }, 0);
            assert!(fs.written_bytes() - before_sync >= other_bytes);
        } else {
            assert!(
                by_checkpoint >= other_bytes,
                "{kind:?}: a syncfs checkpoint wrote only {by_checkpoint} bytes"
            );
            assert_eq!(commit_epoch(&root), None);
        }
        drop(storage);
        let storage = storage_with_journal(&root);
        block_on(async {
            for i in 0..50 {
                let key = format!("repositories/r/_manifests/tags/t{i}/current/link");
                assert!(storage.get(&key).await.unwrap().is_some(), "{key}");
            }
        });
    }
}
