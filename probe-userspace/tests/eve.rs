//! The records shown to operators in README.md and docs/alerts.md validate against
//! Suricata's EVE schema (when it is on this machine: see `common/eve.rs`); the probe
//! records, probe-detector's own type, are documented as not EVE and left out.

#[path = "common/eve.rs"]
mod eve;

use serde_json::Value;

#[test]
fn the_documented_records_are_valid_eve() {
    let Some(eve) = eve::Eve::load("the_documented_records_are_valid_eve") else {
        return;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for doc in ["README.md", "docs/alerts.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for line in text.lines().filter(|l| l.starts_with("{\"timestamp\"")) {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{doc}: not JSON ({e}): {line}"));
            if record["event_type"] == "probe" {
                continue;
            }
            eve.assert_valid(&record);
            checked += 1;
        }
    }
    assert!(checked >= 7, "{checked} records checked");
}

#[test]
fn the_schema_rejects_the_earlier_form() {
    let Some(eve) = eve::Eve::load("the_schema_rejects_the_earlier_form") else {
        return;
    };
    // The check can fail: a record of the form written before (top-level `scan`, a `Z`
    // timestamp) is refused.
    let earlier: Value = serde_json::json!({
        "timestamp": "2026-11-21T07:18:18.779184Z",
        "event_type": "alert",
        "src_ip": "198.18.12.1",
        "alert": {"signature_id": 1900001},
        "scan": {"phase": "start"},
    });
    let errors = eve.errors(&earlier).join("\n");
    assert!(errors.contains("scan"), "{errors}");
    assert!(
        errors.contains("timestamp") || errors.contains("does not match"),
        "{errors}"
    );
}
