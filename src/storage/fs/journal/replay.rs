//! Replay at start-up: the log's complete, checksummed groups applied to the tree in order.

use super::*;

/// Reads the log, replays its complete groups into the tree, makes the tree durable and
/// empties the log. Returns the epoch to continue with.
pub(super) fn replay(root: &Path, mut file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len > REPLAY_BYTES_MAX {
        return Err(io::Error::other(format!(
            "journal is {len} bytes, more than REPLAY_BYTES_MAX; it is not Origin's"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)?;
    let mut epoch = 0;
    let mut groups = Vec::new();
    if bytes.len() >= HEADER_BYTES as usize && bytes[..8] == FILE_MAGIC[..] {
        epoch = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
        let mut at = HEADER_BYTES as usize;
        while let Some((payload, next)) = read_group(&bytes, at) {
            groups.push(payload);
            at = next;
        }
    } else if !bytes.is_empty() {
        return Err(io::Error::other(
            "the journal file does not start with Origin's header",
        ));
    }
    let mut records = Vec::new();
    for payload in groups {
        let Some(parsed) = parse_records(payload) else {
            return Err(io::Error::other(
                "a checksummed journal group does not parse",
            ));
        };
        records.extend(parsed);
    }
    if !records.is_empty() {
        // A key written directly after a logged write keeps what the direct write left.
        let mut last_direct: HashMap<&str, usize> = HashMap::new();
        for (i, (op, key, _)) in records.iter().enumerate() {
            if *op == OP_DIRECT {
                last_direct.insert(key, i);
            }
        }
        let mut applied = 0usize;
        for (i, (op, key, data)) in records.iter().enumerate() {
            if last_direct.get(key).is_some_and(|&d| i < d) {
                continue;
            }
            super::super::super::validate_key(key).map_err(|e| io::Error::other(e.to_string()))?;
            let path = root.join(key);
            let a = match *op {
                // Replay overwrites: a logged create-if-absent did take effect (or found the
                // same content-addressed object), and a torn file must be replaced.
                OP_PUT | OP_PUT_IF_ABSENT => Apply::Put {
                    path,
                    bytes: data.to_vec(),
                },
                OP_DELETE => Apply::Delete { path },
                _ => continue,
            };
            apply(root, a)?;
            applied += 1;
        }
        tracing::info!(
            records = records.len(),
            applied,
            "replayed the write journal"
        );
    }
    checkpoint(root, file, epoch + 1)?;
    Ok(epoch + 1)
}

fn read_group(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let frame = bytes.get(at..at + FRAME_BYTES)?;
    if frame[..4] != GROUP_MAGIC[..] {
        return None;
    }
    let len = u32::from_le_bytes(frame[4..8].try_into().ok()?) as usize;
    let payload = bytes.get(at + FRAME_BYTES..at + FRAME_BYTES + len)?;
    if Sha256::digest(payload)[..8] != frame[8..16] {
        return None; // torn: the flush never completed, so nothing in it was acknowledged
    }
    Some((payload, at + FRAME_BYTES + len))
}

type Parsed<'a> = (u8, &'a str, &'a [u8]);

fn parse_records(mut p: &[u8]) -> Option<Vec<Parsed<'_>>> {
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
