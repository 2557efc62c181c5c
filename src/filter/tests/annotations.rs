//! The annotations rule: hints learned from tools/list, refusals, the bounded store.

use super::*;

#[test]
fn annotations_learned_from_tools_list_refuse_destructive_tools_unless_named() {
    let policy = r#"{
      "server_id": "demo-server",
      "annotations": {"refuse": "destructive"},
      "policy": {"agents": {
          "ops": {"tools": ["*"]},
          "janitor": {"tools": ["*", "delete_repo"]}}}
    }"#;
    let scenario = Scenario::new(policy);
    let call = |agent: &str, tool: &str| {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
        );
        let (mut s, mut h) = scenario.post(Some(agent), &body);
        send_request(&mut s, &mut h)
    };
    // Nothing learned yet: an unseen tool is refused (fail closed).
    assert_eq!(call("ops", "echo"), Action::Pause);

    // A tools/list passes (another worker): the hints are learned.
    let (mut s, mut h) = scenario.post(
        Some("ops"),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    );
    send_request(&mut s, &mut h);
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","annotations":{"readOnlyHint":true}},{"name":"delete_repo","annotations":{"destructiveHint":true}},{"name":"add"}]}}"#],
    );

    assert_eq!(call("ops", "echo"), Action::Continue);
    assert_eq!(call("ops", "add"), Action::Continue); // no destructiveHint: true
    assert_eq!(call("ops", "delete_repo"), Action::Pause);
    assert_eq!(call("ops", "never_listed"), Action::Pause);
    // Named exactly by a rule set: exempt.
    assert_eq!(call("janitor", "delete_repo"), Action::Continue);
}

#[test]
fn the_annotations_store_is_bounded_per_server() {
    use crate::annotations::{self, MAX_BYTES, MAX_TOOLS};
    use crate::curation::ToolHints;
    use std::borrow::Cow;
    let mut h = FakeHost::default();
    let ro = ToolHints {
        read_only: Some(true),
        destructive: Some(false),
    };
    // 1,100 tools with 1 KB names, in lists of 100: only what fits in MAX_BYTES is kept.
    for batch in 0..11 {
        let tools: Vec<(Cow<'_, str>, ToolHints)> = (0..100)
            .map(|n| {
                (
                    Cow::Owned(format!("{:04}{}", batch * 100 + n, "t".repeat(1020))),
                    ro,
                )
            })
            .collect();
        assert!(annotations::learn(h.shared(), "srv", &tools));
    }
    let (value, _) = h
        .shared()
        .get("mcp_guard.annotations.srv")
        .unwrap()
        .unwrap();
    assert!(value.len() <= MAX_BYTES, "{}", value.len());
    assert!(value.len() > MAX_BYTES - 2 * 1024, "{}", value.len());
    let first = format!("{:04}{}", 0, "t".repeat(1020));
    let last = format!("{:04}{}", 1099, "t".repeat(1020));
    assert_eq!(annotations::lookup(h.shared(), "srv", &first), Ok(Some(ro)));
    assert_eq!(annotations::lookup(h.shared(), "srv", &last), Ok(None));
    // Known tools still get their hints updated when the store is full.
    let rw = ToolHints {
        read_only: Some(false),
        destructive: Some(true),
    };
    assert!(annotations::learn(
        h.shared(),
        "srv",
        &[(Cow::Borrowed(first.as_str()), rw)]
    ));
    assert_eq!(annotations::lookup(h.shared(), "srv", &first), Ok(Some(rw)));
    // Short names: the count cap.
    let tools: Vec<(Cow<'_, str>, ToolHints)> = (0..MAX_TOOLS + 10)
        .map(|n| (Cow::Owned(format!("t{n}")), ro))
        .collect();
    assert!(annotations::learn(h.shared(), "other", &tools));
    assert_eq!(
        annotations::lookup(h.shared(), "other", &format!("t{}", MAX_TOOLS - 1)),
        Ok(Some(ro))
    );
    assert_eq!(
        annotations::lookup(h.shared(), "other", &format!("t{MAX_TOOLS}")),
        Ok(None)
    );
}

#[test]
fn an_annotations_store_that_cannot_be_read_refuses_the_call() {
    let policy = r#"{
      "server_id": "demo-server",
      "annotations": {"refuse": "destructive", "unseen": "allow"},
      "policy": {"agents": {"ops": {"tools": ["*"]}}}
    }"#;
    let body =
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
    // Readable (and empty): an unseen tool is allowed, as configured.
    let mut s = stream(policy);
    let mut h = post(Some("ops"), body);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    // Unreadable: not "never shown"; refused.
    let mut s = stream(policy);
    let mut h = post(Some("ops"), body);
    h.failing = vec![Read::SharedData];
    assert_eq!(send_request(&mut s, &mut h), Action::Pause);
    let (status, reply) = h.reply_json();
    assert_eq!(
        (status, reply["error"]["code"].clone()),
        (200, DENIED.into())
    );
    assert_eq!(h.records()[0]["output_status"], "denied");
}
