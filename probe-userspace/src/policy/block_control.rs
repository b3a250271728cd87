//! The control socket's protocol (`probe-detector block list|add|remove`): one JSON line
//! per request and per response; [`crate::policy::block::Blocker::handle`] carries them out.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::policy::block::Blocked;

/// A request on the control socket (`probe-detector block ...`), one JSON line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// The blocks in force.
    List,
    /// Block an address by hand (`ttl_s`: the policy's when absent).
    Add { addr: IpAddr, ttl_s: Option<u64> },
    /// Lift a block.
    Remove { addr: IpAddr },
}

/// The answer to a [`Request`], one JSON line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// What went wrong, if something did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was done (add, remove).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<String>,
    /// The blocks in force (list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<Blocked>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_are_one_json_line_each() {
        let add = Request::Add {
            addr: "198.18.7.1".parse().unwrap(),
            ttl_s: Some(60),
        };
        let line = serde_json::to_string(&add).unwrap();
        assert_eq!(line, r#"{"op":"add","addr":"198.18.7.1","ttl_s":60}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), add);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"list"}"#).unwrap(),
            Request::List
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"flush"}"#).is_err());
        let empty = serde_json::to_string(&Response::default()).unwrap();
        assert_eq!(empty, "{}");
    }
}
