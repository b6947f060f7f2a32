//! The sidecar's command line, computed in Rust: the page never supplies a path or a pid.

use std::path::{Path, PathBuf};

/// What the app decides about the sidecar it runs (computed at every start, so that the app can
/// look up its data and log folders through Tauri's path resolver).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SidecarOptions {
    /// The database file (`--db`); typically `<app data dir>/tasks.db`.
    pub db: PathBuf,
    /// The roots the file executors may touch (`--allow-path`, one each). A filesystem root
    /// (`/`, `C:\`) is refused: it would hand the sidecar every file of the user.
    pub allow_paths: Vec<PathBuf>,
    /// The sidecar's own rotated log file (`--log-file`); typically `<app log dir>/sidecar.log`.
    pub log_file: Option<PathBuf>,
    /// `debug`, `info`, `warning` or `error` (`--log-level`); the sidecar's default when `None`.
    pub log_level: Option<String>,
    /// Further arguments the app wants (`--plugin MODULE`, `--max-concurrency N`, ...).
    pub extra_args: Vec<String>,
}

const LOG_LEVELS: &[&str] = &["debug", "info", "warning", "error"];

/// Whether `path` is a filesystem root (`/`, `C:\`, `\\server\share\`): nothing to confine to.
pub fn is_root(path: &Path) -> bool {
    path.parent().is_none()
}

/// The sidecar's argument vector:
/// `--parent-pid <pid> --db <db> [--allow-path <dir>]... [--log-level <l>] [--log-file <f>] [extra]...`.
///
/// Every path must be absolute (a relative one would depend on the app's working directory),
/// no allowed root may be a filesystem root, and the log level must be one the sidecar knows.
pub fn sidecar_args(parent_pid: u32, options: &SidecarOptions) -> Result<Vec<String>, String> {
    if !options.db.is_absolute() {
        return Err(format!(
            "the database path must be absolute: {}",
            options.db.display()
        ));
    }
    let mut args = vec![
        "--parent-pid".to_string(),
        parent_pid.to_string(),
        "--db".to_string(),
        path_arg(&options.db),
    ];
    for root in &options.allow_paths {
        if !root.is_absolute() {
            return Err(format!(
                "an allowed path must be absolute: {}",
                root.display()
            ));
        }
        if is_root(root) {
            return Err(format!(
                "a filesystem root cannot be an allowed path: {}",
                root.display()
            ));
        }
        args.push("--allow-path".to_string());
        args.push(path_arg(root));
    }
    if let Some(level) = &options.log_level {
        if !LOG_LEVELS.contains(&level.as_str()) {
            return Err(format!(
                "unknown log level {level:?} (one of {})",
                LOG_LEVELS.join(", ")
            ));
        }
        args.push("--log-level".to_string());
        args.push(level.clone());
    }
    if let Some(file) = &options.log_file {
        if !file.is_absolute() {
            return Err(format!("the log file must be absolute: {}", file.display()));
        }
        args.push("--log-file".to_string());
        args.push(path_arg(file));
    }
    args.extend(options.extra_args.iter().cloned());
    Ok(args)
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abs(p: &str) -> PathBuf {
        if cfg!(windows) {
            PathBuf::from(format!(
                "C:\\{}",
                p.trim_start_matches('/').replace('/', "\\")
            ))
        } else {
            PathBuf::from(p)
        }
    }

    #[test]
    fn every_argument_comes_from_the_app_and_the_parent_pid_is_first() {
        let options = SidecarOptions {
            db: abs("/data/app/tasks.db"),
            allow_paths: vec![abs("/home/u/Pictures"), abs("/media/backup")],
            log_file: Some(abs("/logs/app/sidecar.log")),
            log_level: Some("info".into()),
            extra_args: vec!["--max-concurrency".into(), "2".into()],
        };
        let args = sidecar_args(4242, &options).unwrap();
        let expected: Vec<String> = vec![
            "--parent-pid".into(),
            "4242".into(),
            "--db".into(),
            path_arg(&abs("/data/app/tasks.db")),
            "--allow-path".into(),
            path_arg(&abs("/home/u/Pictures")),
            "--allow-path".into(),
            path_arg(&abs("/media/backup")),
            "--log-level".into(),
            "info".into(),
            "--log-file".into(),
            path_arg(&abs("/logs/app/sidecar.log")),
            "--max-concurrency".into(),
            "2".into(),
        ];
        assert_eq!(args, expected);
    }

    #[test]
    fn optional_parts_are_left_out() {
        let options = SidecarOptions {
            db: abs("/d/tasks.db"),
            ..Default::default()
        };
        let args = sidecar_args(7, &options).unwrap();
        assert_eq!(args.len(), 4);
        assert_eq!(args[0..2], ["--parent-pid".to_string(), "7".to_string()]);
    }

    #[test]
    fn a_filesystem_root_is_refused_as_an_allowed_path() {
        let root = if cfg!(windows) { "C:\\" } else { "/" };
        let options = SidecarOptions {
            db: abs("/d/tasks.db"),
            allow_paths: vec![PathBuf::from(root)],
            ..Default::default()
        };
        let err = sidecar_args(7, &options).unwrap_err();
        assert!(err.contains("filesystem root"), "{err}");
    }

    #[test]
    fn relative_paths_and_unknown_log_levels_are_refused() {
        let relative_db = SidecarOptions {
            db: PathBuf::from("tasks.db"),
            ..Default::default()
        };
        assert!(sidecar_args(7, &relative_db)
            .unwrap_err()
            .contains("database"));

        let relative_root = SidecarOptions {
            db: abs("/d/tasks.db"),
            allow_paths: vec![PathBuf::from("Pictures")],
            ..Default::default()
        };
        assert!(sidecar_args(7, &relative_root)
            .unwrap_err()
            .contains("allowed path"));

        let level = SidecarOptions {
            db: abs("/d/tasks.db"),
            log_level: Some("verbose".into()),
            ..Default::default()
        };
        assert!(sidecar_args(7, &level).unwrap_err().contains("log level"));
    }
}
