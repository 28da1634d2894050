//! The committed JSON schema (`scenarios/schema.json`) matches the model types.

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/schema.json")
}

#[test]
fn committed_schema_is_up_to_date() {
    let fresh =
        serde_json::to_string_pretty(&scenario::json_schema()).expect("schema serializes") + "\n";
    let path = committed_path();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &fresh).expect("write scenarios/schema.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale or missing (the scenario model changed); regenerate it with:\n    UPDATE_SCHEMA=1 cargo test -p scenario --test schema\nand commit the result",
        path.display()
    );
}

#[test]
fn schema_documents_defaults_and_descriptions() {
    let schema = scenario::json_schema();
    let workload = &schema["definitions"]["Workload"]["properties"];
    assert_eq!(workload["connections"]["default"], 32);
    assert!(workload["rate_per_s"]["description"]
        .as_str()
        .is_some_and(|d| d.contains("offered rate")));
}
