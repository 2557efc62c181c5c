//! Loading and validating a policy file with the filter's own parser
//! ([`mcp_guard::config::Config::from_json`], the code `on_configure` runs).
//!
//! `Config::from_json` stops at the first problem. To report more than one, the document is
//! also cut into independent parts — each top-level field, each `policy` field, each field of
//! each agent entry, each field of each group (with its `members`) — and every part is given,
//! inside a minimal configuration, to the same `Config::from_json`. Every rule applied is the
//! library's; this module only knows where the document can be cut. The first problem listed
//! is always the whole document's; the verdict (valid or not) is only ever the whole
//! document's.

use crate::doc::{Doc, Syntax};
use mcp_guard::config::{Config, ConfigError};
use std::fmt;
use std::path::Path;

/// A policy file read and parsed.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The document.
    pub doc: Doc,
    /// How it was written.
    pub syntax: Syntax,
    /// The file's text.
    pub text: String,
    /// The plugin configuration the filter is given: the document as compact JSON.
    pub json: String,
}

/// Why a file could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// It could not be read (exit status 2).
    Io(String),
    /// It is not a JSON/YAML document (exit status 1: an invalid policy).
    Syntax(Problem),
}

/// One problem of a policy: the field's dotted path (empty for the document) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path, e.g. `policy.agents.bot.tools[1]`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.problem)
        } else {
            write!(f, "{}: {}", self.field, self.problem)
        }
    }
}

impl From<ConfigError> for Problem {
    fn from(e: ConfigError) -> Problem {
        Problem {
            field: e.field,
            problem: e.problem,
        }
    }
}

/// Reads `path` (`-` for standard input) and parses it as JSON or YAML ([`Syntax::detect`]).
pub fn load(path: &str) -> Result<Loaded, LoadError> {
    let (text, file) = if path == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| LoadError::Io(format!("standard input: {e}")))?;
        (text, None)
    } else {
        let text =
            std::fs::read_to_string(path).map_err(|e| LoadError::Io(format!("{path}: {e}")))?;
        (text, Some(Path::new(path)))
    };
    let syntax = Syntax::detect(file, &text);
    let doc = Doc::parse(&text, syntax).map_err(|problem| {
        LoadError::Syntax(Problem {
            field: String::new(),
            problem,
        })
    })?;
    let json = doc.to_compact_json().map_err(|problem| {
        LoadError::Syntax(Problem {
            field: String::new(),
            problem,
        })
    })?;
    Ok(Loaded {
        doc,
        syntax,
        text,
        json,
    })
}

/// Validates a loaded policy with `Config::from_json`: the compiled configuration, or every
/// problem found (the whole document's first, then those of its parts).
///
/// A JSON file is checked as written (so positions in messages are the file's); a YAML file
/// as the compact JSON it is rendered to (positions would be meaningless and are dropped).
/// Both are the same configuration: duplicate keys, the only thing that could tell them
/// apart, are refused when the file is read.
pub fn validate(loaded: &Loaded) -> Result<Config, Vec<Problem>> {
    let bytes = match loaded.syntax {
        Syntax::Json => loaded.text.as_bytes(),
        Syntax::Yaml => loaded.json.as_bytes(),
    };
    let mut first = match Config::from_json(bytes) {
        Ok(config) => return Ok(config),
        Err(e) => Problem::from(e),
    };
    if loaded.syntax == Syntax::Yaml {
        first.problem = strip_position(&first.problem).to_owned();
    }
    let mut problems = vec![first];
    for problem in part_problems(&loaded.doc) {
        let seen = problems
            .iter()
            .any(|p| p.field == problem.field && strip_position(&p.problem) == problem.problem);
        if !seen {
            problems.push(problem);
        }
    }
    Err(problems)
}

/// Drops serde_json's ` at line N column M` suffix.
fn strip_position(message: &str) -> &str {
    if let Some(at) = message.rfind(" at line ") {
        let tail = message.get(at + " at line ".len()..).unwrap_or_default();
        let mut words = tail.split(' ');
        let shape = (words.next(), words.next(), words.next(), words.next());
        if let (Some(l), Some("column"), Some(c), None) = shape {
            if l.bytes().all(|b| b.is_ascii_digit()) && c.bytes().all(|b| b.is_ascii_digit()) {
                return message.get(..at).unwrap_or(message);
            }
        }
    }
    message
}

/// The problems of every independent part of `doc` (see the module documentation).
pub fn part_problems(doc: &Doc) -> Vec<Problem> {
    parts(doc)
        .iter()
        .filter_map(|part| {
            let json = part.to_compact_json().ok()?;
            Config::from_json(json.as_bytes()).err().map(|e| {
                let mut p = Problem::from(e);
                p.problem = strip_position(&p.problem).to_owned();
                p
            })
        })
        .collect()
}

/// A minimal configuration around a `policy` holding `agents` and optionally more.
fn with_policy(agents: Doc, extra: Vec<(String, Doc)>) -> Doc {
    let mut policy = vec![("agents".to_owned(), agents)];
    policy.extend(extra);
    Doc::map([("policy", Doc::Map(policy))])
}

fn no_agents() -> Doc {
    Doc::Map(Vec::new())
}

/// The document cut into parts that the filter checks independently of each other.
fn parts(doc: &Doc) -> Vec<Doc> {
    let Some(top) = doc.entries() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in top {
        if key != "policy" {
            let mut part = with_policy(no_agents(), Vec::new());
            if let Doc::Map(entries) = &mut part {
                entries.push((key.clone(), value.clone()));
            }
            out.push(part);
        }
    }
    let Some(policy) = doc.get("policy").and_then(Doc::entries) else {
        return out;
    };
    for (key, value) in policy {
        match (key.as_str(), value.entries()) {
            ("agents", Some(agents)) => {
                for (agent, entry) in agents {
                    match entry.entries() {
                        Some(fields) if !fields.is_empty() => {
                            for field in fields {
                                let one =
                                    Doc::map([(agent.clone(), Doc::Map(vec![field.clone()]))]);
                                out.push(with_policy(one, Vec::new()));
                            }
                        }
                        _ => out.push(with_policy(
                            Doc::map([(agent.clone(), entry.clone())]),
                            Vec::new(),
                        )),
                    }
                }
            }
            ("groups", Some(groups)) => {
                for (group, entry) in groups {
                    let group_of = |fields: Vec<(String, Doc)>| {
                        with_policy(
                            no_agents(),
                            vec![(
                                "groups".to_owned(),
                                Doc::map([(group.clone(), Doc::Map(fields))]),
                            )],
                        )
                    };
                    match (entry.entries(), entry.get("members")) {
                        (Some(fields), Some(members)) => {
                            let m = ("members".to_owned(), members.clone());
                            out.push(group_of(vec![m.clone()]));
                            for field in fields.iter().filter(|(k, _)| k != "members") {
                                out.push(group_of(vec![m.clone(), field.clone()]));
                            }
                        }
                        _ => out.push(with_policy(
                            no_agents(),
                            vec![(
                                "groups".to_owned(),
                                Doc::map([(group.clone(), entry.clone())]),
                            )],
                        )),
                    }
                }
            }
            ("agents", None) => {}
            _ => out.push(with_policy(no_agents(), vec![(key.clone(), value.clone())])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(text: &str, syntax: Syntax) -> Loaded {
        let doc = Doc::parse(text, syntax).unwrap();
        let json = doc.to_compact_json().unwrap();
        Loaded {
            doc,
            syntax,
            text: text.to_owned(),
            json,
        }
    }

    /// The example of docs/configuration.md "Policy format" (its placeholder key replaced by a
    /// real one).
    fn readme_example() -> String {
        let readme = include_str!("../../docs/configuration.md");
        let section = readme.split("## Policy format").nth(1).unwrap();
        let block = section.split("```json").nth(1).unwrap();
        let json = block.split("```").next().unwrap();
        json.replace(
            "<base64, 32+ bytes>",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
    }

    /// Cutting a valid configuration must never produce a problem: if a future cross-field
    /// rule made a part invalid on its own, `check` would report false problems.
    #[test]
    fn every_part_of_valid_configurations_is_valid() {
        let shipped = include_str!("../../examples/policy.json");
        for text in [readme_example().as_str(), shipped] {
            let l = loaded(text, Syntax::Json);
            assert!(validate(&l).is_ok());
            assert!(parts(&l.doc).len() > 5);
            assert_eq!(part_problems(&l.doc), Vec::new());
        }
    }

    #[test]
    fn every_independent_problem_is_reported_with_its_path() {
        let text = r#"
server_id: ""
max_json_depth: 0
policy:
  mode: sometimes
  agents:
    "bad agent": {tools: [echo]}
    bot: {tools: [echo, ""], prompts: {allow: [x], deny: [""]}, extra: 1}
  groups:
    ops: {members: [], tools: [x]}
    dev: {members: ["dev-*"], tools: [""]}
"#;
        let problems = validate(&loaded(text, Syntax::Yaml)).unwrap_err();
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        for want in [
            "server_id: must not be empty",
            "max_json_depth: must be between 1 and 128",
            "policy.mode: unknown variant `sometimes`",
            "policy.agents.bad agent: not a valid agent id",
            "policy.agents.bot.tools[1]: empty pattern",
            "policy.agents.bot.prompts.deny[0]: empty pattern",
            "unknown field `extra`",
            "policy.groups.ops.members: needs at least one member pattern",
            "policy.groups.dev.tools[0]: empty pattern",
        ] {
            assert!(
                shown.iter().any(|s| s.contains(want)),
                "{want} not in {shown:#?}"
            );
        }
        // No duplicates, no positions from the compact JSON.
        let mut unique = shown.clone();
        unique.dedup();
        assert_eq!(unique.len(), shown.len());
        assert!(shown.iter().all(|s| !s.contains(" at line ")), "{shown:#?}");
    }

    #[test]
    fn json_keeps_the_files_positions() {
        let problems = validate(&loaded(
            "{\n\"policy\": {\"agents\": {}},\n\"bogus\": 1}",
            Syntax::Json,
        ))
        .unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].problem.contains("line 3"), "{problems:?}");
    }

    #[test]
    fn positions_are_stripped_only_when_they_are_serde_json_ones() {
        assert_eq!(
            strip_position("expected `,` at line 3 column 7"),
            "expected `,`"
        );
        assert_eq!(
            strip_position("look at line 3 of it"),
            "look at line 3 of it"
        );
    }
}
