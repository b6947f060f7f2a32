//! Line routing between several windows and the one sidecar they share.
//!
//! Requests from the page get a fresh id before they reach the sidecar (two windows may both
//! use id 1); the answer goes back to the window that asked, under its own id. Notifications go
//! to every window. A request from the sidecar (`task.execute` for a host executor) goes to the
//! window that most recently sent `executor.register` for that type, and the page's answer to
//! it passes through unchanged. `initialize` reaches the sidecar once per sidecar process; the
//! other windows get the cached result.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

/// Requests in flight at once (all windows together); more is refused, so that a page that
/// never stops sending cannot grow the table without bound.
pub const MAX_PENDING: usize = 10_000;

/// Where a message from the sidecar goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One window (by label).
    Window(String),
    /// Every window.
    All,
}

/// One message for the page(s): compact JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub target: Target,
    pub message: String,
}

/// What to do with a message: lines for the sidecar's stdin and messages for the page(s).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Routed {
    pub to_sidecar: Option<String>,
    pub to_pages: Vec<Delivery>,
    /// The params of a `sidecar.ready` notification, when the message was one.
    pub ready: Option<Value>,
}

#[derive(Debug, Clone)]
struct Pending {
    window: String,
    id: Value,
    initialize: bool,
}

/// The routing state of one sidecar process (reset when it ends).
#[derive(Debug, Default)]
pub struct Router {
    next_id: u64,
    pending: HashMap<u64, Pending>,
    /// The result of the first `initialize` this sidecar answered.
    initialized: Option<Value>,
    /// The rewritten id of the `initialize` on its way, and who else waits for its answer.
    initializing: Option<u64>,
    waiting: Vec<(String, Value)>,
    /// executor type → the window that registered it last.
    executors: HashMap<String, String>,
}

impl Router {
    pub fn new() -> Self {
        Router::default()
    }

    /// A fresh request id for a request of the Rust side's own (e.g. `shutdown`); its answer
    /// goes nowhere.
    pub fn own_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Requests waiting for the sidecar's answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// One message from the page of `window`. Errors (for `send` to reject with): not one JSON
    /// object or array, or too many requests in flight.
    pub fn from_page(&mut self, window: &str, text: &str) -> Result<Routed, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not a JSON-RPC message: {e}"))?;
        let mut routed = Routed::default();
        match value {
            Value::Object(message) => {
                if let Some(forward) = self.page_message(window, message, &mut routed)? {
                    routed.to_sidecar = Some(forward.to_string());
                }
            }
            Value::Array(batch) if batch.is_empty() => {
                // The sidecar answers an empty batch with one error, which would have no owner.
                return Err("an empty batch is not a JSON-RPC message".to_string());
            }
            Value::Array(batch) => {
                if self.pending.len() + batch.len() > MAX_PENDING {
                    return Err(format!(
                        "too many requests in flight ({MAX_PENDING}); wait for answers first"
                    ));
                }
                if batch.iter().any(|element| !element.is_object()) {
                    return Err("a batch may only hold JSON objects".to_string());
                }
                let mut forward = Vec::with_capacity(batch.len());
                for element in batch {
                    match element {
                        Value::Object(message) => {
                            if let Some(v) = self.page_message(window, message, &mut routed)? {
                                forward.push(v);
                            }
                        }
                        _ => return Err("a batch may only hold JSON objects".to_string()),
                    }
                }
                if !forward.is_empty() {
                    routed.to_sidecar = Some(Value::Array(forward).to_string());
                }
            }
            _ => return Err("a JSON-RPC message is a JSON object or array".to_string()),
        }
        Ok(routed)
    }

    /// One object from the page: the value to forward (if any).
    fn page_message(
        &mut self,
        window: &str,
        mut message: Map<String, Value>,
        routed: &mut Routed,
    ) -> Result<Option<Value>, String> {
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(method) = method else {
            // The page's answer to a request from the sidecar: unchanged.
            return Ok(Some(Value::Object(message)));
        };
        if method == "shutdown" {
            // The app owns the sidecar's lifecycle (it shuts it down on exit); a page may not
            // stop it for every window. Refused here, as the sidecar refuses a forbidden call.
            if let Some(id) = message.get("id").cloned() {
                routed.to_pages.push(Delivery {
                    target: Target::Window(window.to_string()),
                    message: json!({"jsonrpc": "2.0", "id": id, "error": {
                        "code": -32007,
                        "message": "the app shuts the sidecar down; a page may not",
                        "data": {"kind": "forbidden", "retryable": false},
                    }})
                    .to_string(),
                });
            }
            return Ok(None);
        }
        let Some(id) = message.get("id").cloned() else {
            return Ok(Some(Value::Object(message))); // a notification
        };
        if method == "initialize" {
            if let Some(result) = &self.initialized {
                routed.to_pages.push(Delivery {
                    target: Target::Window(window.to_string()),
                    message: json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
                });
                return Ok(None);
            }
            if self.initializing.is_some() {
                self.waiting.push((window.to_string(), id));
                return Ok(None);
            }
        }
        if self.pending.len() >= MAX_PENDING {
            return Err(format!(
                "too many requests in flight ({MAX_PENDING}); wait for answers first"
            ));
        }
        if method == "executor.register" {
            let kind = message
                .get("params")
                .and_then(|p| p.get("type"))
                .and_then(Value::as_str);
            if let Some(kind) = kind {
                self.executors.insert(kind.to_string(), window.to_string());
            }
        }
        let own = self.own_id();
        let initialize = method == "initialize";
        if initialize {
            self.initializing = Some(own);
        }
        self.pending.insert(
            own,
            Pending {
                window: window.to_string(),
                id,
                initialize,
            },
        );
        message.insert("id".to_string(), Value::from(own));
        Ok(Some(Value::Object(message)))
    }

    /// One line from the sidecar's stdout.
    pub fn from_sidecar(&mut self, line: &str) -> Routed {
        let mut routed = Routed::default();
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            // The sidecar only writes JSON; pass anything else on for the pages' logs.
            routed.to_pages.push(Delivery {
                target: Target::All,
                message: line.to_string(),
            });
            return routed;
        };
        match value {
            Value::Array(batch) => {
                // A batch answer: its elements answer requests of one window; keep them
                // together per window.
                let mut per_window: Vec<(Target, Vec<Value>)> = Vec::new();
                for element in batch {
                    for delivery in self.sidecar_message(element, &mut routed) {
                        let value: Value =
                            serde_json::from_str(&delivery.message).unwrap_or(Value::Null);
                        match per_window.iter_mut().find(|(t, _)| *t == delivery.target) {
                            Some((_, values)) => values.push(value),
                            None => per_window.push((delivery.target, vec![value])),
                        }
                    }
                }
                for (target, values) in per_window {
                    routed.to_pages.push(Delivery {
                        target,
                        message: Value::Array(values).to_string(),
                    });
                }
            }
            other => {
                let deliveries = self.sidecar_message(other, &mut routed);
                routed.to_pages.extend(deliveries);
            }
        }
        routed
    }

    fn sidecar_message(&mut self, value: Value, routed: &mut Routed) -> Vec<Delivery> {
        let Value::Object(mut message) = value else {
            return vec![Delivery {
                target: Target::All,
                message: value.to_string(),
            }];
        };
        if let Some(method) = message.get("method").and_then(Value::as_str) {
            if !message.contains_key("id") {
                if method == "sidecar.ready" {
                    routed.ready = Some(message.get("params").cloned().unwrap_or(json!({})));
                }
                return vec![Delivery {
                    target: Target::All,
                    message: Value::Object(message).to_string(),
                }];
            }
            // A request from the sidecar: to the window running that executor type.
            let kind = message
                .get("params")
                .and_then(|p| p.get("task"))
                .and_then(|t| t.get("type"))
                .and_then(Value::as_str);
            if let Some(window) = kind.and_then(|k| self.executors.get(k)) {
                return vec![Delivery {
                    target: Target::Window(window.clone()),
                    message: Value::Object(message).to_string(),
                }];
            }
            let id = message.get("id").cloned().unwrap_or(Value::Null);
            let reply = json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {
                    "code": -32601,
                    "message": format!("no window runs executors for {method} of this type"),
                    "data": {"kind": "methodNotFound", "retryable": true, "retryAfterMs": 5000},
                },
            });
            append_line(&mut routed.to_sidecar, &reply.to_string());
            return Vec::new();
        }
        // An answer: to the window whose request it is, under that window's id.
        let Some(own) = message.get("id").and_then(Value::as_u64) else {
            // `id: null` (an error the sidecar could not tie to a request): everyone sees it.
            return vec![Delivery {
                target: Target::All,
                message: Value::Object(message).to_string(),
            }];
        };
        let Some(pending) = self.pending.remove(&own) else {
            return Vec::new(); // our own request (shutdown) or a window that is gone
        };
        let mut out = Vec::new();
        if pending.initialize {
            self.initializing = None;
            if let Some(result) = message.get("result") {
                self.initialized = Some(result.clone());
            }
            for (window, id) in std::mem::take(&mut self.waiting) {
                let mut copy = message.clone();
                copy.insert("id".to_string(), id);
                out.push(Delivery {
                    target: Target::Window(window),
                    message: Value::Object(copy).to_string(),
                });
            }
        }
        message.insert("id".to_string(), pending.id);
        out.insert(
            0,
            Delivery {
                target: Target::Window(pending.window),
                message: Value::Object(message).to_string(),
            },
        );
        out
    }

    /// A window closed: forget its requests and its executor registrations.
    pub fn window_closed(&mut self, window: &str) {
        self.pending.retain(|_, p| p.window != window);
        self.waiting.retain(|(w, _)| w != window);
        self.executors.retain(|_, w| w != window);
    }

    /// The sidecar ended: every request still waiting gets an error (so that no page waits
    /// forever) and the next sidecar starts from a clean slate (it needs its own `initialize`
    /// and `executor.register`).
    pub fn sidecar_ended(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        let mut pending: Vec<(u64, Pending)> = self.pending.drain().collect();
        pending.sort_by_key(|(own, _)| *own);
        let waiting = std::mem::take(&mut self.waiting);
        let orphans = pending
            .into_iter()
            .map(|(_, p)| (p.window, p.id))
            .chain(waiting);
        for (window, id) in orphans {
            let error = json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {
                    "code": -32603,
                    "message": "the Taskmill sidecar ended before it answered",
                    "data": {"kind": "internal"},
                },
            });
            out.push(Delivery {
                target: Target::Window(window),
                message: error.to_string(),
            });
        }
        self.initialized = None;
        self.initializing = None;
        self.executors.clear();
        out
    }
}

fn append_line(buffer: &mut Option<String>, line: &str) {
    match buffer {
        Some(text) => {
            text.push('\n');
            text.push_str(line);
        }
        None => *buffer = Some(line.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    /// The request as the sidecar sees it, and its rewritten id.
    fn forwarded(routed: &Routed) -> (Value, u64) {
        let value = parse(
            routed
                .to_sidecar
                .as_deref()
                .expect("forwarded to the sidecar"),
        );
        let id = value["id"].as_u64().expect("a numeric id");
        (value, id)
    }

    #[test]
    fn two_windows_with_the_same_id_each_get_their_own_answer() {
        let mut r = Router::new();
        let a = r
            .from_page(
                "a",
                r#"{"jsonrpc":"2.0","id":1,"method":"task.get","params":{"id":"x"}}"#,
            )
            .unwrap();
        let b = r
            .from_page(
                "b",
                r#"{"jsonrpc":"2.0","id":1,"method":"task.get","params":{"id":"y"}}"#,
            )
            .unwrap();
        let (sent_a, id_a) = forwarded(&a);
        let (sent_b, id_b) = forwarded(&b);
        assert_ne!(id_a, id_b);
        assert_eq!(sent_a["params"]["id"], "x");
        assert_eq!(sent_a["method"], "task.get");

        let answer_b = r.from_sidecar(&format!(r#"{{"jsonrpc":"2.0","id":{id_b},"result":"B"}}"#));
        assert_eq!(answer_b.to_pages.len(), 1);
        assert_eq!(answer_b.to_pages[0].target, Target::Window("b".into()));
        assert_eq!(
            parse(&answer_b.to_pages[0].message),
            json!({"jsonrpc": "2.0", "id": 1, "result": "B"})
        );
        let answer_a = r.from_sidecar(&format!(r#"{{"jsonrpc":"2.0","id":{id_a},"result":"A"}}"#));
        assert_eq!(answer_a.to_pages[0].target, Target::Window("a".into()));
        assert_eq!(parse(&answer_a.to_pages[0].message)["result"], "A");
        assert_eq!(r.pending(), 0);
        let _ = sent_b;
    }

    #[test]
    fn string_ids_are_restored_exactly() {
        let mut r = Router::new();
        let a = r
            .from_page(
                "a",
                r#"{"jsonrpc":"2.0","id":"req-7","method":"task.list"}"#,
            )
            .unwrap();
        let (_, own) = forwarded(&a);
        let answer = r.from_sidecar(&format!(
            r#"{{"jsonrpc":"2.0","id":{own},"error":{{"code":-32001,"message":"no"}}}}"#
        ));
        let value = parse(&answer.to_pages[0].message);
        assert_eq!(value["id"], "req-7");
        assert_eq!(value["error"]["code"], -32001);
    }

    #[test]
    fn notifications_go_to_every_window_and_ready_is_noticed() {
        let mut r = Router::new();
        let line =
            r#"{"jsonrpc":"2.0","method":"sidecar.ready","params":{"protocolVersion":1,"pid":9}}"#;
        let routed = r.from_sidecar(line);
        assert_eq!(routed.to_pages.len(), 1);
        assert_eq!(routed.to_pages[0].target, Target::All);
        assert_eq!(routed.ready, Some(json!({"protocolVersion": 1, "pid": 9})));

        let progress = r.from_sidecar(r#"{"jsonrpc":"2.0","method":"task.progress","params":{}}"#);
        assert_eq!(progress.to_pages[0].target, Target::All);
        assert_eq!(progress.ready, None);
    }

    #[test]
    fn page_notifications_and_answers_pass_through_unchanged() {
        let mut r = Router::new();
        let note =
            r#"{"jsonrpc":"2.0","method":"executor.progress","params":{"id":"t","fraction":0.5}}"#;
        let routed = r.from_page("a", note).unwrap();
        assert_eq!(parse(routed.to_sidecar.as_deref().unwrap()), parse(note));
        let answer = r#"{"jsonrpc":"2.0","id":"s-3","result":{"ok":true}}"#;
        let routed = r.from_page("a", answer).unwrap();
        assert_eq!(parse(routed.to_sidecar.as_deref().unwrap()), parse(answer));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn initialize_reaches_the_sidecar_once_and_later_windows_get_the_cached_result() {
        let mut r = Router::new();
        let first = r
            .from_page(
                "a",
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
            )
            .unwrap();
        let (_, own) = forwarded(&first);
        // A second window asks while the first answer is on its way: it waits for it.
        let early = r
            .from_page("b", r#"{"jsonrpc":"2.0","id":"i","method":"initialize"}"#)
            .unwrap();
        assert_eq!(early.to_sidecar, None);
        assert!(early.to_pages.is_empty());

        let answer = r.from_sidecar(&format!(
            r#"{{"jsonrpc":"2.0","id":{own},"result":{{"protocolVersion":1}}}}"#
        ));
        assert_eq!(answer.to_pages.len(), 2);
        assert_eq!(answer.to_pages[0].target, Target::Window("a".into()));
        assert_eq!(parse(&answer.to_pages[0].message)["id"], 1);
        assert_eq!(answer.to_pages[1].target, Target::Window("b".into()));
        assert_eq!(parse(&answer.to_pages[1].message)["id"], "i");
        assert_eq!(
            parse(&answer.to_pages[1].message)["result"]["protocolVersion"],
            1
        );

        // A third window (or a reload) later: answered here, never forwarded.
        let late = r
            .from_page("c", r#"{"jsonrpc":"2.0","id":5,"method":"initialize"}"#)
            .unwrap();
        assert_eq!(late.to_sidecar, None);
        assert_eq!(late.to_pages[0].target, Target::Window("c".into()));
        assert_eq!(
            parse(&late.to_pages[0].message),
            json!({"jsonrpc": "2.0", "id": 5, "result": {"protocolVersion": 1}})
        );
    }

    #[test]
    fn a_page_may_not_shut_the_sidecar_down() {
        let mut r = Router::new();
        let routed = r
            .from_page(
                "a",
                r#"{"jsonrpc":"2.0","id":3,"method":"shutdown","params":{"graceMs":0}}"#,
            )
            .unwrap();
        assert!(routed.to_sidecar.is_none());
        assert_eq!(routed.to_pages.len(), 1);
        assert!(matches!(&routed.to_pages[0].target, Target::Window(w) if w == "a"));
        let answer: Value = serde_json::from_str(&routed.to_pages[0].message).unwrap();
        assert_eq!(answer["id"], 3);
        assert_eq!(answer["error"]["code"], -32007);
        assert_eq!(answer["error"]["data"]["kind"], "forbidden");
        // As a notification, or inside a batch beside other requests, it is dropped alone.
        let note = r
            .from_page("a", r#"{"jsonrpc":"2.0","method":"shutdown"}"#)
            .unwrap();
        assert!(note.to_sidecar.is_none() && note.to_pages.is_empty());
        let batch = r
            .from_page(
                "a",
                r#"[{"jsonrpc":"2.0","id":1,"method":"shutdown"},{"jsonrpc":"2.0","id":2,"method":"task.list"}]"#,
            )
            .unwrap();
        let sent: Value = serde_json::from_str(batch.to_sidecar.as_deref().unwrap()).unwrap();
        assert_eq!(sent.as_array().unwrap().len(), 1);
        assert_eq!(sent[0]["method"], "task.list");
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn a_failed_initialize_is_not_cached() {
        let mut r = Router::new();
        let first = r
            .from_page("a", r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#)
            .unwrap();
        let (_, own) = forwarded(&first);
        r.from_sidecar(&format!(
            r#"{{"jsonrpc":"2.0","id":{own},"error":{{"code":-32005,"message":"shutting down"}}}}"#
        ));
        let again = r
            .from_page("a", r#"{"jsonrpc":"2.0","id":2,"method":"initialize"}"#)
            .unwrap();
        assert!(again.to_sidecar.is_some());
    }

    #[test]
    fn task_execute_goes_to_the_window_that_registered_the_type_last() {
        let mut r = Router::new();
        for window in ["a", "b"] {
            let reg = r
                .from_page(
                    window,
                    r#"{"jsonrpc":"2.0","id":1,"method":"executor.register","params":{"type":"thumb"}}"#,
                )
                .unwrap();
            assert!(reg.to_sidecar.is_some());
        }
        let execute = r#"{"jsonrpc":"2.0","id":"s1","method":"task.execute","params":{"task":{"id":"t1","type":"thumb"}}}"#;
        let routed = r.from_sidecar(execute);
        assert_eq!(routed.to_sidecar, None);
        assert_eq!(routed.to_pages.len(), 1);
        assert_eq!(routed.to_pages[0].target, Target::Window("b".into()));
        assert_eq!(parse(&routed.to_pages[0].message), parse(execute)); // id unchanged

        // Window b closes: a request for its type has nobody, the Rust side answers it.
        r.window_closed("b");
        let routed = r.from_sidecar(execute);
        assert!(routed.to_pages.is_empty());
        let reply = parse(routed.to_sidecar.as_deref().unwrap());
        assert_eq!(reply["id"], "s1");
        assert_eq!(reply["error"]["code"], -32601);
    }

    #[test]
    fn bad_messages_from_the_page_are_refused() {
        let mut r = Router::new();
        assert!(r.from_page("a", "not json").is_err());
        assert!(r.from_page("a", "42").is_err());
        assert!(r.from_page("a", "\"text\"").is_err());
        assert!(r.from_page("a", "[]").is_err());
        assert!(r.from_page("a", "[1, 2]").is_err());
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn batches_are_rewritten_and_answered_to_their_window() {
        let mut r = Router::new();
        let routed = r
            .from_page(
                "a",
                r#"[{"jsonrpc":"2.0","id":1,"method":"task.get"},{"jsonrpc":"2.0","method":"x.note"},{"jsonrpc":"2.0","id":2,"method":"task.list"}]"#,
            )
            .unwrap();
        let sent = parse(routed.to_sidecar.as_deref().unwrap());
        let batch = sent.as_array().unwrap();
        assert_eq!(batch.len(), 3);
        let (one, two) = (
            batch[0]["id"].as_u64().unwrap(),
            batch[2]["id"].as_u64().unwrap(),
        );
        let answer = r.from_sidecar(&format!(
            r#"[{{"jsonrpc":"2.0","id":{one},"result":1}},{{"jsonrpc":"2.0","id":{two},"result":2}}]"#
        ));
        assert_eq!(answer.to_pages.len(), 1);
        assert_eq!(answer.to_pages[0].target, Target::Window("a".into()));
        assert_eq!(
            parse(&answer.to_pages[0].message),
            json!([{"jsonrpc": "2.0", "id": 1, "result": 1}, {"jsonrpc": "2.0", "id": 2, "result": 2}])
        );
    }

    #[test]
    fn answers_to_unknown_ids_are_dropped_and_null_ids_go_to_everyone() {
        let mut r = Router::new();
        let own = r.own_id(); // e.g. the Rust side's shutdown request
        assert!(r
            .from_sidecar(&format!(r#"{{"jsonrpc":"2.0","id":{own},"result":{{}}}}"#))
            .to_pages
            .is_empty());
        let null = r.from_sidecar(
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse"}}"#,
        );
        assert_eq!(null.to_pages[0].target, Target::All);
    }

    #[test]
    fn when_the_sidecar_ends_waiting_requests_fail_and_the_cache_is_cleared() {
        let mut r = Router::new();
        let init = r
            .from_page("a", r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#)
            .unwrap();
        let (_, own) = forwarded(&init);
        r.from_sidecar(&format!(r#"{{"jsonrpc":"2.0","id":{own},"result":{{}}}}"#));
        r.from_page("b", r#"{"jsonrpc":"2.0","id":9,"method":"task.list"}"#)
            .unwrap();
        let failed = r.sidecar_ended();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].target, Target::Window("b".into()));
        let value = parse(&failed[0].message);
        assert_eq!(value["id"], 9);
        assert_eq!(value["error"]["code"], -32603);
        assert_eq!(r.pending(), 0);
        // The next sidecar gets its own initialize.
        let again = r
            .from_page("a", r#"{"jsonrpc":"2.0","id":2,"method":"initialize"}"#)
            .unwrap();
        assert!(again.to_sidecar.is_some());
    }

    #[test]
    fn requests_in_flight_are_bounded() {
        let mut r = Router::new();
        for i in 0..MAX_PENDING {
            r.from_page(
                "a",
                &format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"task.list"}}"#),
            )
            .unwrap();
        }
        let err = r
            .from_page("a", r#"{"jsonrpc":"2.0","id":"more","method":"task.list"}"#)
            .unwrap_err();
        assert!(err.contains("too many"), "{err}");
        // Notifications still pass.
        assert!(r
            .from_page(
                "a",
                r#"{"jsonrpc":"2.0","method":"executor.progress","params":{}}"#
            )
            .is_ok());
    }
}
