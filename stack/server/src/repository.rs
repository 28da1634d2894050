//! Model versions: where a version comes from, and the Triton-style model repository.
//!
//! A loaded model's version is, in order: the `@VERSION` given with `--model`, the `version`
//! entry of its safetensors file's metadata ([`weights_version`]), or `1`. A repository
//! (`--model-repository DIR`) holds versions as `DIR/NAME/VERSION/model.safetensors`, as
//! Triton lays them out; [`scan`] lists them and [`latest`] picks the one a load serves when
//! none is named. Loading itself (start the new version's engine, swap it in, let the old
//! one finish its work) is in [`crate::engine`] and `POST /v2/repository/models/NAME/load`.
//!
//! Not here: polling the directory for changes (loads are explicit, as Triton's
//! `--model-control-mode=explicit`), or unloading.

use std::path::{Path, PathBuf};

/// File name of a version's weights inside `DIR/NAME/VERSION/`.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The version of weights that say none.
pub const DEFAULT_VERSION: &str = "1";
/// Largest safetensors header read for its metadata (the format's own limit is 100 MB).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Most models, and most versions of one model, [`scan`] lists.
pub const MAX_ENTRIES: usize = 1024;

/// The `version` entry of a safetensors file's `__metadata__`, if it has one.
pub fn weights_version(path: &Path) -> Result<Option<String>, String> {
    use std::io::Read;
    let what = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut f = std::fs::File::open(path).map_err(|e| what(&e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| what(&e))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_BYTES {
        return Err(format!(
            "{}: safetensors header of {n} bytes is over the limit of {MAX_HEADER_BYTES}",
            path.display()
        ));
    }
    let mut header = Vec::new();
    f.take(n).read_to_end(&mut header).map_err(|e| what(&e))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| format!("{}: safetensors header is not JSON: {e}", path.display()))?;
    let version = json
        .get("__metadata__")
        .and_then(|m| m.get("version"))
        .and_then(serde_json::Value::as_str);
    match version {
        Some(v) if crate::config::valid_version(v) => Ok(Some(v.to_string())),
        Some(v) => Err(format!(
            "{}: metadata version `{v}` must be 1 to 64 of A-Z a-z 0-9 . _ -",
            path.display()
        )),
        None => Ok(None),
    }
}

/// One model of a repository and its versions (those with a weights file), oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoModel {
    pub name: String,
    pub versions: Vec<String>,
}

/// Lists `dir`'s models and versions, by name; at most [`MAX_ENTRIES`] of each.
pub fn scan(dir: &Path) -> Result<Vec<RepoModel>, String> {
    let list = |d: &Path| -> Result<Vec<(String, PathBuf)>, String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(d).map_err(|e| format!("{}: {e}", d.display()))? {
            let entry = entry.map_err(|e| format!("{}: {e}", d.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && crate::config::valid_version(&name) {
                out.push((name, entry.path()));
            }
            if out.len() > MAX_ENTRIES {
                return Err(format!("{}: more than {MAX_ENTRIES} entries", d.display()));
            }
        }
        Ok(out)
    };
    let mut models = Vec::new();
    for (name, path) in list(dir)? {
        let mut versions: Vec<String> = list(&path)?
            .into_iter()
            .filter(|(_, p)| p.join(WEIGHTS_FILE).is_file())
            .map(|(v, _)| v)
            .collect();
        versions.sort_by(|a, b| version_order(a, b));
        models.push(RepoModel { name, versions });
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

/// Versions that are numbers compare as numbers, after every non-numeric one; the rest
/// compare as text.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
        (Err(_), Ok(_)) => std::cmp::Ordering::Less,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// The version a load serves when none is named: the greatest by [`version_order`].
pub fn latest(versions: &[String]) -> Option<&str> {
    versions
        .iter()
        .max_by(|a, b| version_order(a, b))
        .map(String::as_str)
}

/// Where version `version` of `name` keeps its weights in `dir`.
pub fn weights_path(dir: &Path, name: &str, version: &str) -> PathBuf {
    dir.join(name).join(version).join(WEIGHTS_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_versions_order_as_numbers_after_named_ones() {
        let v: Vec<String> = ["10", "9", "beta", "2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(latest(&v), Some("10"));
        let mut sorted = v.clone();
        sorted.sort_by(|a, b| version_order(a, b));
        assert_eq!(sorted, vec!["beta", "2", "9", "10"]);
        assert_eq!(latest(&[]), None);
    }

    #[test]
    fn scan_lists_versions_that_have_weights() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (m, v, weights) in [
            ("lm", "1", true),
            ("lm", "2", true),
            ("lm", "3", false),
            ("mlp", "7", true),
        ] {
            let d = dir.path().join(m).join(v);
            std::fs::create_dir_all(&d).expect("mkdir");
            if weights {
                std::fs::write(d.join(WEIGHTS_FILE), b"x").expect("write");
            }
        }
        let models = scan(dir.path()).expect("scan");
        assert_eq!(
            models,
            vec![
                RepoModel {
                    name: "lm".into(),
                    versions: vec!["1".into(), "2".into()]
                },
                RepoModel {
                    name: "mlp".into(),
                    versions: vec!["7".into()]
                },
            ]
        );
    }

    #[test]
    fn metadata_version_is_read_from_the_safetensors_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, header: &str| {
            let p = dir.path().join(name);
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            std::fs::write(&p, bytes).expect("write");
            p
        };
        let with = write("a", r#"{"__metadata__":{"version":"2025-11"}}"#);
        assert_eq!(
            weights_version(&with).expect("ok").as_deref(),
            Some("2025-11")
        );
        let without = write("b", r#"{}"#);
        assert_eq!(weights_version(&without).expect("ok"), None);
        let bad = write("c", r#"{"__metadata__":{"version":"a/b"}}"#);
        assert!(weights_version(&bad).expect_err("bad").contains("a/b"));
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        std::fs::write(dir.path().join("d"), huge).expect("write");
        assert!(weights_version(&dir.path().join("d"))
            .expect_err("huge")
            .contains("limit"));
    }
}
