//! Reading the log back: at start-up (replay), and after a failed checkpoint (`recover.rs`).

use super::*;

/// Reads the log, replays its complete groups into the tree, makes the tree durable and
/// starts the log again. Returns the epoch to continue with.
pub(super) fn replay(root: &Path, root_dir: &File, mut file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len > REPLAY_BYTES_MAX {
        return Err(io::Error::other(format!(
            "journal is {len} bytes, more than REPLAY_BYTES_MAX; it is not Origin's"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)?;
    let (epoch, groups) = read_log(&bytes)?;
    let records = parse_groups(&groups)?;
    if !records.is_empty() {
        let mut applied = 0usize;
        for (key, op) in last_states(&records) {
            apply(root, op.apply(root, key)?)?;
            applied += 1;
        }
        tracing::info!(
            records = records.len(),
            applied,
            "replayed the write journal"
        );
    }
    checkpoint(root_dir, file, epoch + 1)?;
    Ok(epoch + 1)
}

/// The log's epoch and its complete, checksummed groups, in order.
pub(super) fn read_log(bytes: &[u8]) -> io::Result<(u64, Vec<&[u8]>)> {
    let mut groups = Vec::new();
    if bytes.is_empty() {
        return Ok((0, groups));
    }
    let salted = match bytes.get(..8) {
        Some(m) if m == &FILE_MAGIC[..] => true,
        Some(m) if m == &FILE_MAGIC_V1[..] => false,
        _ => {
            return Err(io::Error::other(
                "the journal file does not start with Origin's header",
            ))
        }
    };
    let epoch = bytes
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    let mut at = HEADER_BYTES as usize;
    while let Some((payload, next)) = read_group(bytes, at, salted.then_some(epoch)) {
        groups.push(payload);
        at = next;
    }
    Ok((epoch, groups))
}

/// A group at `at`, if it is whole and belongs to this log: its checksum covers `epoch` in the
/// current format (none in the first), so a group left from an earlier epoch ends the log.
fn read_group(bytes: &[u8], at: usize, epoch: Option<u64>) -> Option<(&[u8], usize)> {
    let frame = bytes.get(at..at + FRAME_BYTES)?;
    if frame[..4] != GROUP_MAGIC[..] {
        return None;
    }
    let len = u32::from_le_bytes(frame[4..8].try_into().ok()?) as usize;
    let payload = bytes.get(at + FRAME_BYTES..at + FRAME_BYTES + len)?;
    let sum = match epoch {
        Some(epoch) => group_sum(epoch, payload),
        None => Sha256::digest(payload)[..8].try_into().ok()?,
    };
    if sum[..] != frame[8..16] {
        return None; // torn (the flush never completed, so nothing in it was acknowledged) or old
    }
    Some((payload, at + FRAME_BYTES + len))
}

/// One record as read back: its operation, key and data.
pub(super) type Parsed<'a> = (u8, &'a str, &'a [u8]);

pub(super) fn parse_groups<'a>(groups: &[&'a [u8]]) -> io::Result<Vec<Parsed<'a>>> {
    let mut records = Vec::new();
    for payload in groups {
        let Some(parsed) = parse_records(payload) else {
            return Err(io::Error::other(
                "a checksummed journal group does not parse",
            ));
        };
        records.extend(parsed);
    }
    Ok(records)
}

pub(super) fn parse_records(mut p: &[u8]) -> Option<Vec<Parsed<'_>>> {
    let mut out = Vec::new();
    while !p.is_empty() {
        let op = p[0];
        let klen = u16::from_le_bytes(p.get(1..3)?.try_into().ok()?) as usize;
        let key = std::str::from_utf8(p.get(3..3 + klen)?).ok()?;
        p = &p[3 + klen..];
        let data: &[u8] = match op {
            OP_PUT | OP_PUT_IF_ABSENT => {
                let dlen = u32::from_le_bytes(p.get(..4)?.try_into().ok()?) as usize;
                let d = p.get(4..4 + dlen)?;
                p = &p[4 + dlen..];
                d
            }
            OP_DELETE | OP_DIRECT => &[],
            _ => return None,
        };
        if key.starts_with(TEMP_PREFIX) {
            return None;
        }
        out.push((op, key, data));
    }
    Some(out)
}

/// What the log leaves a key as.
pub(super) enum LastState<'a> {
    Put(&'a [u8]),
    Delete,
}

impl LastState<'_> {
    /// The mutation that puts the key in this state. Replay overwrites: a logged
    /// create-if-absent did take effect (or found the same content-addressed object), and a
    /// torn file must be replaced.
    pub(super) fn apply(&self, root: &Path, key: &str) -> io::Result<Apply> {
        super::super::super::validate_key(key).map_err(|e| io::Error::other(e.to_string()))?;
        let path = root.join(key);
        Ok(match self {
            LastState::Put(bytes) => Apply::Put {
                path,
                bytes: bytes.to_vec(),
            },
            LastState::Delete => Apply::Delete { path },
        })
    }
}

/// Each key's state after the records, in the order of each key's last record. A key whose
/// last record is a direct marker was written durably outside the log: left as it is found.
/// Applying these is what applying every record in order would leave.
pub(super) fn last_states<'a>(records: &[Parsed<'a>]) -> Vec<(&'a str, LastState<'a>)> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, (_, key, _)) in records.iter().enumerate() {
        last.insert(key, i);
    }
    let mut out = Vec::with_capacity(last.len());
    for (i, (op, key, data)) in records.iter().enumerate() {
        if last.get(key) != Some(&i) {
            continue;
        }
        match *op {
            OP_PUT | OP_PUT_IF_ABSENT => out.push((*key, LastState::Put(data))),
            OP_DELETE => out.push((*key, LastState::Delete)),
            _ => {}
        }
    }
    out
}
