//! Loading and validating a policy file with the filter's own parser
//! ([`mcp_guard::config::Config::from_json`], the code `on_configure` runs), which reports
//! every problem of the document with its field's path.

use crate::doc::{Doc, Syntax};
use mcp_guard::config::{Config, ConfigError};
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
    Syntax(ConfigError),
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
    let doc = Doc::parse(&text, syntax)
        .map_err(|problem| LoadError::Syntax(ConfigError::new("", problem)))?;
    let json = doc
        .to_compact_json()
        .map_err(|problem| LoadError::Syntax(ConfigError::new("", problem)))?;
    Ok(Loaded {
        doc,
        syntax,
        text,
        json,
    })
}

/// Validates a loaded policy with `Config::from_json`: the compiled configuration, or every
/// problem it found.
///
/// A JSON file is checked as written (so positions in messages are the file's); a YAML file
/// as the compact JSON it is rendered to (positions would be meaningless and are dropped).
/// Both are the same configuration: duplicate keys, the only thing that could tell them
/// apart, are refused when the file is read.
pub fn validate(loaded: &Loaded) -> Result<Config, Vec<ConfigError>> {
    let bytes = match loaded.syntax {
        Syntax::Json => loaded.text.as_bytes(),
        Syntax::Yaml => loaded.json.as_bytes(),
    };
    Config::from_json(bytes).map_err(|errors| {
        let mut problems = errors.into_vec();
        if loaded.syntax == Syntax::Yaml {
            for p in &mut problems {
                p.position = None;
            }
        }
        problems
    })
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

    /// The example of README "Policy format" (its placeholder key replaced by a real one).
    fn readme_example() -> String {
        let readme = include_str!("../../README.md");
        let section = readme.split("## Policy format").nth(1).unwrap();
        let block = section.split("```json").nth(1).unwrap();
        let json = block.split("```").next().unwrap();
        json.replace(
            "<base64, 32+ bytes>",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
    }

    #[test]
    fn valid_configurations_are_valid() {
        let shipped = include_str!("../../examples/policy.json");
        for text in [readme_example().as_str(), shipped] {
            assert!(validate(&loaded(text, Syntax::Json)).is_ok());
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
        assert!(problems[0].to_string().contains("line 3"), "{problems:?}");
    }

    #[test]
    fn yaml_problems_have_no_positions() {
        let problems =
            validate(&loaded("bogus: 1\npolicy: {agents: {}}\n", Syntax::Yaml)).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].problem.contains("unknown field `bogus`"));
        assert_eq!(problems[0].position, None);
        assert!(
            !problems[0].to_string().contains(" at line "),
            "{problems:?}"
        );
    }
}
