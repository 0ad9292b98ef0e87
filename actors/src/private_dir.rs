//! Directories only the server's user may read: the data directory, the body store,
//! audit and log files, backups. A leaf module, so every part that creates one can
//! name it without depending on the others.

/// Creates a directory (and its parents) readable by the owner only.
pub fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}
