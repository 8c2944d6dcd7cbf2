//! The admin token: from `PAZ_TOKEN`, or generated once into `<data dir>/admin-token` (0600).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Where the token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The `PAZ_TOKEN` environment variable (or `--token`).
    Environment,
    /// The token file, written at an earlier start.
    File,
    /// Generated now and written to the token file: show it to the user once.
    Generated,
}

/// Errors of loading the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read or written.
    #[error("admin token file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The token file can be read by other users of the machine.
    #[error(
        "the admin token file {path} can be read by other users (mode {mode:04o}); restrict it with `chmod 600 {path}`"
    )]
    NotPrivate {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The given token is too short to be safe.
    #[error("the admin token must be at least 16 characters long")]
    TooShort,
    /// No random bytes could be had.
    #[error("cannot generate a token: {0}")]
    Random(String),
}

/// The token to use: `given` when set, else the file's, else a new one written to the file.
pub fn load_or_generate(
    given: Option<&str>,
    data_dir: &Path,
) -> Result<(String, TokenSource), TokenError> {
    if let Some(token) = given {
        let token = token.trim();
        if token.len() < 16 {
            return Err(TokenError::TooShort);
        }
        return Ok((token.to_owned(), TokenSource::Environment));
    }
    let path = data_dir.join("admin-token");
    let io = |source| TokenError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Ok(meta) = std::fs::metadata(&path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(TokenError::NotPrivate {
                path: path.display().to_string(),
                mode,
            });
        }
    }
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 16 => {
            return Ok((text.trim().to_owned(), TokenSource::File));
        }
        Ok(_) => return Err(TokenError::TooShort),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    create_private_dir(data_dir).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    file.write_all(format!("{token}\n").as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok((token, TokenSource::Generated))
}

/// Creates the data dir (and its parents) readable by its owner only (0700); an existing
/// directory is left as it is (its files are checked one by one).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Compares tokens in time independent of where they differ.
pub fn matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_once_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (token, source) = load_or_generate(None, dir.path()).unwrap();
        assert_eq!(source, TokenSource::Generated);
        assert_eq!(token.len(), 64);
        let mode = std::fs::metadata(dir.path().join("admin-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, source) = load_or_generate(None, dir.path()).unwrap();
        assert_eq!((again, source), (token, TokenSource::File));
        assert!(matches!(
            load_or_generate(Some("short"), dir.path()),
            Err(TokenError::TooShort)
        ));
        assert!(matches("abc", "abc") && !matches("abd", "abc") && !matches("ab", "abc"));
    }

    #[test]
    fn the_data_dir_is_private_and_a_readable_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/paz-data");
        load_or_generate(None, &data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "a new data dir is the owner's only");

        let file = data.join("admin-token");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_generate(None, &data).unwrap_err();
        assert!(
            matches!(err, TokenError::NotPrivate { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
