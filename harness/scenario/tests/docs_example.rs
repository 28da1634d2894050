//! The complete examples in `docs/scenarios.md` (the ```toml blocks that start with a
//! `#:schema` line and have a `[workload]`) parse and validate, so the documentation
//! cannot drift from the format.

use scenario::LoadMode;

#[test]
fn complete_examples_in_docs_are_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/scenarios.md");
    let doc = std::fs::read_to_string(path).expect("docs/scenarios.md exists");
    let examples: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|block| block.starts_with("#:schema") && block.contains("[workload]"))
        .collect();
    assert_eq!(
        examples.len(),
        3,
        "expected three complete examples (serving, training, load from two regions) in {path}"
    );
    let scenarios: Vec<scenario::Scenario> = examples
        .iter()
        .map(|example| {
            scenario::parse(example, "docs/scenarios.md (complete example)")
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    assert_eq!(scenarios[0].workload.mode, LoadMode::OpenLoop);
    assert_eq!(scenarios[0].faults[2].id_or_default(2), "load.spike-2");
    assert_eq!(scenarios[1].workload.mode, LoadMode::Training);
    assert!(scenarios[1].faults.iter().any(|f| f.kind.is_gpu()));
    assert_eq!(scenarios[2].workload.clients.len(), 2);
    assert_eq!(scenarios[2].workload.total_rate_per_s(), Some(50.0));
}
