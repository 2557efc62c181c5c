//! The mcp-guard policy model (docs/configuration.md): rule sets for agents and groups, allow
//! and deny pattern lists per MCP subject, deny over allow, a `default` rule set, and dry-run
//! per rule set.
//!
//! A call is classified by its MCP method ([`Subject::of`]): `tools/call` by tool name,
//! `prompts/get` by prompt name, `resources/read` by URI, every other method by the method
//! itself. For an agent, the applicable rule sets are its own entry under `agents` plus every
//! group whose `members` match it; when none applies, the `default` entry (if any) does. Then:
//! 1. a `deny` pattern of any applicable set that matches refuses the call (deny wins);
//! 2. else an `allow` pattern of any applicable set that matches admits it;
//! 3. else the call is refused (fail closed).
//!
//! A set that does not mention `methods` allows [`DEFAULT_METHODS`]; a set that does not mention
//! `tools`, `prompts` or `resources` allows none of them. Patterns are exact names or globs
//! where `*` matches any run of characters (including none).
//!
//! A refusal made by a set in dry-run mode (or with the policy's own mode `dry_run`) is
//! `dry_run_deny`: the call proceeds and the audit record shows what enforcement would do. A
//! refusal because nothing allows the call is dry-run only if every applicable set is.

use crate::mcp;
use std::collections::HashMap;

/// What a rule set does with a call it would deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Denied calls are answered with a JSON-RPC error and never reach the upstream.
    Enforce,
    /// Denied calls are forwarded; the audit record says `dry_run_deny`.
    DryRun,
}

/// The outcome of evaluating one JSON-RPC message; serialized in the audit record as
/// `allow`, `deny` or `dry_run_deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The call may proceed.
    Allow,
    /// The call is refused (mode [`Mode::Enforce`]).
    Deny,
    /// The call would have been refused, but mode is [`Mode::DryRun`] so it proceeds.
    DryRunDeny,
}

impl Decision {
    /// The audit-record spelling of the decision.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::DryRunDeny => "dry_run_deny",
        }
    }

    /// Whether the message must be kept from the upstream.
    pub fn blocks(self) -> bool {
        self == Decision::Deny
    }
}

/// Methods a rule set allows when it does not list `methods`: every client-to-server method of
/// MCP up to 2026-07-28 — lifecycle (`initialize`, `server/discover`, `ping`), listing,
/// subscriptions, completion, logging, tasks — and every notification. The methods named by
/// [`Subject`] (`tools/call`, `prompts/get`, `resources/read`) are governed by their own lists.
///
/// By revision (`schema/<revision>/schema.ts`, `ClientRequest` and `ClientNotification`):
/// 2026-07-28 sends `server/discover`, the four list methods, `subscriptions/listen`,
/// `completion/complete` and `notifications/cancelled`, plus `tasks/get`, `tasks/update` and
/// `tasks/cancel` with the tasks extension (SEP-2663); `initialize`, `ping`, `logging/setLevel`,
/// `resources/subscribe`, `resources/unsubscribe`, `tasks/list`, `tasks/result` and the other
/// notifications are gone from it but still sent by clients of 2024-11-05 to 2025-11-25, and
/// stay allowed. What mcp-guard does with each result: docs/protocol.md "MCP 2026-07-28
/// methods" (lists curated, `subscriptions/listen` streams curated event by event,
/// `server/discover` and `resources/templates/list` passed as sent).
pub const DEFAULT_METHODS: &[&str] = &[
    "initialize",
    "server/discover",
    "ping",
    "notifications/*",
    mcp::TOOLS_LIST,
    mcp::PROMPTS_LIST,
    mcp::RESOURCES_LIST,
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
    "completion/complete",
    "logging/setLevel",
    "tasks/*",
];

/// What one JSON-RPC message asks for, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// `tools/call` of this tool.
    Tool(&'a str),
    /// `prompts/get` of this prompt.
    Prompt(&'a str),
    /// `resources/read` of this URI.
    Resource(&'a str),
    /// Any other method.
    Method(&'a str),
}

impl<'a> Subject<'a> {
    /// Classifies a message by its method and the name the parser extracted for it.
    /// `None` (nothing to decide) for a message without a method (a client-sent response).
    pub fn of(method: Option<&'a str>, name: Option<&'a str>) -> Option<Subject<'a>> {
        let method = method?;
        Some(match (method, name) {
            (mcp::TOOLS_CALL, Some(n)) => Subject::Tool(n),
            (mcp::PROMPTS_GET, Some(n)) => Subject::Prompt(n),
            (mcp::RESOURCES_READ, Some(n)) => Subject::Resource(n),
            _ => Subject::Method(method),
        })
    }

    /// The rule-list name (`tools`, `prompts`, `resources`, `methods`).
    pub fn list(self) -> &'static str {
        match self {
            Subject::Tool(_) => "tools",
            Subject::Prompt(_) => "prompts",
            Subject::Resource(_) => "resources",
            Subject::Method(_) => "methods",
        }
    }

    /// The name matched against the patterns.
    pub fn name(self) -> &'a str {
        match self {
            Subject::Tool(n) | Subject::Prompt(n) | Subject::Resource(n) | Subject::Method(n) => n,
        }
    }
}

/// The policy's lookup maps hash with FxHash (`rustc-hash`): their keys come from the
/// configuration and are only looked up per request, so a keyed hash (SipHash, std's default,
/// several times slower on short names) buys nothing against flooding here.
type FastMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// Compiled patterns: exact names in a map, globs in order; each remembers its index in the
/// configured list (for explanations).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns {
    exact: FastMap<String, usize>,
    globs: Vec<(usize, String)>,
}

impl Patterns {
    /// Compiles patterns; a pattern containing `*` is a glob, any other is an exact name.
    ///
    /// Errors: an empty pattern, reported as `(index, reason)`.
    pub fn compile<S: AsRef<str>>(patterns: &[S]) -> Result<Patterns, (usize, &'static str)> {
        let mut set = Patterns::default();
        for (index, pattern) in patterns.iter().enumerate() {
            let pattern = pattern.as_ref();
            if pattern.is_empty() {
                return Err((index, "empty pattern"));
            }
            if pattern.contains('*') {
                set.globs.push((index, pattern.to_owned()));
            } else {
                set.exact.entry(pattern.to_owned()).or_insert(index);
            }
        }
        Ok(set)
    }

    /// The index and text of the first pattern matching `name` (exact names first).
    pub fn find(&self, name: &str) -> Option<(usize, &str)> {
        if let Some((pattern, index)) = self.exact.get_key_value(name) {
            return Some((*index, pattern.as_str()));
        }
        self.globs
            .iter()
            .find(|(_, g)| glob_match(g.as_bytes(), name.as_bytes()))
            .map(|(i, g)| (*i, g.as_str()))
    }

    /// Whether `name` is listed as an exact name (not only through a glob).
    pub fn lists_exactly(&self, name: &str) -> bool {
        self.exact.contains_key(name)
    }
}

/// Matches `text` against `pattern`, where `*` stands for any (possibly empty) run of bytes
/// and every other byte matches itself. Linear-time backtracking on the last star.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if Some(&c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// Allow and deny patterns for one subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lists {
    /// Patterns that admit a call.
    pub allow: Patterns,
    /// Patterns that refuse a call, whatever allows it.
    pub deny: Patterns,
}

/// One rule set: an agent's entry, a group, or `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// Where the set is configured, e.g. `agents.demo-agent` or `groups.readers`.
    pub origin: String,
    /// Group members (agent-id patterns); empty for agent entries.
    pub members: Patterns,
    /// `tools/call` by tool name.
    pub tools: Lists,
    /// `prompts/get` by prompt name.
    pub prompts: Lists,
    /// `resources/read` by URI.
    pub resources: Lists,
    /// Every other method.
    pub methods: Lists,
    /// Enforce or dry-run this set's refusals.
    pub mode: Mode,
}

impl RuleSet {
    fn lists(&self, subject: Subject<'_>) -> &Lists {
        match subject {
            Subject::Tool(_) => &self.tools,
            Subject::Prompt(_) => &self.prompts,
            Subject::Resource(_) => &self.resources,
            Subject::Method(_) => &self.methods,
        }
    }
}

/// A decision and the rule that made it, for audit and `mcp-guard explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The decision.
    pub decision: Decision,
    /// The deciding rule, e.g. `groups.ops.tools.deny[0] "delete_*"`, or why nothing allowed
    /// the call.
    pub rule: String,
}

/// The compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `policy.name`, written in every audit record.
    pub name: Option<String>,
    /// `policy.version`, written in every audit record.
    pub version: Option<String>,
    mode: Mode,
    agents: FastMap<String, RuleSet>,
    groups: Vec<RuleSet>,
    default: Option<RuleSet>,
}

/// The agent name whose entry applies to agents without any applicable rule set.
pub const DEFAULT_AGENT: &str = "default";

impl Policy {
    /// Builds a policy. `mode` is the policy-wide mode (`dry_run` makes every refusal a
    /// dry-run); the `default` entry, if any, is taken out of `agents`.
    pub fn new(
        name: Option<String>,
        version: Option<String>,
        mode: Mode,
        mut agents: HashMap<String, RuleSet>,
        groups: Vec<RuleSet>,
    ) -> Policy {
        let default = agents.remove(DEFAULT_AGENT);
        Policy {
            name,
            version,
            mode,
            agents: agents.into_iter().collect(),
            groups,
            default,
        }
    }

    /// The policy-wide mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The rule sets that apply to `agent`, in evaluation order: its own entry, then its
    /// groups in configuration order; the `default` set when none of those applies.
    pub fn rule_sets(&self, agent: &str) -> Vec<&RuleSet> {
        self.applicable(agent).collect()
    }

    /// [`Policy::rule_sets`] without allocating (the hot path).
    fn applicable<'a, 'b>(
        &'a self,
        agent: &'b str,
    ) -> impl Iterator<Item = &'a RuleSet> + Clone + use<'a, 'b> {
        let own = self.agents.get(agent);
        let groups = self
            .groups
            .iter()
            .filter(move |g| g.members.find(agent).is_some());
        let use_default = own.is_none() && groups.clone().next().is_none();
        own.into_iter()
            .chain(groups)
            .chain(self.default.as_ref().filter(|_| use_default))
    }

    /// The decision and what made it: the deciding set, whether its `deny` list matched, and
    /// the pattern (index, text); `None` when nothing allowed the call.
    fn judge<'a>(
        &'a self,
        agent: &str,
        subject: Subject<'_>,
    ) -> (Decision, Option<(&'a RuleSet, bool, usize, &'a str)>) {
        let name = subject.name();
        let refuse = |dry: bool| {
            if dry || self.mode == Mode::DryRun {
                Decision::DryRunDeny
            } else {
                Decision::Deny
            }
        };
        let sets = self.applicable(agent);
        for set in sets.clone() {
            if let Some((i, pattern)) = set.lists(subject).deny.find(name) {
                return (
                    refuse(set.mode == Mode::DryRun),
                    Some((set, true, i, pattern)),
                );
            }
        }
        for set in sets.clone() {
            if let Some((i, pattern)) = set.lists(subject).allow.find(name) {
                return (Decision::Allow, Some((set, false, i, pattern)));
            }
        }
        let mut any = false;
        let all_dry = sets.into_iter().all(|s| {
            any = true;
            s.mode == Mode::DryRun
        });
        (refuse(any && all_dry), None)
    }

    /// Decides `subject` for `agent`, naming the deciding rule.
    pub fn evaluate(&self, agent: &str, subject: Subject<'_>) -> Verdict {
        let list = subject.list();
        let (decision, why) = self.judge(agent, subject);
        let rule = match why {
            Some((set, deny, i, pattern)) => {
                let which = if deny { "deny" } else { "allow" };
                format!("{}.{list}.{which}[{i}] {pattern:?}", set.origin)
            }
            None => {
                let origins: Vec<&str> =
                    self.applicable(agent).map(|s| s.origin.as_str()).collect();
                if origins.is_empty() {
                    "no rule set applies to this agent (and there is no default)".to_owned()
                } else {
                    format!("no {list} pattern allows it in {}", origins.join(", "))
                }
            }
        };
        Verdict { decision, rule }
    }

    /// The decision alone ([`Policy::evaluate`]), without allocating.
    pub fn decide(&self, agent: &str, subject: Subject<'_>) -> Decision {
        self.judge(agent, subject).0
    }

    /// Whether an applicable rule set of `agent` allows `tool` by its exact name (not only
    /// through a glob): such a tool is exempt from the annotations rule.
    pub fn allows_tool_by_name(&self, agent: &str, tool: &str) -> bool {
        self.applicable(agent)
            .any(|s| s.tools.allow.lists_exactly(tool))
    }

    /// Decides `tools/call` of `tool` for `agent`.
    pub fn decide_tool(&self, agent: &str, tool: &str) -> Decision {
        self.decide(agent, Subject::Tool(tool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(allow: &[&str], deny: &[&str]) -> Lists {
        Lists {
            allow: Patterns::compile(allow).unwrap(),
            deny: Patterns::compile(deny).unwrap(),
        }
    }

    fn set(origin: &str, tools: Lists, mode: Mode) -> RuleSet {
        RuleSet {
            origin: origin.into(),
            members: Patterns::default(),
            tools,
            prompts: Lists::default(),
            resources: lists(&["demo://*"], &[]),
            methods: lists(DEFAULT_METHODS, &[]),
            mode,
        }
    }

    fn demo(mode: Mode) -> Policy {
        let mut agents = HashMap::new();
        for (name, tools) in [
            ("demo-agent", lists(&["echo", "add", "search", "fail"], &[])),
            ("admin-agent", lists(&["*"], &[])),
            ("default", lists(&["echo"], &[])),
        ] {
            agents.insert(
                name.to_owned(),
                set(&format!("agents.{name}"), tools, Mode::Enforce),
            );
        }
        let mut ops = set(
            "groups.ops",
            lists(&["git_*"], &["git_push_force", "*delete*"]),
            Mode::Enforce,
        );
        ops.members = Patterns::compile(&["ops-*", "admin-agent"]).unwrap();
        Policy::new(
            Some("demo".into()),
            Some("1".into()),
            mode,
            agents,
            vec![ops],
        )
    }

    #[test]
    fn demo_policy_decisions() {
        let p = demo(Mode::Enforce);
        assert_eq!(p.decide_tool("demo-agent", "search"), Decision::Allow);
        assert_eq!(p.decide_tool("demo-agent", "delete_repo"), Decision::Deny);
        assert_eq!(p.decide_tool("stranger", "echo"), Decision::Allow);
        assert_eq!(p.decide_tool("stranger", "add"), Decision::Deny);
        // "default" is only a fallback, never an identity that gains extra rights.
        assert_eq!(p.decide_tool("default", "add"), Decision::Deny);
    }

    #[test]
    fn groups_apply_by_member_pattern_and_deny_wins() {
        let p = demo(Mode::Enforce);
        assert_eq!(p.decide_tool("ops-7", "git_pull"), Decision::Allow);
        assert_eq!(p.decide_tool("ops-7", "echo"), Decision::Deny); // default does not apply
                                                                    // admin-agent's own "*" allows everything, but its group's deny wins.
        assert_eq!(p.decide_tool("admin-agent", "echo"), Decision::Allow);
        let v = p.evaluate("admin-agent", Subject::Tool("delete_repo"));
        assert_eq!(v.decision, Decision::Deny);
        assert_eq!(v.rule, r#"groups.ops.tools.deny[1] "*delete*""#);
        let v = p.evaluate("admin-agent", Subject::Tool("echo"));
        assert_eq!(v.rule, r#"agents.admin-agent.tools.allow[0] "*""#);
    }

    #[test]
    fn every_subject_has_its_own_lists() {
        let p = demo(Mode::Enforce);
        assert_eq!(
            p.decide("demo-agent", Subject::Resource("demo://docs/a")),
            Decision::Allow
        );
        assert_eq!(
            p.decide("demo-agent", Subject::Resource("file:///etc/passwd")),
            Decision::Deny
        );
        assert_eq!(
            p.decide("demo-agent", Subject::Prompt("greet")),
            Decision::Deny
        );
        assert_eq!(
            p.decide("demo-agent", Subject::Method("initialize")),
            Decision::Allow
        );
        assert_eq!(
            p.decide("demo-agent", Subject::Method("notifications/initialized")),
            Decision::Allow
        );
        assert_eq!(
            p.decide("demo-agent", Subject::Method("x-custom/run")),
            Decision::Deny
        );
        let v = p.evaluate("demo-agent", Subject::Method("x-custom/run"));
        assert_eq!(v.rule, "no methods pattern allows it in agents.demo-agent");
        assert_eq!(
            Subject::of(Some("tools/call"), Some("echo")),
            Some(Subject::Tool("echo"))
        );
        assert_eq!(
            Subject::of(Some("tools/list"), None),
            Some(Subject::Method("tools/list"))
        );
        assert_eq!(Subject::of(None, None), None);
    }

    #[test]
    fn dry_run_per_rule_set_and_policy_wide() {
        let p = demo(Mode::DryRun);
        let d = p.decide_tool("demo-agent", "delete_repo");
        assert_eq!(d, Decision::DryRunDeny);
        assert!(!d.blocks());
        assert_eq!(d.as_str(), "dry_run_deny");

        let mut agents = HashMap::new();
        agents.insert(
            "trial".to_owned(),
            set("agents.trial", lists(&["echo"], &["rm"]), Mode::DryRun),
        );
        let mut strict = set("groups.all", lists(&[], &["drop"]), Mode::Enforce);
        strict.members = Patterns::compile(&["*"]).unwrap();
        let p = Policy::new(None, None, Mode::Enforce, agents, vec![strict]);
        assert_eq!(p.decide_tool("trial", "rm"), Decision::DryRunDeny);
        assert_eq!(p.decide_tool("trial", "drop"), Decision::Deny); // enforced by its set
                                                                    // Nothing allows "ls": dry-run only if every applicable set is (groups.all is not).
        assert_eq!(p.decide_tool("trial", "ls"), Decision::Deny);
    }

    #[test]
    fn decide_does_not_allocate_and_agrees_with_evaluate() {
        let p = demo(Mode::Enforce);
        for (agent, subject) in [
            ("admin-agent", Subject::Tool("delete_repo")),
            ("ops-7", Subject::Tool("git_pull")),
            ("stranger", Subject::Tool("add")),
            ("demo-agent", Subject::Method("ping")),
        ] {
            assert_eq!(
                p.decide(agent, subject),
                p.evaluate(agent, subject).decision
            );
        }
    }

    #[test]
    fn every_client_method_of_every_revision_is_a_default_method() {
        let defaults = Patterns::compile(DEFAULT_METHODS).unwrap();
        // 2026-07-28 (`ClientRequest`, `ClientNotification`), the tasks extension, and what
        // older clients still send.
        for method in [
            "server/discover",
            "tools/list",
            "prompts/list",
            "resources/list",
            "resources/templates/list",
            "subscriptions/listen",
            "completion/complete",
            "notifications/cancelled",
            "tasks/get",
            "tasks/update",
            "tasks/cancel",
            "initialize",
            "ping",
            "logging/setLevel",
            "resources/subscribe",
            "resources/unsubscribe",
            "tasks/list",
            "tasks/result",
            "notifications/initialized",
            "notifications/progress",
            "notifications/roots/list_changed",
        ] {
            assert!(defaults.find(method).is_some(), "{method}");
            assert!(mcp::MCP_METHODS.contains(&method), "{method}");
        }
        // The three named methods have their own lists; server-to-client methods and anything
        // unknown are not defaults.
        for method in [
            "tools/call",
            "prompts/get",
            "resources/read",
            "sampling/createMessage",
            "elicitation/create",
            "roots/list",
            "x-vendor/run",
            "Tools/list",
        ] {
            assert!(defaults.find(method).is_none(), "{method}");
        }
    }

    #[test]
    fn no_rule_set_denies() {
        let p = Policy::new(None, None, Mode::Enforce, HashMap::new(), Vec::new());
        let v = p.evaluate("anyone", Subject::Method("initialize"));
        assert_eq!(v.decision, Decision::Deny);
        assert!(v.rule.contains("no rule set applies"), "{}", v.rule);
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"read_*", b"read_file"));
        assert!(!glob_match(b"read_*", b"write_file"));
        assert!(glob_match(b"*_file", b"read_file"));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
        assert!(glob_match(b"a**", b"a"));
        assert!(!glob_match(b"echo", b"echo2"));
        assert!(!glob_match(b"", b"x"));
        let set = Patterns::compile(&["git_*", "echo"]).unwrap();
        assert_eq!(set.find("git_push"), Some((0, "git_*")));
        assert_eq!(set.find("echo"), Some((1, "echo")));
        assert_eq!(set.find("Echo"), None);
        assert!(set.lists_exactly("echo") && !set.lists_exactly("git_push"));
        assert_eq!(Patterns::compile(&["ok", ""]), Err((1, "empty pattern")));
    }
}
