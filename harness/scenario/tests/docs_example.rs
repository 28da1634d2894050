//! The complete example in `docs/scenarios.md` (the ```toml block that starts with a
//! `#:schema` line and has a `[workload]`) parses and validates, so the documentation
//! cannot drift from the format.

#[test]
fn complete_example_in_docs_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/scenarios.md");
    let doc = std::fs::read_to_string(path).expect("docs/scenarios.md exists");
    let examples: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|block| block.starts_with("#:schema") && block.contains("[workload]"))
        .collect();
    assert_eq!(examples.len(), 1, "expected one complete example in {path}");
    for example in examples {
        let scenario = scenario::parse(example, "docs/scenarios.md (complete example)")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(scenario.faults[2].id_or_default(2), "load.spike-2");
    }
}
