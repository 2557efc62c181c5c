//! Per-agent tool allowlists (the mcp-guard policy model, README "Policy").
//!
//! An allowlist maps an agent id to the tool names it may call with `tools/call`. Patterns are
//! exact names or globs in which `*` matches any run of characters (including none). The
//! entry named `default` covers every agent that has no entry of its own; without a `default`
//! entry such agents may call nothing (fail closed).
//!
//! Methods other than `tools/call` are not restricted by this version of the policy.

use std::collections::{HashMap, HashSet};

/// What the policy does with a call it would deny.
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

/// A compiled set of tool-name patterns for one agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolSet {
    exact: HashSet<String>,
    globs: Vec<String>,
}

impl ToolSet {
    /// Compiles patterns; a pattern containing `*` is a glob, any other is an exact name.
    ///
    /// Errors: an empty pattern, reported as `(index, reason)`.
    pub fn compile<S: AsRef<str>>(patterns: &[S]) -> Result<ToolSet, (usize, &'static str)> {
        let mut set = ToolSet::default();
        for (index, pattern) in patterns.iter().enumerate() {
            let pattern = pattern.as_ref();
            if pattern.is_empty() {
                return Err((index, "empty tool pattern"));
            }
            if pattern.contains('*') {
                set.globs.push(pattern.to_owned());
            } else {
                set.exact.insert(pattern.to_owned());
            }
        }
        Ok(set)
    }

    /// Whether `tool` matches any pattern of the set.
    pub fn allows(&self, tool: &str) -> bool {
        self.exact.contains(tool)
            || self
                .globs
                .iter()
                .any(|g| glob_match(g.as_bytes(), tool.as_bytes()))
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

/// The compiled allowlist policy: agent id → [`ToolSet`], the `default` set, and the mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    mode: Mode,
    agents: HashMap<String, ToolSet>,
    default: ToolSet,
}

/// The agent name whose entry applies to agents without one of their own.
pub const DEFAULT_AGENT: &str = "default";

impl Policy {
    /// Builds a policy from compiled per-agent sets; the `default` entry, if any, is taken out
    /// of `agents` and used for unknown agents.
    pub fn new(mode: Mode, mut agents: HashMap<String, ToolSet>) -> Policy {
        let default = agents.remove(DEFAULT_AGENT).unwrap_or_default();
        Policy {
            mode,
            agents,
            default,
        }
    }

    /// The configured mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Decides whether `agent` may call `tool` with `tools/call`.
    pub fn decide_tool(&self, agent: &str, tool: &str) -> Decision {
        let set = self.agents.get(agent).unwrap_or(&self.default);
        if set.allows(tool) {
            Decision::Allow
        } else {
            match self.mode {
                Mode::Enforce => Decision::Deny,
                Mode::DryRun => Decision::DryRunDeny,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo(mode: Mode) -> Policy {
        let mut agents = HashMap::new();
        agents.insert(
            "demo-agent".to_owned(),
            ToolSet::compile(&["echo", "add", "search", "fail"]).unwrap(),
        );
        agents.insert("admin-agent".to_owned(), ToolSet::compile(&["*"]).unwrap());
        agents.insert("default".to_owned(), ToolSet::compile(&["echo"]).unwrap());
        Policy::new(mode, agents)
    }

    #[test]
    fn demo_policy_decisions() {
        let p = demo(Mode::Enforce);
        assert_eq!(p.decide_tool("demo-agent", "search"), Decision::Allow);
        assert_eq!(p.decide_tool("demo-agent", "delete_repo"), Decision::Deny);
        assert_eq!(p.decide_tool("admin-agent", "delete_repo"), Decision::Allow);
        assert_eq!(p.decide_tool("stranger", "echo"), Decision::Allow);
        assert_eq!(p.decide_tool("stranger", "add"), Decision::Deny);
        // "default" is only a fallback, never an identity that gains extra rights.
        assert_eq!(p.decide_tool("default", "add"), Decision::Deny);
    }

    #[test]
    fn dry_run_reports_but_does_not_block() {
        let p = demo(Mode::DryRun);
        let d = p.decide_tool("demo-agent", "delete_repo");
        assert_eq!(d, Decision::DryRunDeny);
        assert!(!d.blocks());
        assert_eq!(d.as_str(), "dry_run_deny");
    }

    #[test]
    fn no_default_entry_denies_unknown_agents() {
        let p = Policy::new(Mode::Enforce, HashMap::new());
        assert_eq!(p.decide_tool("anyone", "echo"), Decision::Deny);
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
        let set = ToolSet::compile(&["git_*", "echo"]).unwrap();
        assert!(set.allows("git_push") && set.allows("echo") && !set.allows("Echo"));
        assert_eq!(
            ToolSet::compile(&["ok", ""]),
            Err((1, "empty tool pattern"))
        );
    }
}
