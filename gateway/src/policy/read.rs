//! Reading one policy file without trusting what the directory holds.
//!
//! A policy directory is edited by people and shared between gateways, so a link to
//! `/dev/zero`, a FIFO or a runaway generator must be refused like any bad edit rather than
//! read forever. Only regular files are read (a symlink is followed only when it ends at a
//! regular file, so Kubernetes' ConfigMap links keep working), and never more than
//! `policies.max_file_bytes`.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

/// Why a file was refused: the line at fault when there is one, and the message (without the
/// file name: the caller adds it).
pub type ReadError = (Option<usize>, String);

/// The file's text, or why it was refused.
pub fn read_policy_file(path: &Path, max_bytes: u64) -> Result<String, ReadError> {
    read_bytes(path, max_bytes)
        .map_err(|e| (None, e))
        .and_then(|bytes| {
            String::from_utf8(bytes).map_err(|e| {
                let valid = e.utf8_error().valid_up_to();
                let bytes = e.as_bytes();
                let line = bytes[..valid].iter().filter(|b| **b == b'\n').count() + 1;
                (
                    Some(line),
                    format!("not valid UTF-8 (byte {valid}): policy files are TOML text"),
                )
            })
        })
}

fn read_bytes(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    // `metadata` follows links: what counts is where they end. Checked before opening, since
    // opening a FIFO blocks until someone writes to it.
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    check_kind(&meta, max_bytes)?;
    let file = File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    // Checked again on the open file: the name may have been swapped in between.
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    check_kind(&meta, max_bytes)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte past the limit tells a file that grew while being read.
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64, max_bytes));
    }
    Ok(bytes)
}

fn check_kind(meta: &Metadata, max_bytes: u64) -> Result<(), String> {
    if !meta.is_file() {
        return Err(format!(
            "is not a regular file ({}): only regular files (or links to one) are read",
            kind_name(meta)
        ));
    }
    if meta.len() > max_bytes {
        return Err(too_large(meta.len(), max_bytes));
    }
    Ok(())
}

fn too_large(len: u64, max: u64) -> String {
    format!("is {len} bytes or more, over policies.max_file_bytes ({max})")
}

fn kind_name(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_devices_fifos_and_large_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let zero = dir.path().join("z.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        let (_, e) = read_policy_file(&zero, 1024).expect_err("device");
        assert!(e.contains("character device"), "{e}");

        let fifo = dir.path().join("f.toml");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(status.success());
        let (_, e) = read_policy_file(&fifo, 1024).expect_err("fifo");
        assert!(e.contains("FIFO"), "{e}");

        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; 2048]).expect("write");
        let (_, e) = read_policy_file(&big, 1024).expect_err("too large");
        assert!(e.contains("policies.max_file_bytes (1024)"), "{e}");

        // A link to a regular file (Kubernetes' ConfigMap layout) is read.
        let real = dir.path().join("real");
        std::fs::write(&real, "[defaults]\n").expect("write");
        let link = dir.path().join("ok.toml");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert_eq!(read_policy_file(&link, 1024).expect("read"), "[defaults]\n");
    }
}
