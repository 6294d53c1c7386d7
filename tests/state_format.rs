//! Every released state format (one example per version under `state/`) must keep loading,
//! match the checked-in schema, and a newer format than this binary's is never overwritten.

use std::path::PathBuf;
use std::time::Duration;

use mirrord_up::state::{FORMAT_VERSION, State, StateError, StateStore};

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("state");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".example.json"))
        .collect();
    v.sort();
    v
}

/// The snapshot `value` with the journal `lines` applied, as the schema describes it (written
/// here on JSON values, apart from the store's own code): the header must name the snapshot's
/// generation; each later line sets or removes the records it names, sets the status of those
/// in `stopping` to "stopping", and replaces the head's fields.
fn applied(mut value: serde_json::Value, lines: &str) -> serde_json::Value {
    let generation = value
        .as_object_mut()
        .unwrap()
        .remove("journal")
        .expect("a journal example belongs to a snapshot naming it");
    let mut lines = lines.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["generation"], generation, "the journal's header");
    for line in lines {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        for (name, record) in entry["services"].as_object().unwrap() {
            let services = value["services"].as_object_mut().unwrap();
            if record.is_null() {
                services.remove(name);
            } else {
                services.insert(name.clone(), record.clone());
            }
        }
        for name in entry["stopping"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            value["services"][name]["status"] = "stopping".into();
        }
        if let Some(head) = entry.get("head").and_then(|h| h.as_object()) {
            for (k, v) in head {
                value[k] = v.clone();
            }
        }
    }
    value
}

#[test]
fn every_example_loads_and_matches_the_schema() {
    let schema_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("state/state.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let examples = examples();
    assert!(!examples.is_empty(), "state/ holds no example");
    let mut versions = Vec::new();
    for path in examples {
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());

        // Through the real store, as a command would read it, with the example's journal
        // (format 2) beside it.
        let root = tempfile::tempdir().unwrap();
        let journal = path.with_extension("journal");
        let journal = std::fs::read_to_string(&journal).ok();
        let expected = match &journal {
            Some(lines) => applied(value, lines),
            None => value,
        };
        let state: State = serde_json::from_value(expected).unwrap();
        let store = StateStore::open(root.path(), &state.project).unwrap();
        std::fs::write(store.state_path(), &text).unwrap();
        if let Some(lines) = &journal {
            std::fs::write(store.dir.join("state.journal"), lines).unwrap();
        }
        let loaded = store.read().unwrap().expect("present");
        assert_eq!(loaded, state, "{}", path.display());
        versions.push(loaded.format_version);
    }
    assert!(
        versions.contains(&FORMAT_VERSION),
        "no example of the current format {FORMAT_VERSION} in state/"
    );
}

#[test]
fn a_newer_format_is_refused_for_writing_and_left_intact() {
    let root = tempfile::tempdir().unwrap();
    let store = StateStore::open(root.path(), "demo").unwrap();
    let text = std::fs::read_to_string(examples().pop().unwrap()).unwrap();
    let newer = text.replacen(
        &format!("\"format_version\": {FORMAT_VERSION}"),
        &format!("\"format_version\": {}", FORMAT_VERSION + 1),
        1,
    );
    std::fs::write(store.state_path(), &newer).unwrap();
    let lock = store.lock(Duration::from_secs(1)).unwrap();
    let err = store.save(&lock, &State::new("demo")).unwrap_err();
    assert!(matches!(err, StateError::TooNew { .. }), "{err}");
    assert!(err.to_string().contains("newer"), "{err}");
    assert_eq!(std::fs::read_to_string(store.state_path()).unwrap(), newer);
}
