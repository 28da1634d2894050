//! Every scenario file committed under `scenarios/` parses and validates (zero files is fine).

use std::path::PathBuf;

#[test]
fn every_committed_scenario_is_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| scenario::load(path).err().map(|e| e.to_string()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} scenario files are invalid:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
