//! Finds the stack's binaries. The harness never builds them itself; it looks, in order,
//! in `--bin-dir` / `FAULTLINE_BIN_DIR`, next to the running executable, and one folder up
//! (where `cargo test` puts test executables, under `target/<profile>/deps`).

use std::path::{Path, PathBuf};

use scenario::ComponentKind;

/// The binary name of a component kind (its `binary` in `scenario::KINDS`).
pub fn binary_name(kind: ComponentKind) -> &'static str {
    kind.spec().binary
}

/// The stack binary was not found anywhere it is looked for.
#[derive(Debug, thiserror::Error)]
#[error("stack binary `{name}` not found (looked in: {looked}); build it with `cargo build --release -p {name}` (or `cargo build --workspace`), or point --bin-dir / FAULTLINE_BIN_DIR at the folder holding it")]
pub struct MissingBinary {
    pub name: String,
    pub looked: String,
}

/// Folders searched, in order.
pub fn search_dirs(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = explicit {
        dirs.push(d.to_path_buf());
    }
    if let Some(d) = std::env::var_os("FAULTLINE_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            dirs.push(dir.to_path_buf());
            if let Some(up) = dir.parent() {
                dirs.push(up.to_path_buf());
            }
        }
    }
    dirs
}

/// Path of the binary for `kind`.
pub fn locate(kind: ComponentKind, explicit: Option<&Path>) -> Result<PathBuf, MissingBinary> {
    let name = binary_name(kind);
    let dirs = search_dirs(explicit);
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| MissingBinary {
            name: name.to_owned(),
            looked: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The program of a `kind = "command"` component was not found.
#[derive(Debug, thiserror::Error)]
#[error("component {component}: command `{command}` not found ({looked}); expected an executable file: a path, or a name in PATH")]
pub struct MissingCommand {
    pub component: String,
    pub command: String,
    pub looked: String,
}

/// The program of a `kind = "command"` component: `command` itself when it names a path
/// (has a '/'), else the first executable file of that name in `PATH`.
pub fn locate_command(component: &str, command: &str) -> Result<PathBuf, MissingCommand> {
    let missing = |looked: String| MissingCommand {
        component: component.to_owned(),
        command: command.to_owned(),
        looked,
    };
    if command.contains('/') {
        let p = PathBuf::from(command);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(missing("no executable file at that path".to_owned()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.iter()
        .map(|d| d.join(command))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            missing(format!(
                "looked in PATH: {}",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            ))
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
