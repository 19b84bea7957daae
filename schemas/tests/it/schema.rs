//! The committed JSON Schema must match the Rust types.

use std::path::Path;

#[test]
fn committed_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(schemas::SCHEMA_FILE);
    let current = serde_json::to_string_pretty(&schemas::json_schema()).unwrap() + "\n";
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(committed == current, "{} is stale: run `make schema` and commit the result", path.display());
}

#[test]
fn schema_accepts_the_example_and_rejects_unknown_fields() {
    let schema = schemas::json_schema();
    let text = serde_json::to_string(&schema).unwrap();
    // Spot checks that the generated schema carries the strictness and the docs.
    assert!(text.contains("\"additionalProperties\":false"));
    assert!(text.contains("backendRefs"));
    assert!(text.contains(schemas::duration::DURATION_PATTERN.replace('\\', "\\\\").as_str()));
    assert!(text.contains("Relative share of traffic"));
}
