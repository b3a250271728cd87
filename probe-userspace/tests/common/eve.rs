//! Suricata's EVE schema (Suricata's `etc/schema.json`, GPL-2.0, so not in this
//! repository): read from `../shared/suricata/eve-schema.json` beside the checkout, or
//! from `PROBE_EVE_SCHEMA`. CI always has it; a clone alone does not, and then the check
//! is skipped with one line.

use std::path::PathBuf;

use serde_json::Value;

/// A validator for EVE records.
pub struct Eve {
    validator: jsonschema::Validator,
}

/// Where the schema is looked for.
fn schema_path() -> PathBuf {
    std::env::var_os("PROBE_EVE_SCHEMA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/suricata/eve-schema.json"),
        PathBuf::from,
    )
}

impl Eve {
    /// The schema, or `None` (said in one line) when it is not on this machine.
    pub fn load(test: &str) -> Option<Self> {
        let path = schema_path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!(
                "{test}: EVE schema check skipped: no {} (Suricata's etc/schema.json; set PROBE_EVE_SCHEMA)",
                path.display()
            );
            return None;
        };
        let schema: Value = serde_json::from_str(&text).expect("the EVE schema is JSON");
        let validator = jsonschema::validator_for(&schema).expect("the EVE schema compiles");
        Some(Self { validator })
    }

    /// Every violation of the schema in `record`, one line each.
    pub fn errors(&self, record: &Value) -> Vec<String> {
        self.validator
            .iter_errors(record)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    /// Panics with every violation when `record` is not a valid EVE record.
    pub fn assert_valid(&self, record: &Value) {
        let errors = self.errors(record);
        assert!(
            errors.is_empty(),
            "not a valid EVE record: {errors:#?}\n{record}"
        );
    }
}
