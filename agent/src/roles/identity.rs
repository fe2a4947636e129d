//! Who this process is: the agent id written into every segment record and Parquet footer,
//! used by reconciliation to recognize this agent's own files, and shown in the fleet view.
//!
//! The id belongs to the data directory, not to the host: it is created at the first start in
//! `{data_dir}/agent_id` (a UUIDv7 on one line) and read back at every later start. Two agents
//! on one host (two data directories) are two agents, and an agent whose pod or host is
//! renamed keeps its id as long as it keeps its data directory, which holds the buffer, the
//! flush journal and the outbox the id vouches for. `agent.id` in the configuration still
//! wins. The host name is reported beside the id, as the fleet view's `host.name` label.
//!
//! The file is written durably before the id is used: a temporary file, fsynced, linked into
//! place (never over a file another process created first), then the directory fsynced (and every directory this start created, up from
//! `data_dir`), so that a file written under an id never outlives the record of that id. The
//! data path resolves its identity after it holds the buffer's lock, so two processes never
//! create the id of one data directory at once.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tracing::info;

/// The file under `data_dir` that holds the persistent agent id.
pub const ID_FILE: &str = "agent_id";
/// The fleet view label that carries the host name.
pub const HOST_LABEL: &str = "host.name";
/// Longest agent id (the same bound as `agent.id`).
const MAX_ID_LEN: usize = 128;

/// This process's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `agent.id` when configured, else the data directory's persistent id.
    pub id: String,
    /// Labels the fleet view shows beside the id (`host.name`).
    pub labels: BTreeMap<String, String>,
}

/// The identity of a process configured with `configured` (`agent.id`) and `data_dir`.
pub fn resolve(configured: Option<&str>, data_dir: &Path) -> Result<Identity> {
    let id = match configured {
        Some(id) => id.to_string(),
        None => persistent_id(data_dir)?,
    };
    let labels = BTreeMap::from([(HOST_LABEL.to_string(), host_name())]);
    Ok(Identity { id, labels })
}

/// The machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The id stored in `{data_dir}/agent_id`, created (durably) if the file does not exist.
pub fn persistent_id(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text).with_context(|| {
            format!(
                "{} does not hold a valid agent id; restore it, or remove it to give this \
                 data_dir a new identity (its files not yet registered will then not be \
                 reconciled)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(data_dir, &path),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn parse(text: &str) -> Result<String> {
    let id = text.trim();
    if id.is_empty() || id.len() > MAX_ID_LEN {
        bail!("an agent id is 1 to {MAX_ID_LEN} characters");
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("an agent id holds no whitespace or control characters");
    }
    Ok(id.to_string())
}

fn create(data_dir: &Path, path: &Path) -> Result<String> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut dir = Some(data_dir);
    while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d.to_path_buf());
        dir = d.parent();
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let id = uuid::Uuid::now_v7().to_string();
    let tmp = data_dir.join(format!("{ID_FILE}.tmp.{}", std::process::id()));
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(format!("{id}\n").as_bytes())?;
        f.sync_all()
    });
    written.with_context(|| format!("cannot write {}", tmp.display()))?;
    // A link, not a rename: it never replaces a file another process created meanwhile; the
    // first id written wins and every process reads that one.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return parse(&text)
                .with_context(|| format!("{} is not a valid agent id", path.display()));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot link {} to {}", tmp.display(), path.display()))
        }
    }
    sync_dir(data_dir)?;
    // The directories this start created, so the path to the file survives a power cut too.
    for created in &missing {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    info!(agent_id = %id, path = %path.display(), "created this data_dir's agent id");
    Ok(id)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_created_once_and_kept() {
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("a/b/data");
        let first = resolve(None, &data_dir).unwrap();
        uuid::Uuid::parse_str(&first.id).expect("a UUID");
        assert_eq!(
            std::fs::read_to_string(data_dir.join(ID_FILE)).unwrap(),
            format!("{}\n", first.id)
        );
        assert!(!data_dir.join("agent_id.tmp").exists());
        // A restart reads the same id back.
        assert_eq!(resolve(None, &data_dir).unwrap().id, first.id);
        assert_eq!(first.labels.get(HOST_LABEL), Some(&host_name()));
    }

    #[test]
    fn two_data_dirs_on_one_host_are_two_agents() {
        let root = tempfile::tempdir().unwrap();
        let a = resolve(None, &root.path().join("a")).unwrap();
        let b = resolve(None, &root.path().join("b")).unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(a.labels, b.labels, "same host, same label");
    }

    #[test]
    fn a_configured_id_wins_and_creates_no_file() {
        let root = tempfile::tempdir().unwrap();
        persistent_id(root.path()).unwrap();
        let id = resolve(Some("node-1"), root.path()).unwrap();
        assert_eq!(id.id, "node-1");
        let fresh = root.path().join("fresh");
        assert_eq!(resolve(Some("node-1"), &fresh).unwrap().id, "node-1");
        assert!(!fresh.join(ID_FILE).exists());
    }

    #[test]
    fn a_damaged_file_stops_the_start_instead_of_changing_the_id() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["", "\n", "two words\n", &"x".repeat(129)] {
            std::fs::write(root.path().join(ID_FILE), bad).unwrap();
            let err = format!("{:#}", resolve(None, root.path()).unwrap_err());
            assert!(
                err.contains("does not hold a valid agent id") && err.contains(ID_FILE),
                "{bad:?}: {err}"
            );
            assert_eq!(
                std::fs::read_to_string(root.path().join(ID_FILE)).unwrap(),
                bad,
                "the file was rewritten"
            );
        }
        // An id written by hand is taken as it is.
        std::fs::write(root.path().join(ID_FILE), "edge-7\n").unwrap();
        assert_eq!(resolve(None, root.path()).unwrap().id, "edge-7");
    }

    #[test]
    fn a_leftover_temporary_file_does_not_matter() {
        let root = tempfile::tempdir().unwrap();
        let leftover = root
            .path()
            .join(format!("agent_id.tmp.{}", std::process::id()));
        std::fs::write(&leftover, "half").unwrap();
        let id = persistent_id(root.path()).unwrap();
        assert_eq!(persistent_id(root.path()).unwrap(), id);
        assert!(!leftover.exists());
    }

    #[test]
    fn an_id_file_created_first_by_another_process_wins() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(ID_FILE);
        // Another process created the file between this one's read and its write.
        std::fs::write(&path, "first-writer\n").unwrap();
        assert_eq!(create(root.path(), &path).unwrap(), "first-writer");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first-writer\n");
    }
}
